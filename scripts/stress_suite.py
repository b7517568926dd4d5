"""The stress suite under the protocol: CIP (new and old) and Big-FISH per imaging condition.

Renders the protocol's plates (``phagoflow.core.protocol``; one plate per condition, ``--wells``
× ``--fields``), segments every field with each method and prints the per-condition table
(``phagoflow.core.evaluation.format_condition_table``): object F1 with the classes merged,
3-class mean IoU, CPU seconds per field, and more with ``--columns``.

Methods:

- ``cip`` — the current :func:`phagoflow.core.cip.segment_cip` (``--set NAME=VALUE`` overrides
  a :class:`~phagoflow.core.cip.CipParameters` field; refused on test plates);
- ``cip_cal`` — the current CIP after per-plate self-calibration on the plate's own fields
  (:func:`~phagoflow.core.cip.calibrate_cip`, no truth); the calibration's CPU time is
  shared out over the plate's fields;
- ``cip_v1`` — the CIP as it was before issue 15 (loaded from git, ``--old-commit``);
- ``cdl`` — the U-Net (``--model``, default the shipped model) as ``phagoflow run`` runs it,
  fields resampled to the model's pixel size; ``cdl_native`` the same without resampling;
- ``bigfish`` — Big-FISH 0.6.2's LoG detector (``detect_spots``, automated threshold, spot
  radius 300 nm, pixel size in nm) on the DsRed channel, run in its own venv
  (``--bigfish-python``) through ``scripts/peers/bigfish_detect.py``. Spots become disks of the
  spot radius, classed by the same green/red rule as :func:`_classify_spots` (the harness's,
  not Big-FISH's; only ``detect_spots`` is timed).

CPU time: ``time.process_time()`` around each field's segmentation, one thread
(``OMP_NUM_THREADS=1``), in this process for the CIPs and inside the peer process for Big-FISH.

Validation plates are for choices; ``--role test`` reports (``require_reportable``) and refuses
``--set``. Rendered plates are cached under ``--cache`` (keyed by the generators' source).

Usage::

    .venv/bin/python scripts/stress_suite.py --role validation --methods cip cip_v1
    .venv/bin/python scripts/stress_suite.py --role test --methods cip cip_v1 bigfish \\
        --json experiment-out/stress-test.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from phagoflow.core import altsim, simulate, stress
from phagoflow.core.cip import CipParameters, calibrate_cip, segment_cip
from phagoflow.core.evaluation import (
    CONDITION_COLUMNS,
    ConditionScores,
    condition_scores,
    format_condition_table,
)
from phagoflow.core.protocol import (
    PlateSpec,
    Role,
    StressPlate,
    plate_set,
    render_plate,
    require_reportable,
    require_tunable,
)
from phagoflow.core.segmenters import UNetSegmenter
from phagoflow.core.stress import CONDITIONS, StressField
from phagoflow.reporting.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "d636c14"  # the CIP before issue 15
BIGFISH_PYTHON = os.environ.get("PHAGOFLOW_BIGFISH_PYTHON", "/work/peers/bigfish/bin/python")
SPOT_RADIUS_UM = 0.3
Segment = Callable[[NDArray[Any], float], NDArray[np.uint8]]


def get_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["validation", "test"], default="validation")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["cip"],
        choices=["cip", "cip_cal", "cip_v1", "bigfish", "cdl", "cdl_native"],
    )
    ap.add_argument("--model", type=Path, default=None, help="U-Net model folder (cdl methods)")
    ap.add_argument(
        "--cdl-min-area",
        type=float,
        default=None,
        metavar="UM2",
        help="cdl methods: drop predicted objects under this area (default: the product's, "
        "Predictor.min_object_area_um2); refused on test plates",
    )
    ap.add_argument("--wells", type=int, default=4)
    ap.add_argument("--fields", type=int, default=3)
    ap.add_argument("--plates", type=int, default=1, help="plates per condition")
    ap.add_argument("--first", type=int, default=0, help="first seed's offset in the role's range")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="CIP overrides")
    ap.add_argument("--columns", nargs="+", default=["f1_merged", "miou", "cpu_s_per_field"])
    ap.add_argument("--old-commit", default=OLD_COMMIT)
    ap.add_argument("--bigfish-python", default=BIGFISH_PYTHON)
    ap.add_argument("--cache", type=Path, default=ROOT / "experiment-out" / "stress-cache")
    ap.add_argument("--json", type=Path, help="write every score here")
    return ap


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs → dict, values parsed as JSON where possible."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


# ------------------------------------------------------------------------------------- plates


def _source_key() -> str:
    text = "".join(Path(m.__file__ or "").read_text() for m in (altsim, simulate, stress))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cached_plate(spec: PlateSpec, cache: Path) -> StressPlate:
    """Render a plate, or load it from the cache (keyed by spec and generator sources)."""
    path = cache / f"{spec.role.value}-{spec.condition}-{spec.seed}-{spec.wells}x{spec.fields}"
    path = path.with_name(path.name + f"-{_source_key()}.npz")
    if path.exists():
        d = np.load(path)
        fields = tuple(
            StressField(d["images"][i], d["truths"][i], *map(int, d["counts"][i]), float(d["px"]))
            for i in range(len(d["truths"]))
        )
        return StressPlate(spec, fields, tuple(int(w) for w in d["wells"]))
    plate = render_plate(spec)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        images=np.stack([f.image for f in plate.fields]),
        truths=np.stack([f.truth for f in plate.fields]),
        counts=np.array([(f.phagophores, f.autolysosomes) for f in plate.fields]),
        wells=np.array(plate.wells),
        px=plate.fields[0].pixel_size_um,
    )
    return plate


# ------------------------------------------------------------------------------------ methods


def load_old_cip(commit: str) -> ModuleType:
    """The CIP module as it was at ``commit`` (read with ``git show``), as a fresh module."""
    source = subprocess.run(
        ["git", "show", f"{commit}:services/phagoflow/core/cip.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tmp = Path(tempfile.mkdtemp(prefix="cip-old-")) / "cip_v1.py"
    tmp.write_text(source)
    spec = importlib.util.spec_from_file_location("cip_v1", tmp)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cip_v1"] = module
    spec.loader.exec_module(module)
    return module


def run_inprocess(segment: Segment, plate: StressPlate) -> tuple[list[NDArray[np.uint8]], float]:
    """Masks of every field and the total CPU seconds of ``segment``."""
    segment(np.asarray(plate.fields[0].image), plate.fields[0].pixel_size_um)  # warm-up
    masks, cpu = [], 0.0
    for f in plate.fields:
        t0 = time.process_time()
        masks.append(np.asarray(segment(np.asarray(f.image), f.pixel_size_um), dtype=np.uint8))
        cpu += time.process_time() - t0
    return masks, cpu


def _classify_spots(
    image: NDArray[Any], spots: NDArray[np.int64], px: float, radius_px: float
) -> NDArray[np.uint8]:
    """Disks of ``radius_px`` at ``spots``: 1 where green/red excess ≥ 0.5 × the cytosol's, else 2.

    Excess = a PSF-sized Gaussian (0.25 µm) minus a local background (20th percentile in
    3 µm windows, computed on a 4× coarser grid); the cytosol's ratio is the median
    green/red of the background above its median.
    """
    img = np.asarray(image, dtype=np.float32)
    low = ndi.gaussian_filter(img, (0, 0.25 / px, 0.25 / px))
    small = low[:, ::4, ::4]
    size = max(3, round(3.0 / px / 4))
    bg_small = ndi.percentile_filter(small, 20, size=(1, size, size))
    bg = np.stack([ndi.zoom(b, 4, order=1)[: img.shape[1], : img.shape[2]] for b in bg_small])
    dark = np.percentile(bg, 0.5, axis=(1, 2))
    red_bg, green_bg = bg[0] - dark[0], bg[1] - dark[1]
    ok = red_bg > np.median(red_bg)
    cyto = float(np.median(green_bg[ok] / np.maximum(red_bg[ok], 1e-3))) if ok.any() else 1.0
    mask = np.zeros(img.shape[1:], np.uint8)
    r = math.ceil(radius_px)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = dy * dy + dx * dx <= radius_px * radius_px
    for y, x in spots:
        ex = low[:, y, x] - bg[:, y, x]
        cls = 1 if ex[0] > 0 and ex[1] >= 0.5 * cyto * ex[0] else 2
        ys, xs = y + dy[disk], x + dx[disk]
        keep = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
        mask[ys[keep], xs[keep]] = cls
    return mask


def run_bigfish(plate: StressPlate, python: str) -> tuple[list[NDArray[np.uint8]], float]:
    """Big-FISH in its own venv on the DsRed channel of every field; masks and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="bigfish-") as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            inp,
            images=np.stack([np.asarray(f.image[0], dtype=np.float32) for f in plate.fields]),
            pixel_size_um=np.array([f.pixel_size_um for f in plate.fields]),
        )
        script = ROOT / "scripts" / "peers" / "bigfish_detect.py"
        radius_nm = f"{SPOT_RADIUS_UM * 1000:g}"
        subprocess.run(
            [python, str(script), str(inp), str(out), "--radius-nm", radius_nm], check=True
        )
        res = np.load(out)
        spots, cpu = res["spots"], float(res["cpu_seconds"].sum())
    masks = []
    for i, f in enumerate(plate.fields):
        mine = spots[spots[:, 0] == i, 1:]
        masks.append(
            _classify_spots(f.image, mine, f.pixel_size_um, SPOT_RADIUS_UM / f.pixel_size_um)
        )
    return masks, cpu


