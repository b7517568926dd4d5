"""`phagoflow evaluate`: scores against simulated truth, mask folders, bad input, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from phagoflow.cli import main
from phagoflow.core.cip import segment_cip
from phagoflow.core.opera import load_field, read_plate
from phagoflow.embedded.evaluate import MaskSource, parse_mask_source


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 wells x 1 field; export under plate/Images, truth in plate/truth (+ instances/)."""
    out = tmp_path_factory.mktemp("sim") / "plate"
    args = ["-q", "simulate", str(out), "--wells", "2", "--fields", "1", "--seed", "11"]
    assert main([*args, "--plate", "EVAL1"]) == 0
    return out


@pytest.fixture(scope="module")
def run_out(plate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`phagoflow run --method cip` output of the plate (OUT/masks/cip/*.tiff, run.json)."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["-q", "run", str(plate), "--out", str(out), "--method", "cip"]) == 0
    return out


@pytest.fixture(scope="module")
def cip_report(plate: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("eval")
    rc = main(["-q", "evaluate", str(plate), "--truth", str(plate / "truth"), "--methods", "cip",
               "--json", str(tmp / "eval.json"), "--figure", str(tmp / "eval.png")])  # fmt: skip
    assert rc == 0
    assert (tmp / "eval.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    doc: dict[str, Any] = json.loads((tmp / "eval.json").read_text())
    return doc


def _evaluate(plate: Path, *args: str) -> int:
    return main(["-q", "evaluate", str(plate), "--truth", str(plate / "truth"), *args])


def _components(mask: np.ndarray, value: int) -> int:
    return int(ndimage.label(mask == value, structure=np.ones((3, 3)))[1])


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--truth", "--model", "--methods", "--masks", "--json", "--figure"):
        assert flag in out


def test_cip_scores_match_an_independent_computation(
    plate: Path, cip_report: dict[str, Any]
) -> None:
    cat = read_plate(plate)
    tp = np.zeros(3)
    fp = np.zeros(3)
    fn = np.zeros(3)
    true_counts: dict[str, list[int]] = {}
    pred_counts: dict[str, list[int]] = {}
    for rec in cat.fields:
        truth = tifffile.imread(plate / "truth" / f"{rec.key.name}.tiff")
        pred = segment_cip(load_field(cat, rec), cat.pixel_size_um).mask
        for c in range(3):
            tp[c] += np.sum((truth == c) & (pred == c))
            fp[c] += np.sum((truth != c) & (pred == c))
            fn[c] += np.sum((truth == c) & (pred != c))
        true_counts[rec.key.well] = [_components(truth, 1), _components(truth, 2)]
        pred_counts[rec.key.well] = [_components(pred, 1), _components(pred, 2)]
    iou = tp / (tp + fp + fn)

    assert cip_report["export"]["plate_id"] == "EVAL1"
    assert cip_report["export"]["index_sha256"] == cat.index_sha256
    assert cip_report["fields_evaluated"] == 2 and cip_report["skipped"] == []
    cip = cip_report["methods"]["cip"]
    got = cip["metrics"]["per_class"]["iou"]
    names = ("background", "phagophore", "autolysosome")
    assert [got[n] for n in names] == pytest.approx(iou.tolist(), rel=1e-9)
    assert 0 < iou[1] < 1 and 0 < iou[2] < 1  # a real test: CIP is neither perfect nor useless
    assert cip["provenance"]["cip_parameters"]["threshold_k"] > 0

    wells = {w["well"]: w for w in cip_report["wells"]}
    for well, counts in true_counts.items():
        assert [wells[well]["truth"][k] for k in ("phagophores", "autolysosomes")] == counts
        assert [wells[well]["methods"]["cip"][k] for k in ("phagophores", "autolysosomes")] == (
            pred_counts[well]
        )
    t = np.array(list(true_counts.values()), float)
    p = np.array([pred_counts[w] for w in true_counts], float)
    mae = np.abs(p - t).mean(axis=0)
    err = cip["count_errors"]
    assert [err["mae"]["phagophores"], err["mae"]["autolysosomes"]] == pytest.approx(mae)
    assert err["n_wells"] == 2
    # the simulator's instances/ give true object counts too
    assert cip_report["truth"]["instances"] is True
    assert cip["count_errors_instances"]["n_wells"] == 2


def test_masks_of_a_run_output_score_like_the_method(
    plate: Path, run_out: Path, tmp_path: Path
) -> None:
    js = tmp_path / "e.json"
    rc = _evaluate(plate, "--methods", "cip", "--masks", str(run_out / "masks" / "cip"),
                   "--masks", f"again={run_out / 'masks' / 'cip'}", "--json", str(js))  # fmt: skip
    assert rc == 0
    doc = json.loads(js.read_text())
    assert list(doc["methods"]) == ["cip", "masks/cip", "again"]
    ref = doc["methods"]["cip"]
    for name in ("masks/cip", "again"):
        m = doc["methods"][name]
        assert m["metrics"] == ref["metrics"]
        assert m["count_errors"] == ref["count_errors"]
        assert m["scores"] == ref["scores"]
        prov = m["provenance"]
        assert prov["same_export"] is True
        assert prov["run_method"]["fingerprint"] == ref["provenance"]["fingerprint"]


def test_only_masks_means_no_segmenter(plate: Path, run_out: Path, tmp_path: Path) -> None:
    js = tmp_path / "e.json"
    assert (
        _evaluate(plate, "--masks", f"cipmasks={run_out / 'masks' / 'cip'}", "--json", str(js)) == 0
    )
    assert list(json.loads(js.read_text())["methods"]) == ["cipmasks"]


def test_a_field_missing_from_a_mask_folder_is_skipped_for_every_method(
    plate: Path, run_out: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run_out / "masks" / "cip" / "r02c02f01p01.tiff", partial)
    js = tmp_path / "e.json"
    assert _evaluate(plate, "--methods", "cip", "--masks", f"p={partial}", "--json", str(js)) == 0
    doc = json.loads(js.read_text())
    assert doc["fields"] == ["r02c02f01p01"]
    assert [s["field"] for s in doc["skipped"]] == ["r02c03f01p01"]
    assert "no mask for p" in doc["skipped"][0]["reason"]
    for m in ("cip", "p"):
        assert doc["methods"][m]["metrics"]["n_images"] == 1
    assert doc["methods"]["cip"]["metrics"] == doc["methods"]["p"]["metrics"]


def test_parse_mask_source() -> None:
    assert parse_mask_source("mine=/a/b/c") == MaskSource("mine", Path("/a/b/c"))
    assert parse_mask_source("/x/out/masks/cip") == MaskSource(
        "masks/cip", Path("/x/out/masks/cip")
    )
    assert parse_mask_source("/x/a=b/masks").name == "a=b/masks"  # '=' after a separator: a path


# ------------------------------------------------------------------------------ bad input
def _refused(rc: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("phagoflow: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_missing_truth_folder(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["-q", "evaluate", str(plate), "--truth", str(tmp_path / "nope")])
    _refused(rc, capsys, "truth folder", "nope")


def test_truth_matching_no_field(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "truth"
    other.mkdir()
    tifffile.imwrite(other / "r09c09f01p01.tiff", np.zeros((512, 680), np.uint8))
    rc = main(["-q", "evaluate", str(plate), "--truth", str(other)])
    _refused(rc, capsys, "no truth mask", "EVAL1")


def test_truth_of_the_wrong_shape_names_the_file(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "truth"
    shutil.copytree(plate / "truth", bad)
    tifffile.imwrite(bad / "r02c03f01p01.tiff", np.zeros((256, 256), np.uint8))
    rc = main(["-q", "evaluate", str(plate), "--truth", str(bad)])
    _refused(rc, capsys, "r02c03f01p01.tiff", "(256, 256)")


def test_truth_in_a_per_plate_sub_folder(plate: Path, tmp_path: Path) -> None:
    root = tmp_path / "truths"
    shutil.copytree(plate / "truth", root / "EVAL1")
    js = tmp_path / "e.json"
    rc = main(["-q", "evaluate", str(plate), "--truth", str(root), "--json", str(js)])
    assert rc == 0
    assert json.loads(js.read_text())["fields_evaluated"] == 2


def test_cdl_without_a_default_model(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import phagoflow.core.inference as inference

    monkeypatch.setattr(inference, "default_model_dir", lambda: tmp_path / "no-model")
    monkeypatch.delenv("PHAGOFLOW_MODEL_DIR", raising=False)
    _refused(_evaluate(plate, "--methods", "cdl"), capsys, "no default model", "--model")


def test_bad_model_folder_and_bad_names(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(_evaluate(plate, "--methods", "cdl", "--model", str(tmp_path)), capsys, "card.json")
    _refused(_evaluate(plate, "--methods", "xyz"), capsys, "unknown method 'xyz'")
    _refused(_evaluate(plate, "--masks", f"cip={tmp_path}"), capsys, "cip")  # clashes with cip
    _refused(
        _evaluate(plate, "--methods", "none", "--masks", f"m={tmp_path}"), capsys, "no mask in"
    )
    _refused(_evaluate(plate, "--methods", "none"), capsys, "nothing to evaluate")


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_simulate_train_run_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAGOFLOW_CACHE_DIR", str(tmp_path / "cache"))
    plate = tmp_path / "plate"
    assert main(["-q", "simulate", str(plate), "--wells", "2", "--fields", "1", "--seed", "2"]) == 0
    model = tmp_path / "model"
    rc = main(["-q", "train", str(plate), "--out", str(model), "--epochs", "1",
               "--patches-per-epoch", "8", "--base-channels", "4", "--val-fraction", "0.5",
               "--truth", str(plate / "truth")])  # fmt: skip
    assert rc == 0
    out = tmp_path / "out"
    rc = main(
        ["-q", "run", str(plate), "--out", str(out), "--method", "all", "--model", str(model)]
    )
    assert rc == 0
    js = tmp_path / "eval.json"
    rc = _evaluate(plate, "--methods", "cip,cdl", "--model", str(model),
                   "--masks", f"run-cdl={out / 'masks' / 'cdl'}", "--json", str(js))  # fmt: skip
    assert rc == 0
    doc = json.loads(js.read_text())
    assert list(doc["methods"]) == ["cip", "cdl", "run-cdl"]
    cdl = doc["methods"]["cdl"]
    card = json.loads((model / "card.json").read_text())
    assert cdl["provenance"]["model_version"] == card["version"]
    assert cdl["metrics"]["n_images"] == 2
    # the runner's CDL masks and evaluate's own CDL segmentation are the same
    assert doc["methods"]["run-cdl"]["metrics"] == cdl["metrics"]
    for m in ("cip", "cdl"):
        assert doc["methods"][m]["count_errors"]["n_wells"] == 2
