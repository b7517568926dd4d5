"""Per-plate CIP self-calibration: estimate the PSF σ and the ratio threshold from a plate.

Reads a sample of the plate's fields (evenly spread over the plate; no truth, no labels),
calls :func:`phagoflow.core.cip.calibrate_cip` and writes the calibrated parameters as JSON,
for ``phagoflow run EXPORT --cip-params FILE.json``. The parameters' ``calibration`` field
records what was estimated, from how many objects and fields, and the values it replaced;
``phagoflow run`` copies every CIP parameter into ``run.json``, so the record lands in the
run's provenance.

Usage::

    .venv/bin/python scripts/cip_calibrate.py EXPORT --out cip-calibrated.json [--fields 12]
    .venv/bin/phagoflow run EXPORT --out OUT --cip-params cip-calibrated.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from phagoflow.core.cip import CipParameters, calibrate_cip
from phagoflow.core.opera import load_field, read_plate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--fields", type=int, default=12, help="fields to sample (default 12)")
    ap.add_argument("--cip-params", type=Path, help="starting parameters (JSON)")
    args = ap.parse_args(argv)
    start = (
        CipParameters.model_validate_json(args.cip_params.read_text())
        if args.cip_params
        else CipParameters()
    )
    cat = read_plate(args.export)
    if not cat.fields:
        sys.exit(f"{args.export}: no readable field")
    pick = np.unique(np.linspace(0, len(cat.fields) - 1, min(args.fields, len(cat.fields))))
    images = [load_field(cat, cat.fields[int(i)]) for i in pick]
    source = f"plate {cat.plate_id}: {len(images)} of {len(cat.fields)} fields"
    params = calibrate_cip(images, cat.pixel_size_um, params=start, source=source)
    args.out.write_text(params.model_dump_json(indent=1) + "\n")
    record = params.calibration or {}
    for name in ("psf_sigma_um", "ratio_threshold"):
        entry = record.get(name, {})
        print(f"{name}: {entry.get('before')} -> {entry.get('after')}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
