"""Resume that cannot lie: interrupted runs, stale masks, Ctrl-C with workers, SIGTERM, the lock.

Each test stops a real ``phagoflow run`` process at a known point (a field whose source blocks,
see :mod:`run_helpers`), then checks what the next run makes of the folder.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from run_helpers import (
    blocked_field,
    ctrl_c,
    field_names,
    finish,
    mask_records,
    run_json,
    running,
    simulate,
    wait_until,
)

from phagoflow.cli import main
from phagoflow.core.cip import CipParameters


def _run(export: Path, out: Path, *extra: str) -> int:
    return main(["-q", "run", str(export), "--out", str(out), *extra])


def _tables(out: Path) -> tuple[bytes, bytes]:
    return (out / "wells.csv").read_bytes(), (out / "objects.csv").read_bytes()


@pytest.mark.slow
def test_stale_masks_of_an_interrupted_rerun_are_recomputed(tmp_path: Path) -> None:
    """Run; re-run with other CIP parameters and Ctrl-C part way; re-run with the defaults.

    The last run must equal a clean default run: the masks the interrupted run rewrote carry
    its parameters and are recomputed; the others are reused.
    """
    export = simulate(tmp_path, wells=2, fields=3)
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _run(export, clean) == 0
    assert _run(export, out) == 0
    default_fp = {r["fingerprint"] for r in mask_records(out).values()}
    assert len(default_fp) == 1

    params = CipParameters().model_dump(mode="json")
    params["threshold_k"] *= 0.6
    other = tmp_path / "other.json"
    other.write_text(json.dumps(params))
    names = field_names(export)
    args = [str(export), "--out", str(out), "--cip-params", str(other)]
    with blocked_field(export, names[3]), running(args) as proc:

        def rewritten() -> int:
            return sum(r["fingerprint"] not in default_fp for r in mask_records(out).values())

        wait_until(lambda: rewritten() == 3, proc, "three masks rewritten")
        proc.send_signal(signal.SIGINT)
        rc, _, err = finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err
    assert run_json(out)["status"] == "interrupted"
    assert "Interrupted" in (out / "report.html").read_text()
    # the parameter change matters: a rewritten mask differs from the default one
    assert any(
        not np.array_equal(
            tifffile.imread(out / "masks" / "cip" / f"{n}.tiff"),
            tifffile.imread(clean / "masks" / "cip" / f"{n}.tiff"),
        )
        for n in names[:3]
    )

    assert _run(export, out) == 0
    assert _tables(out) == _tables(clean)
    cip = run_json(out)["methods"]["cip"]
    assert cip["fields_reused"] == 3
    assert cip["fields_recomputed"] == {"fingerprint changed": 3}
    assert {r["fingerprint"] for r in mask_records(out).values()} == default_fp


@pytest.mark.slow
def test_ctrl_c_with_two_workers_then_resume_from_every_finished_field(tmp_path: Path) -> None:
    export = simulate(tmp_path, wells=2, fields=3, seed=4)
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _run(export, clean) == 0
    names = field_names(export)
    args = [str(export), "--out", str(out), "--workers", "2"]
    with blocked_field(export, names[2]), running(args, new_session=True) as proc:
        masks = out / "masks" / "cip"
        wait_until(lambda: len(list(masks.glob("*.tiff"))) == 5, proc, "five masks written")
        ctrl_c(proc)  # the whole group, workers included, as a terminal does
        rc, stdout, err = finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "INTERRUPTED" in stdout
    partial = run_json(out)
    assert partial["status"] == "interrupted" and partial["fields_total"] == 6
    assert partial["fields_done"] <= 5
    assert "Interrupted" in (out / "report.html").read_text()
    assert not list(masks.glob(".*.tmp"))  # nothing half-written left behind

    assert _run(export, out) == 0  # resumes
    cip = run_json(out)["methods"]["cip"]
    assert (cip["fields_reused"], cip["fields_recomputed"]) == (5, {"no mask": 1})
    assert _tables(out) == _tables(clean)


@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_is_refused_and_sigterm_exits_143(tmp_path: Path) -> None:
    export = simulate(tmp_path, wells=1, fields=2, seed=5)
    out = tmp_path / "out"
    names = field_names(export)
    with blocked_field(export, names[1]), running([str(export), "--out", str(out)]) as proc:
        masks = out / "masks" / "cip"
        wait_until(lambda: (masks / f"{names[0]}.tiff").exists(), proc, "the first mask")
        # a process too: were it let in, it would block on the same field (and be killed)
        with running([str(export), "--out", str(out)]) as second:
            rc, _, err = finish(second)
        assert rc == 1, err
        assert "another phagoflow run" in err and str(out) in err
        proc.send_signal(signal.SIGTERM)
        rc, _, err = finish(proc)
    assert rc == 143, err
    assert run_json(out)["status"] == "interrupted"
