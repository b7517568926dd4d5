"""Promotion gate: curated masks first, else CIP agreement; never on a compared model's training
fields; against the current CIP version and the version Triton actually serves."""

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
from phagoflow.registry.gate import current_cip_version, decide, load_heldout
from phagoflow.registry.store import ModelRegistry, RegistryError
from phagoflow.services.objectstore import ObjectStore
from phagoflow.stack import TritonServer

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
    fields = load_heldout(store, [plate]).fields
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
    fields = load_heldout(store, [plate]).fields
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


THREE = [("r01c01", "r01c01f01p01"), ("r01c02", "r01c02f01p01"), ("r01c03", "r01c03f01p01")]


def _fields(
    store: ObjectStore, plate: str, refs: list[Path | None], *, prefix: str, seed: int = 0
) -> None:
    """Raw fields of THREE plus one mask per field under ``prefix``: that field's model's
    prediction, or random where the model is None."""
    rng = np.random.default_rng(seed)
    for (well, name), model in zip(THREE, refs, strict=True):
        image = rng.integers(100, 4000, size=(2, 64, 96), dtype=np.uint16)
        for i, role in enumerate(("dsred", "phluorin")):
            store.put_bytes(f"raw/{plate}/{well}/{name}/{role}.tiff", _tiff(image[i]))
        if model is not None:
            mask = load_predictor(model).predict(image.astype(np.float32))
        else:
            mask = rng.integers(0, 3, size=(64, 96), dtype=np.uint8)
        store.put_bytes(f"{prefix}/{well}/{name}.mask.tiff", _tiff(mask))


def test_gate_never_scores_a_candidate_on_its_training_fields(
    store: ObjectStore, make_model: Callable[..., Path], unique: str
) -> None:
    """Curated masks of fields 1-2 are what the candidate learnt there; field 3 is new to it.

    Scored on all three, the candidate would beat the serving model by reciting its training
    data; scored only on field 3, the serving model (whose prediction it is) wins.
    """
    plate = f"P{unique}"
    seen = [f"{plate}/{name}" for _, name in THREE[:2]]
    serving_dir = make_model(21, favour=1)
    candidate_dir = make_model(22, favour=2, trained=seen)
    _fields(store, plate, [candidate_dir, candidate_dir, serving_dir], prefix=f"curated/{plate}")
    _fields(store, plate, [None, None, None], prefix=f"results/{plate}/cip/0123abcd")
    reg = ModelRegistry(store)
    vs, vc = reg.push(serving_dir).version, reg.push(candidate_dir).version
    reg.promote(vs, base_config=GPU_CONFIG)
    promoted, reason = promote_with_gate(reg, vc, plates=[plate])
    assert not promoted, reason
    gate = reg.state().history[-1].gate
    assert gate is not None
    assert (gate["n_fields"], gate["n_excluded"], gate["source"]) == (1, 2, "curated")
    assert (gate["candidate_version"], gate["serving_version"]) == (vc, vs)
    assert f"candidate v{vc}" in reason and f"serving v{vs} (per registry)" in reason
    # a model that trained on every curated field cannot be gated on them: refused, no CIP
    everything = make_model(23, trained=[f"{plate}/{name}" for _, name in THREE])
    v_all = reg.push(everything).version
    with pytest.raises(RegistryError, match="was used to train or validate"):
        promote_with_gate(reg, v_all, plates=[plate])
    assert reg.serving() == vs


def test_cip_reference_is_the_current_cip_version_not_the_last_listed(
    store: ObjectStore, make_model: Callable[..., Path], unique: str
) -> None:
    plate = f"P{unique}"
    current = current_cip_version()
    model = make_model(31, favour=1)
    _fields(store, plate, [model] * 3, prefix=f"results/{plate}/cip/{current}")
    _fields(store, plate, [None] * 3, prefix=f"results/{plate}/cip/ffffffffffffffff")  # sorts last
    held = load_heldout(store, [plate])
    assert held.cip_version == current and len(held.fields) == 3
    predicted = load_predictor(model)
    for f in held.fields:  # the current version's masks, not the other one's
        np.testing.assert_array_equal(f.reference, predicted.predict(f.image))
    other = load_heldout(store, [plate], cip_version="ffffffffffffffff")
    assert other.cip_version == "ffffffffffffffff"
    plate2 = f"Q{unique}"
    for version in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"):
        _fields(store, plate2, [None] * 3, prefix=f"results/{plate2}/cip/{version}")
    with pytest.raises(ValueError, match="none of them the current CIP"):
        load_heldout(store, [plate2])


def test_gate_compares_with_the_version_triton_serves(
    store: ObjectStore, make_model: Callable[..., Path], unique: str, tmp_path: Path
) -> None:
    """registry.json says v1 serves, but Triton was pinned to v2 by hand: v2 is the rival."""
    from triton_repo import MODEL, SOURCE, versioned_repository

    plate = f"P{unique}"
    a, b, c = make_model(41, favour=1), make_model(42, favour=2), make_model(43)
    _fields(store, plate, [a, a, a], prefix=f"curated/{plate}")
    reg = ModelRegistry(store, model=MODEL)
    v1, v2, v3 = (reg.push(m).version for m in (a, b, c))
    reg.promote(v1, base_config=(SOURCE / "config.pbtxt").read_text())
    repo = versioned_repository(tmp_path / "repo", {v1: a, v2: b}, serving=v2)
    with TritonServer(repo, log_path=tmp_path / "triton.log", startup_timeout_s=90) as triton:
        _, reason = promote_with_gate(reg, v3, plates=[plate], triton_http=triton.http_url)
    gate = reg.state().history[-1].gate
    assert gate is not None and (gate["serving_version"], gate["serving_from"]) == (v2, "triton")
    assert f"serving v{v2} (per triton)" in reason
    b_score = evaluate_masks(
        (f.reference, load_predictor(b).predict(f.image))
        for f in load_heldout(store, [plate]).fields
    ).matlab["MeanIoU"]
    assert gate["serving"] == pytest.approx(b_score)  # scored v2's model, not v1's
