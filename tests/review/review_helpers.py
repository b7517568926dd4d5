"""Helpers shared by the review tests: a results folder built from simulated truth, encoders.

The results folder has the layout ``phagoflow run --method all`` writes (run.json, wells.csv,
objects.csv, masks/cip, masks/cdl) but its masks come from the simulator's truth (``cip``) and a
deterministic alteration of it (``cdl``), so no segmentation runs in the tests.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from phagoflow.core.opera.catalogue import FieldKey

TOKEN = "test-token-123"
SIZE_YX = (96, 128)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a .npy file."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def tiff_bytes(array: np.ndarray) -> bytes:
    """``array`` as a single-page TIFF."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def auth(token: str = TOKEN) -> dict[str, str]:
    """Authorization header."""
    return {"Authorization": f"Bearer {token}"}


#: Overrides the test clients' default token: a request with no credentials.
ANON = {"Authorization": ""}


def _alter(mask: np.ndarray, seed: int) -> np.ndarray:
    """A 'CDL' mask: drop every other object and add one autolysosome square."""
    out = mask.copy()
    labels, n = ndi.label(mask > 0)
    for i in range(1, n + 1, 2):
        out[labels == i] = 0
    y = 10 + seed % 40
    out[y : y + 6, 20:26] = 2
    return out


def _count(mask: np.ndarray) -> dict[str, int]:
    eight = np.ones((3, 3), bool)
    return {
        "phagophore": int(ndi.label(mask == 1, structure=eight)[1]),
        "autolysosome": int(ndi.label(mask == 2, structure=eight)[1]),
    }


def build_results(export_root: Path, truth_dir: Path, plate_id: str, out: Path) -> Path:
    """Write a results folder for the simulated plate into ``out``."""
    out.mkdir(parents=True)
    objects = []
    wells: dict[tuple[str, str], dict[str, int]] = {}
    for i, path in enumerate(sorted(truth_dir.glob("*.tiff"))):
        key = FieldKey.parse(path.stem)
        truth = tifffile.imread(path)
        for method, mask in (("cip", truth), ("cdl", _alter(truth, i))):
            (out / "masks" / method).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(out / "masks" / method / path.name, mask.astype(np.uint8))
            counts = _count(mask)
            acc = wells.setdefault((key.well, method), {"fields": 0, **dict.fromkeys(counts, 0)})
            acc["fields"] += 1
            for cls, n in counts.items():
                acc[cls] += n
                objects += [(plate_id, key.well, key.name, method, j + 1, cls) for j in range(n)]
    with (out / "objects.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("plate", "well", "field", "method", "object", "class"))
        w.writerows(objects)
    with (out / "wells.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ("plate", "well", "row", "col", "method", "fields", "phagophores", "autolysosomes")
        )
        for (well, method), acc in sorted(wells.items()):
            key = FieldKey.parse(f"{well}f01p01")
            w.writerow(
                (plate_id, well, key.row, key.col, method, acc["fields"], acc["phagophore"],
                 acc["autolysosome"])
            )  # fmt: skip
    run = {
        "export": {"plate_id": plate_id, "root": str(export_root)},
        "methods": {"cip": {"method": "cip"}, "cdl": {"method": "cdl"}},
    }
    (out / "run.json").write_text(json.dumps(run))
    return out
