"""Helpers of the Opera tests: tiny synthetic plate exports written with phagoflow's writers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from phagoflow.core.opera import FieldKey, open_writer

SIZE_YX = (64, 80)
PIXEL_SIZE_UM = 0.325
WELLS = ((2, 5), (3, 7))
#: ``wavelengths=`` for a plate whose index carries no wavelengths (roles from names only)
NO_WAVES = (None, None)


@dataclass
class WrittenPlate:
    """An export on disk and the exact pixels written into it."""

    root: Path  # what the writer's close() returned
    export_format: str
    images: dict[FieldKey, npt.NDArray[np.uint16]]  # uint16 (2, H, W) ordered [DsRed, pHluorin]
    out_dir: Path

    def plane_file(self, key: FieldKey, channel_id: int) -> Path:
        """Harmony TIFF of one channel of one field (2-digit field names)."""
        return self.root / (
            f"r{key.row:02d}c{key.col:02d}f{key.field:02d}p{key.plane:02d}"
            f"-ch{channel_id}sk{key.timepoint + 1}fk1fl1.tiff"
        )

    def flex_file(self, key: FieldKey) -> Path:
        return self.root / f"{key.row:03d}{key.col:03d}000.flex"

    def index_file(self) -> Path:
        for name in ("Index.xml", "Index.idx.xml"):
            if (self.root / name).is_file():
                return self.root / name
        raise FileNotFoundError(self.root)

    def age(self, seconds: float = 3600.0) -> None:
        """Set every file's mtime ``seconds`` into the past (a quiet, finished export)."""
        past = time.time() - seconds
        for f in self.root.rglob("*"):
            if f.is_file():
                os.utime(f, (past, past))


MakePlate = Callable[..., WrittenPlate]


def write_plate(
    out_dir: Path,
    export_format: str,
    *,
    wells: Iterable[tuple[int, int]] = WELLS,
    fields: int = 2,
    planes: int = 1,
    timepoints: int = 1,
    seed: int = 0,
    skip: Iterable[FieldKey] = (),
    **writer_kw: Any,
) -> WrittenPlate:
    """Write a plate of random uint16 fields; returns what was written."""
    rng = np.random.default_rng(seed)
    kw: dict[str, Any] = {
        "plate_id": "PLATE-001",
        "pixel_size_um": PIXEL_SIZE_UM,
        "size_yx": SIZE_YX,
    }
    kw.update(writer_kw)
    skipped = set(skip)
    images: dict[FieldKey, npt.NDArray[np.uint16]] = {}
    with open_writer(export_format, out_dir, **kw) as w:
        for r, c in wells:
            for t in range(timepoints):
                for f in range(1, fields + 1):
                    for p in range(1, planes + 1):
                        key = FieldKey(r, c, f, p, t)
                        if key in skipped:
                            continue
                        n = 3 if kw.get("nuclear_name") else 2
                        img = rng.integers(0, 4096, (n, *kw["size_yx"]), dtype=np.uint16)
                        images[key] = img
                        w.add_field(key, img)
    return WrittenPlate(w.root, export_format, images, out_dir)