def run_calibrated(
    plate: StressPlate, params: CipParameters
) -> tuple[list[NDArray[np.uint8]], float]:
    """Calibrate the CIP on the plate's own fields, then segment them; CPU time of both."""
    images = [np.asarray(f.image) for f in plate.fields]
    t0 = time.process_time()
    calibrated = calibrate_cip(images, plate.fields[0].pixel_size_um, params=params)
    cpu = time.process_time() - t0
    masks, seg = run_inprocess(lambda im, px: segment_cip(im, px, params=calibrated).mask, plate)
    return masks, cpu + seg


def run_unet(
    plate: StressPlate, model: Path | None, native: bool, min_area_um2: float | None = None
) -> tuple[list[NDArray[np.uint8]], float]:
    """The U-Net (default: the shipped model) as ``phagoflow run`` uses it, one thread.

    ``native`` switches off the resampling to the model's pixel size (fields as they come);
    ``min_area_um2`` overrides the smallest object kept.
    """
    seg = UNetSegmenter(model, threads=1)
    if native:
        seg.predictor.rescale_tolerance = None
    if min_area_um2 is not None:
        seg.predictor.min_object_area_um2 = min_area_um2
    return run_inprocess(seg.segment, plate)


def make_methods(args: argparse.Namespace) -> dict[str, Callable[[StressPlate], Any]]:
    """Method name → callable(plate) returning (masks, cpu seconds)."""
    params = CipParameters(**parse_overrides(args.set))
    out: dict[str, Callable[[StressPlate], Any]] = {}
    for name in args.methods:
        if name == "cip":
            out[name] = lambda pl: run_inprocess(
                lambda im, px: segment_cip(im, px, params=params).mask, pl
            )
        elif name in ("cdl", "cdl_native"):
            out[name] = lambda pl, native=(name == "cdl_native"): run_unet(
                pl, args.model, native, args.cdl_min_area
            )
        elif name == "cip_cal":
            out[name] = lambda pl: run_calibrated(pl, params)
        elif name == "cip_v1":
            old = load_old_cip(args.old_commit)
            out[name] = lambda pl, old=old: run_inprocess(
                lambda im, px: old.segment_cip(im, px).mask, pl
            )
        else:
            out[name] = lambda pl: run_bigfish(pl, args.bigfish_python)
    return out


