"""Promotion gate: curated masks first, else CIP agreement; promote only if not worse."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile

from phagoflow.core.evaluation import evaluate_masks
from phagoflow.core.inference import load_predictor
from phagoflow.registry.cli import promote_with_gate
from phagoflow.registry.gate import decide, load_heldout
from phagoflow.registry.store import ModelRegistry, RegistryError
from phagoflow.services.objectstore import ObjectStore

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = (ROOT / "model_repository/autophagy_unet/config.pbtxt").read_text()
FIELDS = [("r01c01", "r01c01f01p01"), ("r01c02", "r01c02f01p01")]


def _tiff(a: npt.NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, a)
    return buf.getvalue()


def _plate(store: ObjectStore, plate: str, reference: Path | None, *, prefix: str) -> None:
    """Raw fields of ``plate`` plus reference masks: ``reference``'s predictions (or random)."""
    rng = np.random.default_rng(0)
    predictor = load_predictor(reference) if reference is not None else None
    for well, name in FIELDS:
        image = rng.integers(100, 4000, size=(2, 64, 96), dtype=np.uint16)
        for i, role in enumerate(("dsred", "phluorin")):
            store.put_bytes(f"raw/{plate}/{well}/{name}/{role}.tiff", _tiff(image[i]))
        if predictor is not None:
            mask = predictor.predict(image.astype(np.float32))
        else:
            mask = rng.integers(0, 3, size=(64, 96), dtype=np.uint8)
        store.put_bytes(f"{prefix}/{well}/{name}.mask.tiff", _tiff(mask))


def test_decide_tolerance() -> None:
    t = np.zeros((16, 16), np.uint8)
    t[4:10, 4:10] = 1
    worse = t.copy()
    worse[4:10, 4:7] = 0
    good, bad = evaluate_masks([(t, t)]), evaluate_masks([(t, worse)])
    assert decide(good, bad, source="curated").promote
    assert not decide(bad, good, source="curated").promote
    assert decide(good, good, source="curated").promote  # "not worse" includes equal
    gap = good.matlab["MeanIoU"] - bad.matlab["MeanIoU"]
    assert decide(bad, good, source="cip", tolerance=gap + 1e-9).promote
    assert decide(bad, None, source="cip").promote  # nothing serving
    with pytest.raises(ValueError, match="tolerance"):
        decide(good, bad, source="cip", tolerance=-1)
    d = decide(bad, good, source="curated")
    assert "reject" in d.reason and d.to_dict()["serving"] == pytest.approx(1.0)


def test_gate_on_cip_agreement(
    store: ObjectStore, make_model: Callable[..., Path], unique: str
) -> None:
    """CIP masks that model A reproduces: A replaces B, B does not replace A."""
    a, b = make_model(11, favour=1), make_model(12, favour=2)
    plate = f"P{unique}"
    _plate(store, plate, a, prefix=f"results/{plate}/cip/0123abcd")
    fields = load_heldout(store, [plate])
    assert [f.source for f in fields] == ["cip", "cip"]
    assert fields[0].image.shape == (2, 64, 96) and fields[0].image.dtype == np.float32
    reg = ModelRegistry(store)
    va, vb = reg.push(a).version, reg.push(b).version
    reg.promote(vb, base_config=GPU_CONFIG)
    promoted, reason = promote_with_gate(reg, va, plates=[plate])
    assert promoted and "cip" in reason, reason
    assert reg.serving() == va
    promoted, reason = promote_with_gate(reg, vb, plates=[plate])
    assert not promoted and "reject" in reason
    assert reg.serving() == va
    last = reg.state().history[-1]
    assert last.action == "reject" and last.gate is not None and last.gate["n_fields"] == 2


def test_curated_masks_win_over_cip(
    store: ObjectStore, make_model: Callable[..., Path], unique: str
) -> None:
    """With curated masks present they decide, even when CIP agreement says otherwise."""
    a, b = make_model(11, favour=1), make_model(12, favour=2)
    plate = f"P{unique}"
    _plate(store, plate, a, prefix=f"results/{plate}/cip/0123abcd")
    # experts' masks agree with B: the gate must follow them, not CIP
    predictor = load_predictor(b)
    for well, name in FIELDS[:1]:
        raw = [f"raw/{plate}/{well}/{name}/{r}.tiff" for r in ("dsred", "phluorin")]
        image = np.stack([tifffile.imread(io.BytesIO(store.get_bytes(k))) for k in raw])
        mask = predictor.predict(image.astype(np.float32))
        store.put_bytes(f"curated/{plate}/{well}/{name}.mask.tiff", _tiff(mask))
    fields = load_heldout(store, [plate])
    assert [f.source for f in fields] == ["curated"]
    reg = ModelRegistry(store)
    va, vb = reg.push(a).version, reg.push(b).version
    reg.promote(va, base_config=GPU_CONFIG)
    promoted, reason = promote_with_gate(reg, vb, plates=[plate])
    assert promoted and "curated" in reason


def test_gate_needs_heldout_fields(store: ObjectStore, make_model: Callable[..., Path]) -> None:
    reg = ModelRegistry(store)
    v1, v2 = reg.push(make_model(1)).version, reg.push(make_model(2)).version
    reg.promote(v1, base_config=GPU_CONFIG)
    with pytest.raises(RegistryError, match="no held-out field"):
        promote_with_gate(reg, v2, plates=["NOPE"])
    with pytest.raises(RegistryError, match="--plates"):
        promote_with_gate(reg, v2, plates=[])
    assert reg.serving() == v1
