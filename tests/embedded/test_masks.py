"""Mask records: written with the mask in one file, compared key by key before any reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phagoflow.core.opera.catalogue import ChannelRole, FieldKey, FieldRecord, ImageSource
from phagoflow.embedded.masks import (
    REUSE_KEYS,
    SOURCE_KEYS,
    clear_stale_temps,
    mask_path,
    mask_record,
    read_mask,
    reuse_mismatch,
    source_digests,
    write_mask,
)

MADE_BY = {"method": "cip", "fingerprint": "f" * 64, "phagoflow_version": "1.0", "segmenter": {}}


def _record(tmp_path: Path, payload: bytes = b"red") -> tuple[FieldRecord, dict[str, object]]:
    red, green = tmp_path / "r-ch1.tiff", tmp_path / "r-ch2.tiff"
    red.write_bytes(payload)
    green.write_bytes(b"green")
    field = FieldRecord(
        FieldKey(2, 3, 1),
        {ChannelRole.DSRED: ImageSource(red), ChannelRole.PHLUORIN: ImageSource(green)},
    )
    sources = source_digests(field, tmp_path, {})
    pixels = mask_record({}, field="r02c03f01p01", shape=(4, 5), pixel_size_um=0.2, sources=sources)
    return field, {**pixels, **MADE_BY}


def test_mask_and_record_are_one_file_and_read_back(tmp_path: Path) -> None:
    _, record = _record(tmp_path)
    path = mask_path(tmp_path / "out", "cip", "r02c03f01p01")
    mask = np.zeros((4, 5), np.uint8)
    mask[1, 2] = 2
    write_mask(path, mask, record)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    got = read_mask(path, (4, 5))
    assert got is not None
    assert np.array_equal(got[0], mask) and got[1] == json.loads(json.dumps(record))
    assert got[1] is not None and got[1]["sources"]["dsred"]["file"] == "r-ch1.tiff"
    assert read_mask(path, (5, 4)) is None  # another field size: not this field's mask
    assert reuse_mismatch(got[1], record, REUSE_KEYS) is None


def test_reuse_needs_every_key_to_match(tmp_path: Path) -> None:
    _, record = _record(tmp_path)
    assert reuse_mismatch(None, record, REUSE_KEYS) == "no mask record"
    for key, value in [
        ("fingerprint", "0" * 64),
        ("phagoflow_version", "2.0"),
        ("method", "cdl"),
        ("pixel_size_um", 0.3),
        ("shape", [5, 4]),
        ("field", "r02c03f02p01"),
        ("schema", 0),
    ]:
        assert reuse_mismatch({**record, key: value}, record, REUSE_KEYS) == f"{key} changed"
    # other CIP parameters or model: the mask still shows the same pixels (kept, not reused)
    assert reuse_mismatch({**record, "fingerprint": "0"}, record, SOURCE_KEYS) is None


def test_a_changed_source_file_invalidates_the_mask(tmp_path: Path) -> None:
    _, before = _record(tmp_path, b"red")
    _, after = _record(tmp_path, b"red, re-exported")
    assert reuse_mismatch(before, after, REUSE_KEYS) == "sources changed"
    assert reuse_mismatch(before, after, SOURCE_KEYS) == "sources changed"


@pytest.mark.parametrize("content", [b"", b"not a tiff"])
def test_unreadable_masks_and_masks_without_record(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.tiff"
    broken.write_bytes(content)
    assert read_mask(broken, (4, 5)) is None
    plain = tmp_path / "plain.tiff"
    tifffile.imwrite(plain, np.zeros((4, 5), np.uint8))
    got = read_mask(plain, (4, 5))
    assert got is not None and got[1] is None  # a mask, but nobody says what made it
    tifffile.imwrite(plain, np.full((4, 5), 3, np.uint8))
    assert read_mask(plain, (4, 5)) is None  # not a 0/1/2 label mask


def test_a_failed_write_leaves_neither_mask_nor_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, record = _record(tmp_path)
    path = mask_path(tmp_path / "out", "cip", "r02c03f01p01")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("phagoflow.embedded.masks.os.replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_mask(path, np.zeros((4, 5), np.uint8), record)
    assert list(path.parent.iterdir()) == []


def test_clear_stale_temps_only_removes_temporaries(tmp_path: Path) -> None:
    folder = tmp_path / "masks" / "cip"
    folder.mkdir(parents=True)
    (folder / ".r02c02f01p01.tiff.123.tmp").write_bytes(b"half")
    (folder / "r02c02f01p01.tiff").write_bytes(b"whole")
    assert clear_stale_temps(tmp_path / "masks") == 1
    assert [p.name for p in folder.iterdir()] == ["r02c02f01p01.tiff"]


def test_code_digest_follows_core_imports_lazy_ones_included(tmp_path: Path) -> None:
    from phagoflow.embedded.masks import _core_imports, code_digest

    source = tmp_path / "m.py"
    source.write_text(
        "import numpy\nfrom phagoflow.core import cip\n"
        "def f():\n    from phagoflow.core.tiling import make_tiles\n"
    )
    found = _core_imports(source)
    assert "phagoflow.core.tiling" in found and not any(n.startswith("numpy") for n in found)
    cip = code_digest(["phagoflow.core.cip"])
    assert cip == code_digest(["phagoflow.core.cip"])  # stable
    assert code_digest(["phagoflow.core.inference"]) != cip
    # inference reaches tiling: hashing tiling on its own as well changes nothing
    inference = code_digest(["phagoflow.core.inference"])
    assert code_digest(["phagoflow.core.inference"], ["phagoflow.core.tiling"]) == inference


def test_a_code_change_invalidates_the_mask(tmp_path: Path) -> None:
    _, record = _record(tmp_path)
    record["code_sha256"] = "a" * 64
    changed = {**record, "code_sha256": "b" * 64}
    assert reuse_mismatch(changed, record, REUSE_KEYS) == "code_sha256 changed"
