"""Tests of the OME-Zarr HCS writer (phagoflow.core.omezarr).

The plate is written with ome-zarr-models + zarr and read back with ngff-zarr, an independent
OME-Zarr implementation (its own metadata models, JSON-schema validation and Zarr engine).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import ngff_zarr
import numpy as np
import numpy.typing as npt
import pytest
import zarr

from phagoflow.core.omezarr import LABEL_CLASSES, OmeZarrPlateWriter, default_channel_colour
from phagoflow.core.simulate import NuclearStainParameters, SimulationParameters, simulate_field

PX = 0.325  # µm, deliberately not the simulator default
CHANNELS = ("DsRed", "pHluorin", "HOECHST 33342")
FIELDS = {(2, 5): (1, 2), (3, 2): (1,)}  # (row, col) -> fields


def _field(seed: int) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    f = simulate_field(
        SimulationParameters(size_yx=(48, 64), colony_coverage=(0.9, 0.9)),
        rng=seed,
        nuclear=NuclearStainParameters(),
    )
    assert f.nuclear_image is not None
    return np.concatenate([f.image, f.nuclear_image[None]]), f.truth


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("omezarr") / "P1.ome.zarr"
    written: dict[str, object] = {}
    with OmeZarrPlateWriter(
        path, plate_id="P1", plate_rows=8, plate_columns=12, channel_names=CHANNELS,
        pixel_size_um=PX,
    ) as w:  # fmt: skip
        for (row, col), fields in FIELDS.items():
            for field in fields:
                image, truth = _field(100 * row + 10 * col + field)
                cdl = np.where(truth == 2, 2, 0).astype(np.uint8)  # a different mask per method
                written[w.add_field(row, col, field, image, labels={"cip": truth, "cdl": cdl})] = (
                    image, truth, cdl,
                )  # fmt: skip
        w.set_well_table(
            [
                {"row": 2, "col": 5, "method": "cip", "phagophores": 12, "failed": False},
                {"row": 3, "col": 2, "method": "cip", "phagophores": None, "failed": True},
            ]
        )
    return path, written


def test_paths_follow_a01_names(plate: tuple[Path, dict[str, object]]) -> None:
    _, written = plate
    assert sorted(written) == ["B/05/0", "B/05/1", "C/02/0"]


def test_read_back_by_ngff_zarr_same_pixels_labels_channels_and_pixel_size(
    plate: tuple[Path, dict[str, object]],
) -> None:
    path, written = plate
    hcs = ngff_zarr.from_hcs_zarr(str(path), validate=True)
    assert hcs.metadata.name == "P1"
    assert [w.path for w in hcs.metadata.wells] == ["B/05", "C/02"]
    assert [r.name for r in hcs.metadata.rows] == list("ABCDEFGH")
    assert hcs.metadata.columns[0].name == "01" and len(hcs.metadata.columns) == 12
    assert hcs.metadata.field_count == 2
    for image_path, (image, truth, cdl) in written.items():  # type: ignore[misc]
        row, col, index = image_path.split("/")
        ms = hcs.get_well(row, col).get_image(int(index))
        im = ms.images[0]
        assert im.dims == ("c", "y", "x")
        assert im.scale == {"c": 1.0, "y": PX, "x": PX}
        assert im.axes_units["y"] == im.axes_units["x"] == "micrometer"
        got = np.asarray(im.data)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, image)
        assert [c.label for c in ms.metadata.omero.channels] == list(CHANNELS)
        for name, mask in (("cip", truth), ("cdl", cdl)):
            lab = ngff_zarr.from_ngff_zarr(str(path / image_path / "labels" / name), validate=True)
            assert lab.images[0].dims == ("y", "x")
            assert lab.images[0].scale == {"y": PX, "x": PX}
            np.testing.assert_array_equal(np.asarray(lab.images[0].data), mask)


@pytest.mark.parametrize(
    ("model", "node"),
    [("plate", ""), ("well", "B/05"), ("image", "B/05/1"), ("label", "B/05/1/labels/cip")],
)
def test_metadata_passes_ngff_zarrs_strict_schemas(
    plate: tuple[Path, dict[str, object]], model: str, node: str
) -> None:
    path, _ = plate
    attrs = json.loads((path / node / "zarr.json").read_text())["attributes"]
    validate = importlib.import_module("ngff_zarr.validate").validate
    validate(attrs, version="0.5", model=model, strict=True)  # raises on any violation


def test_label_metadata_and_well_table(plate: tuple[Path, dict[str, object]]) -> None:
    path, _ = plate
    root = zarr.open_group(path, mode="r")
    labels_attrs = root["B/05/0/labels"].attrs.asdict()["ome"]
    assert labels_attrs["labels"] == ["cip", "cdl"]
    label = root["B/05/0/labels/cip"].attrs.asdict()["ome"]["image-label"]
    assert {p["label-value"]: p["class"] for p in label["properties"]} == LABEL_CLASSES
    assert label["source"] == {"image": "../../"}
    table = root["tables/wells"]
    attrs = table.attrs.asdict()
    assert attrs["type"] == "phagoflow_well_table" and attrs["index"] == "well"
    assert attrs["columns"] == ["well", "row", "col", "method", "phagophores", "failed"]
    assert list(table["well"][:]) == ["B05", "C02"]
    np.testing.assert_array_equal(table["phagophores"][:], [12.0, np.nan])
    assert table["failed"][:].tolist() == [False, True]


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "P.ome.zarr"
    w = OmeZarrPlateWriter(
        path, plate_id="P", plate_rows=8, plate_columns=12, channel_names=("DsRed", "pHluorin"),
        pixel_size_um=0.2,
    )  # fmt: skip
    good = np.zeros((2, 8, 8), np.uint16)
    with pytest.raises(ValueError, match=r"image must be \(2, Y, X\) uint16, got \(3, 8, 8\)"):
        w.add_field(1, 1, 1, np.zeros((3, 8, 8), np.uint16))
    with pytest.raises(ValueError, match=r"uint16, got .* float64"):
        w.add_field(1, 1, 1, np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"well \(9, 1\) is not on a 8 × 12 plate"):
        w.add_field(9, 1, 1, good)
    with pytest.raises(ValueError, match="unknown label image 'mdl'"):
        w.add_field(1, 1, 1, good, labels={"mdl": np.zeros((8, 8), np.uint8)})
    with pytest.raises(ValueError, match=r"label image 'cip' must be \(8, 8\) uint8"):
        w.add_field(1, 1, 1, good, labels={"cip": np.zeros((8, 9), np.uint8)})
    w.add_field(1, 1, 1, good)
    with pytest.raises(ValueError, match="field 1 of well A01 is < 1 or repeated"):
        w.add_field(1, 1, 1, good)
    with pytest.raises(ValueError, match="same columns"):
        w.set_well_table([{"a": 1}, {"b": 2}])
    w.close()
    with pytest.raises(ValueError, match="the plate is closed"):
        w.add_field(1, 2, 1, good)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        OmeZarrPlateWriter(path, plate_id="P", plate_rows=8, plate_columns=12,
                           channel_names=("a",), pixel_size_um=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="pixel_size_um must be a positive number, got 0"):
        OmeZarrPlateWriter(tmp_path / "x", plate_id="P", plate_rows=8, plate_columns=12,
                           channel_names=("a",), pixel_size_um=0)  # fmt: skip


def test_channel_colours() -> None:
    assert [default_channel_colour(n) for n in CHANNELS] == ["FF0000", "00FF00", "0000FF"]
    assert default_channel_colour("Brightfield") == "FFFFFF"
