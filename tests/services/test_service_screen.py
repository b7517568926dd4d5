"""A screen through the stack: ingest takes the plate map beside the export, metrics computes
the plate statistics of ``phagoflow run --plate-map`` (same tables, byte for byte) and exports
them to Prometheus; a bad plate map is refused on one line and the counts go on without it."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_testing import LocalStack, PlateRun

from phagoflow import events as ev
from phagoflow.core.simulate import (
    NuclearStainParameters,
    ScreenDesign,
    SimulatedPlate,
    SimulationParameters,
    simulate_plate,
)
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.services.cip import CipService, CipSettings

pytestmark = pytest.mark.slow
ngff_zarr = pytest.importorskip("ngff_zarr")
zarr = pytest.importorskip("zarr")

TABLES = ("wells.csv", "plate_stats.csv", "hits.csv")


@pytest.fixture(scope="module")
def screen_plate(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlate:
    """12 wells x 1 field with a Hoechst channel: 3 negative, 3 positive controls, 1 planted."""
    return simulate_plate(
        tmp_path_factory.mktemp("screen"),
        wells=12,
        fields=1,
        seed=5,
        plate_id="SCRS",
        params=SimulationParameters(well_level_sigma=0.05, plate_gradient=0.0),
        nuclear=NuclearStainParameters(),
        screen=ScreenDesign(effect=4.0),
    )


@pytest.fixture(scope="module")
def screen_reference(
    screen_plate: SimulatedPlate, tmp_path_factory: pytest.TempPathFactory
) -> RunResult:
    assert screen_plate.plate_map is not None
    return run_plate(
        screen_plate.export_dir,
        tmp_path_factory.mktemp("screenref"),
        plate_map=screen_plate.plate_map,
        ome_zarr=True,
        progress=False,
    )


def _stream(stack: LocalStack, plate: SimulatedPlate, plate_map: Path, **metrics: Any) -> PlateRun:
    run = PlateRun(stack, plate, metrics_options=metrics)
    run.start_pipeline()
    stack.start(CipService(stack.settings(CipSettings), http_port=0))
    dest = stack.tmp / "incoming" / "plate"
    dest.mkdir(parents=True)
    shutil.copyfile(plate_map, dest / "plate_map.csv")  # beside Images/, as Harmony's folder
    run.feed()
    return run


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in ("phagoflow_plate_z_prime", "phagoflow_plate_hits")
    }


def test_plate_statistics_and_ome_zarr_through_the_stack_equal_the_embedded_run(
    local_stack: LocalStack,
    screen_plate: SimulatedPlate,
    screen_reference: RunResult,
    tmp_path: Path,
) -> None:
    assert screen_plate.plate_map is not None
    run = _stream(local_stack, screen_plate, screen_plate.plate_map, metrics_ome_zarr=True)
    status = run.wait_complete()
    assert status["plate_map_error"] is None
    store = local_stack.store()
    for name in TABLES:
        got = store.get_bytes(ev.report_object_key(screen_plate.plate_id, name))
        assert got == (screen_reference.out_dir / name).read_bytes(), name
    screen = screen_reference.screen
    assert screen is not None and run.metrics is not None
    gauges = _scrape(run.metrics.port)
    plate = screen_plate.plate_id
    for s in screen.statistics:
        labels = (("method", s.method), ("plate", plate), ("readout", s.readout))
        assert gauges[("phagoflow_plate_z_prime", labels)] == pytest.approx(s.z_prime)
    hits = screen.of("cip")
    assert hits is not None and hits.hits  # the planted well is a hit
    assert gauges[("phagoflow_plate_hits", (("method", "cip"), ("plate", plate)))] == len(hits.hits)
    assert status["statistics"]["hit_readout"] == screen.hit_readout
    _check_ome_zarr(local_stack, status, screen_reference, tmp_path)


def _check_ome_zarr(
    stack: LocalStack, status: dict[str, Any], reference: RunResult, tmp: Path
) -> None:
    """The stream's OME-Zarr equals ``run --ome-zarr``'s: the same arrays, the same metadata."""
    assert reference.ome_zarr is not None
    prefix = status["reports"][reference.ome_zarr.name]
    store = stack.store()
    local = tmp / reference.ome_zarr.name
    for key in store.list_keys(prefix + "/"):
        path = local / key[len(prefix) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get_bytes(key))
    ours = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(reference.ome_zarr) for p in reference.ome_zarr.rglob("*"))
    assert ours == [p for p in theirs if (reference.ome_zarr / p).is_file()]
    arrays = 0
    for rel in (r for r in ours if r.name == "zarr.json"):
        meta = json.loads((local / rel).read_text())
        assert meta == json.loads((reference.ome_zarr / rel).read_text()), rel
        if meta["node_type"] == "array":  # pixels and labels, chunk by chunk
            got = zarr.open_array(local / rel.parent, mode="r")[...]
            np.testing.assert_array_equal(
                got, zarr.open_array(reference.ome_zarr / rel.parent, mode="r")[...]
            )
            arrays += 1
    assert arrays >= 2 * len(reference.catalogue.fields)  # each field's image and its labels
    hcs = ngff_zarr.from_hcs_zarr(str(local), validate=True)  # a second, independent reader
    assert hcs.metadata.name == reference.catalogue.plate_id


def test_a_bad_plate_map_is_refused_and_the_counts_go_on(
    local_stack: LocalStack,
    screen_plate: SimulatedPlate,
    screen_reference: RunResult,
    tmp_path: Path,
) -> None:
    assert screen_plate.plate_map is not None
    lines = screen_plate.plate_map.read_text().splitlines()
    bad = tmp_path / "plate_map.csv"
    bad.write_text("\n".join([*lines, lines[1]]) + "\n")  # the first well twice
    run = _stream(local_stack, screen_plate, bad)
    status = run.wait_complete()
    assert "duplicate" in status["plate_map_error"]
    assert "\n" not in status["plate_map_error"]
    assert status["statistics"] is None and status["failed"] == []
    rows = sorted((r["well"], r["phagophores"]) for r in run.api("/wells"))
    assert rows == sorted((w.well, w.phagophores) for w in screen_reference.wells)
    store = local_stack.store()
    assert not store.exists(ev.report_object_key(screen_plate.plate_id, "plate_stats.csv"))
    letters = [
        r.event
        for r in local_stack.read(ev.Topic.DEADLETTER.value, min_count=1)
        if isinstance(r.event, ev.DeadLetter)
    ]
    assert len(letters) == 1 and letters[0].stage == "ingest"
    assert letters[0].path.endswith("plate_map.csv") and "duplicate" in letters[0].error
