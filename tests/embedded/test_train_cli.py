"""`phagoflow train`: model folders from plate exports, their cards, fine-tuning and refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from phagoflow.cli import main
from phagoflow.core.model_dir import load_model_dir
from phagoflow.core.opera import open_writer, read_plate
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.training import TrainingConfig, TrainingData, train_unet

#: Smallest useful training: no validation, one epoch of 4 patches of 64 px, width 2.
TINY = [
    "--epochs", "1", "--patches-per-epoch", "4", "--batch-size", "2", "--patch-size", "64",
    "--base-channels", "2", "--val-fraction", "0", "--threads", "2",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PHAGOFLOW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated plate: 2 wells x 1 field, export in plate/Images, truth in plate/truth."""
    out = tmp_path_factory.mktemp("sim") / "plate"
    args = ["-q", "simulate", str(out), "--wells", "2", "--fields", "1", "--seed", "7"]
    assert main([*args, "--plate", "TRAIN1"]) == 0
    return out


def _train(args: list[str]) -> int:
    return main(["-q", "train", *args])


@pytest.fixture(scope="module")
def mdl_model(plate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model trained on the plate's true masks standing in for curated masks (MDL)."""
    out = tmp_path_factory.mktemp("mdl") / "model"
    rc = _train([str(plate), "--out", str(out), "--labels", str(plate / "truth"), "--seed", "4",
                 *TINY])  # fmt: skip
    assert rc == 0
    return out


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    flags = ("--out", "--labels", "--truth", "--init", "--epochs", "--seed", "--val-fraction",
             "--base-channels", "--patches-per-epoch", "--early-stopping")  # fmt: skip
    for flag in flags:
        assert flag in out


def test_curated_masks_give_a_model_folder_with_a_full_card(plate: Path, mdl_model: Path) -> None:
    masks = plate / "truth"
    _, card = load_model_dir(mdl_model)  # verifies checksums of model.pt and model.onnx
    assert card.architecture.base_channels == 2
    training = card.training
    cat = read_plate(plate)
    data = training["data"]
    assert data["labels"] == str(masks.resolve())
    assert data["cip_parameters"] is None
    assert [e["plate_id"] for e in data["exports"]] == ["TRAIN1"]
    assert data["exports"][0]["index_sha256"] == cat.index_sha256
    assert data["exports"][0]["fields"] == 2 and data["n_fields"] == 2
    assert training["seed"] == 4 and training["parameters"]["seed"] == 4
    assert training["parameters"]["epochs"] == 1 and len(training["history"]) == 1
    assert training["training_time_s"] > 0
    assert {"torch", "numpy", "phagoflow", "onnxruntime"} <= set(card.software)

    # per-field checksums: names are PLATE/field; the label checksum is of the mask file's pixels
    checks = training["data_checksums"]
    assert sorted(checks) == ["TRAIN1/r02c02f01p01", "TRAIN1/r02c03f01p01"]
    mask = np.ascontiguousarray(tifffile.imread(masks / "r02c02f01p01.tiff"))
    h = hashlib.sha256(f"{mask.dtype.str}{mask.shape}".encode())
    h.update(mask.tobytes())
    assert checks["TRAIN1/r02c02f01p01"]["label_sha256"] == h.hexdigest()
    digest = hashlib.sha256(json.dumps(checks, sort_keys=True).encode()).hexdigest()
    assert data["fields_digest"] == digest


def test_cip_weak_labels_are_cached_and_recorded(plate: Path, tmp_path: Path, _cache: Path) -> None:
    out = tmp_path / "model"
    assert _train([str(plate), "--out", str(out), *TINY]) == 0
    card = json.loads((out / "card.json").read_text())
    data = card["training"]["data"]
    assert data["labels"] == "cip"
    assert data["cip_parameters"]["threshold_k"] > 0
    assert len(data["cip_fingerprint"]) == 64
    cached = sorted(p.name for p in _cache.rglob("*.tiff"))
    assert cached == ["r02c02f01p01.tiff", "r02c03f01p01.tiff"]


def test_truth_is_reported_per_epoch(plate: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    args = [*TINY[:-6], "--val-fraction", "0.5", "--threads", "2"]  # one validation field
    rc = _train([str(plate), "--out", str(out), "--labels", str(plate / "truth"),
                 "--truth", str(plate / "truth"), *args])  # fmt: skip
    assert rc == 0
    training = json.loads((out / "card.json").read_text())["training"]
    rec = training["history"][0]
    assert training["data"]["truth_used"] is True
    # labels are the truth here, so IoU against labels and against truth must agree
    assert rec["val_miou_truth"] is not None
    assert rec["val_miou_truth"] == pytest.approx(rec["val_miou_weak"])
    assert len(training["split"]["val"]) == 1


def test_init_fine_tunes_from_a_model_folder(plate: Path, mdl_model: Path, tmp_path: Path) -> None:
    first = mdl_model
    labels = str(plate / "truth")
    _, card1 = load_model_dir(first)
    second = tmp_path / "second"
    tiny_no_width = [
        a for i, a in enumerate(TINY) if "--base-channels" not in TINY[max(i - 1, 0) : i + 1]
    ]
    rc = _train([str(plate), "--out", str(second), "--labels", labels, "--init", str(first),
                 *tiny_no_width])  # fmt: skip
    assert rc == 0
    _, card2 = load_model_dir(second)
    init = card2.training["data"]["init"]
    assert init["version"] == card1.version and init["checksums"] == card1.checksums
    assert card2.architecture == card1.architecture
    assert card2.version != card1.version  # trained further


def test_init_default_fine_tunes_the_packaged_model(plate: Path, tmp_path: Path) -> None:
    """MDL from curated masks: `--labels CURATED --init default` starts from the shipped CDL."""
    from phagoflow.core.inference import default_model_dir

    _, shipped = load_model_dir(default_model_dir())
    tiny_no_width = [
        a for i, a in enumerate(TINY) if "--base-channels" not in TINY[max(i - 1, 0) : i + 1]
    ]
    out = tmp_path / "mdl"
    rc = _train([str(plate), "--out", str(out), "--labels", str(plate / "truth"),
                 "--init", "default", *tiny_no_width])  # fmt: skip
    assert rc == 0
    _, card = load_model_dir(out)
    init = card.training["data"]["init"]
    assert init["name"] == shipped.name and init["version"] == shipped.version
    assert card.architecture == shipped.architecture
    assert card.normalisation == shipped.normalisation


def test_preset_mdl_sets_the_fine_tuning_recipe_and_flags_override_it(
    plate: Path, tmp_path: Path
) -> None:
    """`--preset mdl` starts from the measured MDL recipe; --config and flags still win."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"learning_rate": 0.001}))
    out = tmp_path / "mdl"
    rc = _train([str(plate), "--out", str(out), "--labels", str(plate / "truth"),
                 "--preset", "mdl", "--config", str(cfg), *TINY])  # fmt: skip
    assert rc == 0
    _, card = load_model_dir(out)
    params = card.training["parameters"]
    assert params["optimizer"] == "adam" and params["ce_weight"] == 2.0  # from the preset
    assert params["learning_rate"] == 0.001  # --config over the preset
    assert params["epochs"] == 1 and params["patches_per_epoch"] == 4  # flags over both
    paper = tmp_path / "paper"
    assert _train([str(plate), "--out", str(paper), "--labels", str(plate / "truth"), *TINY]) == 0
    assert load_model_dir(paper)[1].training["parameters"]["optimizer"] == "sgd"


def test_init_state_starts_from_the_given_weights() -> None:
    rng = np.random.default_rng(0)
    img = rng.poisson(100, (2, 32, 32)).astype(np.float32)
    lab = np.zeros((32, 32), np.uint8)
    lab[10:14, 10:14] = 1
    data = TrainingData([img, img.copy()], [lab, lab.copy()], ["a", "b"])
    cfg = TrainingConfig(epochs=1, patch_size=32, patches_per_epoch=2, batch_size=2,
                         base_channels=2, val_fraction=0, learning_rate=1e-12, seed=1)  # fmt: skip
    start = train_unet(data, cfg.model_copy(update={"seed": 2}), progress=False).model.state_dict()
    tuned = train_unet(data, cfg, progress=False, init_state=start).model.state_dict()
    fresh = train_unet(data, cfg, progress=False).model.state_dict()
    conv = [k for k, v in start.items() if k.endswith("weight") and v.ndim == 4]
    assert conv
    for k in conv:  # a learning rate of 1e-12 leaves the initial weights in place
        assert torch.allclose(tuned[k], start[k], atol=1e-6)
    assert any(not torch.allclose(fresh[k], start[k], atol=1e-3) for k in conv)


# ------------------------------------------------------------------------------ refusals
def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    assert _train(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("phagoflow: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_refuses_a_mask_folder_matching_no_field(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "not-a-field.tiff", np.zeros((512, 680), np.uint8))
    _refused([str(plate), "--out", str(tmp_path / "m"), "--labels", str(masks), *TINY],
             capsys, "no training fields", str(masks))  # fmt: skip
    assert not (tmp_path / "m" / "card.json").exists()


def test_refuses_all_zero_masks(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in (plate / "truth").glob("r*.tiff"):
        tifffile.imwrite(masks / p.name, np.zeros((512, 680), np.uint8))
    _refused([str(plate), "--out", str(tmp_path / "m"), "--labels", str(masks), *TINY],
             capsys, "no objects at all", "2 fields")  # fmt: skip


def test_refuses_when_cip_finds_no_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank"
    with open_writer("harmony5", blank, plate_id="BLANK", size_yx=(128, 128)) as w:
        for f in (1, 2):
            w.add_field(FieldKey(2, 2, f), np.full((2, 128, 128), 100, np.uint16))
    _refused([str(blank), "--out", str(tmp_path / "m"), *TINY], capsys, "CIP found no objects")


def test_refuses_a_mask_of_the_wrong_shape(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(plate / "truth", masks)
    tifffile.imwrite(masks / "r02c03f01p01.tiff", np.zeros((10, 10), np.uint8))
    _refused([str(plate), "--out", str(tmp_path / "m"), "--labels", str(masks), *TINY],
             capsys, "r02c03f01p01.tiff", "(10, 10)")  # fmt: skip


def test_refuses_an_unwritable_out(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    labels = ["--labels", str(plate / "truth")]
    _refused([str(plate), "--out", str(a_file), *labels, *TINY], capsys, "not a folder")
    _refused([str(plate), "--out", str(a_file / "sub"), *labels, *TINY], capsys, "cannot write")


def test_refuses_to_overwrite_a_model_unless_asked(
    plate: Path, mdl_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    shutil.copytree(mdl_model, out)
    labels = ["--labels", str(plate / "truth")]
    _refused([str(plate), "--out", str(out), *labels, *TINY], capsys, "already holds a model")
    assert _train([str(plate), "--out", str(out), "--overwrite", *labels, *TINY]) == 0


def test_refuses_init_without_card(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused([str(plate), "--out", str(tmp_path / "m"), "--init", str(empty),
              "--labels", str(plate / "truth"), *TINY], capsys, "card.json")  # fmt: skip


def test_refuses_init_with_another_width(
    plate: Path, mdl_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = ["--labels", str(plate / "truth")]
    _refused([str(plate), "--out", str(tmp_path / "m"), "--init", str(mdl_model), *labels, *TINY,
              "--base-channels", "4"], capsys, "--base-channels 4")  # fmt: skip


def test_refuses_nan_loss(plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused([str(plate), "--out", str(tmp_path / "m"), "--labels", str(plate / "truth"), *TINY,
              "--learning-rate", "1e30", "--epochs", "3"], capsys, "loss became")  # fmt: skip


def test_refuses_missing_export_and_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused([str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")], capsys, "nowhere")
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"no_such_knob": 1}')
    _refused(
        [str(tmp_path), "--out", str(tmp_path / "m"), "--config", str(cfg)], capsys, "no_such_knob"
    )
