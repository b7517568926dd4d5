"""Cross-check against an independent reader: openreadout (PyPI, Rust) on our written exports.

openreadout 0.4 reads Harmony V4–V7 folders and standalone Opera ``.flex`` files. It does not
apply ``Array@Factor`` and has no channel names for ``.flex`` (it reads no Exposure names), so
those two points are compared on Harmony only / with Factor 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from opera_plates import MakePlate

from phagoflow.core.opera import ROLE_ORDER, FieldKey, load_field, read_plate

openreadout: Any = pytest.importorskip("openreadout", reason="openreadout is a dev extra")


@pytest.mark.parametrize(
    ("fmt", "writer_kw"),
    [
        ("harmony4", {}),
        ("harmony5", {"field_digits": 3}),
        ("harmony6", {"channel_ids": (2, 1)}),
        ("harmony7", {"channel_names": ("mCherry", "EGFP")}),
        ("flex", {}),
    ],
)
def test_catalogue_agrees_with_openreadout(
    make_plate: MakePlate, fmt: str, writer_kw: dict[str, Any]
) -> None:
    plate = make_plate(fmt, fields=3, **writer_kw)
    cat = read_plate(plate.root)
    with openreadout.File(str(plate.root)) as f:
        info = f.info
        images = info["images"]
        assert len(images) == len({(k.well, k.field) for k in plate.images}) == 6
        ours_by_id = sorted(cat.channels, key=lambda c: c.channel_id)
        for idx, im in enumerate(images):
            extra = im["extra"]
            key = FieldKey(int(extra["row_index"]) + 1, int(extra["column"]), int(extra["field"]))
            assert (im["size_y"], im["size_x"]) == cat.size_yx
            assert im["size_c"] == len(cat.channels) == 2
            assert im["physical_size"]["x"] == pytest.approx(cat.pixel_size_um)
            if fmt != "flex":
                assert [c["name"] for c in im["channels"]] == [c.name for c in ours_by_id]
            ours = load_field(cat, key)
            for ci, channel in enumerate(ours_by_id):
                theirs = f.read_plane(idx, c=ci, z=0, t=0)
                plane = ROLE_ORDER.index(channel.role)
                np.testing.assert_array_equal(ours[plane], theirs.astype(np.float32))