# --------------------------------------------------------------------------------------- main


def score_plate(plate: StressPlate, masks: list[NDArray[np.uint8]], cpu: float) -> ConditionScores:
    return condition_scores(
        [(f.truth, m) for f, m in zip(plate.fields, masks, strict=True)],
        wells=[f"w{w:02d}" for w in plate.wells],
        true_counts=[(f.phagophores, f.autolysosomes) for f in plate.fields],
        cpu_seconds=cpu,
    )


def check_protocol(args: argparse.Namespace, specs: list[PlateSpec]) -> None:
    if args.role == "test":
        require_reportable(specs)
        if args.set or args.cdl_min_area is not None:
            sys.exit(
                "--set and --cdl-min-area are choices: make them on validation plates, not on "
                "test plates"
            )
    else:
        require_tunable(specs)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_arg_parser().parse_args(argv)
    unknown = [c for c in args.columns if c not in CONDITION_COLUMNS]
    if unknown:
        sys.exit(f"unknown columns {unknown}; choose from {list(CONDITION_COLUMNS)}")
    role = Role(args.role)
    specs = plate_set(
        role,
        args.conditions,
        plates=args.plates,
        first=args.first,
        wells=args.wells,
        fields=args.fields,
    )
    check_protocol(args, specs)
    methods = make_methods(args)
    table: dict[str, dict[str, ConditionScores]] = {}
    for spec in specs:
        plate = cached_plate(spec, args.cache)
        key = spec.condition if args.plates == 1 else f"{spec.condition}:{spec.seed}"
        table[key] = {}
        for name, run in methods.items():
            masks, cpu = run(plate)
            table[key][name] = score_plate(plate, masks, cpu)
        print(f"{key}: " + ", ".join(f"{m} F1 {s.f1_merged:.3f}" for m, s in table[key].items()))
    label = "TEST plates (reportable)" if role is Role.TEST else "validation plates (choices)"
    print(
        f"\n{label}; {args.wells} wells x {args.fields} fields per condition; {cpu_description()}"
    )
    print(format_condition_table(table, columns=args.columns))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "role": args.role,
            "specs": [s.name for s in specs],
            "overrides": parse_overrides(args.set),
            "cdl_min_area_um2": args.cdl_min_area,
            "machine": cpu_description(),
            "scores": {k: {m: s.to_dict() for m, s in v.items()} for k, v in table.items()},
        }
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
