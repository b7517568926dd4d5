"""Stress-suite plates as Opera exports: ``write_export`` and ``phagoflow simulate --condition``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from phagoflow.cli import main
from phagoflow.core.opera import load_field, read_plate
from phagoflow.core.protocol import PlateSpec, Role, render_plate, write_export


@pytest.mark.parametrize("name", ["sparse_large", "channel_order"])
def test_an_exported_plate_reads_back_as_rendered(name: str, tmp_path: Path) -> None:
    plate = render_plate(PlateSpec(name, Role.VALIDATION, 5001, wells=2, fields=2))
    export = write_export(plate, tmp_path / "plate")
    cat = read_plate(export)
    assert cat.plate_id == f"{name}-5001"
    assert [r.key.name for r in cat.fields] == [
        "r02c02f01p01",
        "r02c02f02p01",
        "r02c03f01p01",
        "r02c03f02p01",
    ]
    assert cat.pixel_size_um == pytest.approx(plate.fields[0].pixel_size_um)
    for record, field in zip(cat.fields, plate.fields, strict=True):
        # DsRed first whatever order the channels were written in (channel_order: pHluorin first)
        np.testing.assert_array_equal(load_field(cat, record), np.asarray(field.image, np.float32))
        truth = tifffile.imread(tmp_path / "plate" / "truth" / f"{record.key.name}.tiff")
        np.testing.assert_array_equal(truth, field.truth)


def test_simulate_condition_writes_a_plate_phagoflow_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "low"
    assert main(["simulate", str(out), "--condition", "low_snr", "--seed", "7003", "--wells", "1",
                 "--fields", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "test:low_snr:7003 plate: 2 fields (test settings)" in printed
    cat = read_plate(out)
    assert len(cat.fields) == 2 and cat.plate_id == "low_snr-7003"
    assert sorted(p.name for p in (out / "truth").iterdir()) == [
        "r02c02f01p01.tiff",
        "r02c02f02p01.tiff",
    ]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--condition", "foggy", "--seed", "101"], "unknown condition 'foggy'; choose one of"),
        (["--condition", "normal", "--seed", "3"], "seed 3 is in none of the protocol's ranges"),
        (["--condition", "normal", "--seed", "101", "--screen"], "drop --screen"),
        (["--condition", "normal", "--seed", "101", "--preset", "harder"], "drop --preset"),
        (["--condition", "normal", "--seed", "101", "--format", "flex"], "drop --format"),
        (["--condition", "normal", "--seed", "101", "--wells", "0"], "wells and fields must be"),
    ],
)
def test_simulate_condition_refuses_bad_input(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plate"
    assert main(["simulate", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was written
