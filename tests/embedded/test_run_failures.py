"""Failures you cannot miss: exit status 4, every imaged well in wells.csv, marked heat-map,
failures first in the report; an output folder that fills up stops the run with status 1."""

from __future__ import annotations

import csv
import errno
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_helpers import field_names, run_json, simulate

import phagoflow.embedded.run as run_module
from phagoflow.cli import main
from phagoflow.core.opera import read_plate
from phagoflow.embedded.report import comparable_wells, failure_marks, heatmap_panels
from phagoflow.embedded.run import run_plate
from phagoflow.reporting.figures import MARK_ALL_FAILED, MARK_NONE, MARK_SOME_FAILED


def _truncate(export: Path, field: str) -> Path:
    (victim,) = export.glob(f"{field}-ch1*.tiff")
    victim.write_bytes(victim.read_bytes()[:4096])
    return victim


def _wells_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "wells.csv").open() as fh:
        return {r["well"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3 wells × 2 fields: r02c02 loses both fields, r02c03 one, r02c04 none; one run."""
    tmp = tmp_path_factory.mktemp("broken")
    export = simulate(tmp, wells=3, fields=2, seed=6)
    names = field_names(export)
    victims = [_truncate(export, n) for n in (names[0], names[1], names[2])]
    out = tmp / "out"
    rc = main(["-q", "run", str(export), "--out", str(out)])
    return {"export": export, "out": out, "rc": rc, "victims": victims, "names": names}


def test_failed_fields_give_exit_status_4_and_every_imaged_well_stays(broken: dict[str, Any]):
    assert broken["rc"] == 4
    rows = _wells_rows(broken["out"])
    assert sorted(rows) == ["r02c02", "r02c03", "r02c04"]
    lost = rows["r02c02"]
    assert (lost["fields"], lost["fields_ok"], lost["fields_failed"]) == ("2", "0", "2")
    # nothing was measured there: empty cells, not zeros that read as "no autophagy"
    assert lost["phagophores"] == lost["autolysosomes"] == ""
    assert lost["phagophores_per_field_mean"] == ""
    half = rows["r02c03"]
    assert (half["fields"], half["fields_ok"], half["fields_failed"]) == ("2", "1", "1")
    assert float(half["phagophores_per_field_mean"]) == float(half["phagophores"])
    ok = rows["r02c04"]
    assert (ok["fields_ok"], ok["fields_failed"]) == ("2", "0")
    run = run_json(broken["out"])
    assert run["status"] == "failed_fields"
    assert sorted(f["path"] for f in run["failed_fields"]) == sorted(map(str, broken["victims"]))


def test_heat_map_marks_failed_wells_and_maps_per_field_means(broken: dict[str, Any]) -> None:
    result_wells = run_plate(broken["export"], broken["out"], progress=False).wells
    cat = read_plate(broken["export"])
    marks = failure_marks(result_wells, "cip", cat.plate_rows, cat.plate_columns)
    # r02c02 -> [1, 1]; r02c03 -> [1, 2]; r02c04 -> [1, 3]
    assert marks[1, 1] == MARK_ALL_FAILED
    assert marks[1, 2] == MARK_SOME_FAILED
    assert marks[1, 3] == MARK_NONE
    assert int(np.count_nonzero(marks)) == 2
    panels = heatmap_panels(cat, result_wells, ("cip",))
    assert all(p is not None for p in panels)
    # per-field means, per 1,000 µm² of cytoplasm (no nuclear stain), the ratio
    assert [p.cmap for p in panels if p] == ["Blues", "Reds", "Blues", "Reds", "Purples"]
    assert [p.unit for p in panels if p][2] == "phagophores / 1,000 µm²"
    by_well = {w.well: w for w in result_wells}
    phago = panels[0]
    assert phago is not None and "per field" in phago.title
    assert phago.marks is not None and np.array_equal(phago.marks, marks)
    assert math.isnan(phago.values[1, 1])  # all fields failed: no value (grey, hatched)
    assert phago.values[1, 2] == by_well["r02c03"].phagophores_per_field_mean
    assert phago.values[1, 3] == by_well["r02c04"].phagophores_per_field_mean
    assert phago.values[1, 3] == by_well["r02c04"].phagophores / 2  # a mean, not the total


def test_report_opens_with_the_failures_naming_file_and_reason(broken: dict[str, Any]) -> None:
    html = (broken["out"] / "report.html").read_text()
    first_h2 = html.index("<h2>")
    assert html.startswith("<h2>Failures</h2>", first_h2)
    failures = html[first_h2 : html.index("<h2>", first_h2 + 1)]
    assert "3 field(s) failed" in failures
    for victim in broken["victims"]:
        assert f"<td>{victim}</td>" in failures  # the file column names the file
    assert "cannot read the TIFF" in failures


def test_disagreement_only_for_wells_both_methods_counted_alike() -> None:
    from phagoflow.core.counting import FieldCounts, aggregate_wells
    from phagoflow.core.opera.catalogue import FieldKey

    k1, k2 = FieldKey(2, 2, 1), FieldKey(2, 2, 2)
    other = FieldKey(2, 3, 1)
    counts = [FieldCounts("P", k, m, 5, 5, 1.0, 1.0) for k in (k1, k2, other) for m in ("cip",)]
    counts += [FieldCounts("P", k1, "cdl", 5, 5, 1.0, 1.0)]
    counts += [FieldCounts("P", other, "cdl", 9, 9, 1.0, 1.0)]
    wells = aggregate_wells(counts, failed=[("P", k2, "cdl")])
    assert {(w.well, w.method) for w in comparable_wells(wells)} == {
        ("r02c03", "cip"),
        ("r02c03", "cdl"),
    }


def test_a_full_disk_part_way_stops_the_run_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    export = simulate(tmp_path, wells=1, fields=3, seed=7)
    out = tmp_path / "out"
    real_write = run_module.write_mask
    calls = {"n": 0}

    def fills_up(path: Path, mask: Any, record: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, mask, record)

    monkeypatch.setattr(run_module, "write_mask", fills_up)
    assert main(["-q", "run", str(export), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert "re-run resumes" in err
    assert calls["n"] == 2  # stopped at the first failed write, not one failure per field
    monkeypatch.setattr(run_module, "write_mask", real_write)
    assert main(["-q", "run", str(export), "--out", str(out)]) == 0
    cip = run_json(out)["methods"]["cip"]
    assert (cip["fields_reused"], cip["fields_recomputed"]) == (1, {"no mask": 2})
