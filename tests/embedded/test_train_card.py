"""`python -m phagoflow.embedded.card`: make model's scores and commands go into the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from phagoflow.core.model_dir import load_model_dir, save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig
from phagoflow.embedded.card import headline_scores, main, record_provenance


def _model(path: Path) -> Path:
    torch.manual_seed(0)
    config = UNetConfig(base_channels=2)
    save_model_dir(path, UNet(config).eval(), config, NormalisationConfig(), {"seed": 0})
    return path


def _boxes(n_true: int, n_pred: int, n_matched: int) -> dict[str, Any]:
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "n_matched": n_matched,
        "precision": n_matched / n_pred,
        "recall": n_matched / n_true,
        "f1": 2 * n_matched / (n_true + n_pred),
    }


def _method(miou: float) -> dict[str, Any]:
    counts = {
        "mae": {"phagophores": 3.0, "autolysosomes": 5.0},
        "mre": {"phagophores": 0.1, "autolysosomes": 0.2},
    }
    return {
        "metrics": {
            "n_images": 6,
            "per_class": {"iou": {"background": 0.99, "phagophore": 0.4, "autolysosome": 0.6}},
            "aggregate": {"iou": {"mean": miou}, "bf": {"mean": 0.9}},
            "boxes": {
                "phagophore": _boxes(10, 8, 6),
                "autolysosome": _boxes(20, 22, 18),
            },
        },
        "count_errors": {"mae": {"phagophores": 9.0, "autolysosomes": 9.0}, "mre": counts["mre"]},
        "count_errors_instances": counts,
    }


def _report(path: Path) -> Path:
    report = {
        "export": {"plate_id": "normal-900", "index_sha256": "ab" * 32},
        "truth": {"instances": True},
        "fields_evaluated": 6,
        "methods": {"cip": _method(0.65), "cdl": _method(0.66)},
    }
    path.write_text(json.dumps(report))
    return path


def test_headline_scores_pool_both_classes_and_count_against_instances() -> None:
    s = headline_scores(_method(0.65))
    assert s["miou"] == 0.65
    assert s["fg_miou"] == 0.5
    assert s["f1"] == round(2 * (6 + 18) / (10 + 8 + 20 + 22), 4)
    assert s["f1_phagophore"] == round(12 / 18, 4)
    assert s["count_mae_phagophore"] == 3.0  # instances, not the truth masks' 9.0
    assert s["count_mre_autolysosome"] == 0.2
    assert s["n_fields"] == 6


def test_record_provenance_keeps_weights_and_version(tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    before = json.loads((model / "card.json").read_text())
    record_provenance(
        model,
        {"normal": _report(tmp_path / "normal.json")},
        commands=["phagoflow simulate a", "phagoflow train a --out model"],
        recipe={"epochs": 12},
        made_by="make model",
    )
    _, card = load_model_dir(model)  # checksums still verify
    assert card.version == before["version"]
    assert card.checksums == before["checksums"]
    training = card.training
    assert training["seed"] == 0  # what train wrote is kept
    plate = training["evaluation"]["plates"]["normal"]
    assert plate["plate_id"] == "normal-900"
    assert plate["methods"]["cdl"]["miou"] == 0.66
    assert training["made_by"] == {
        "by": "make model",
        "commands": ["phagoflow simulate a", "phagoflow train a --out model"],
    }
    assert training["recipe"] == {"epochs": 12}


def test_main_reads_commands_and_recipe_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path / "model")
    (tmp_path / "commands.txt").write_text("phagoflow simulate a\n\nphagoflow train a\n")
    (tmp_path / "recipe.json").write_text('{"ce_weight": 0.5}')
    rc = main(
        [
            str(model),
            f"harder={_report(tmp_path / 'harder.json')}",
            "--commands",
            str(tmp_path / "commands.txt"),
            "--recipe",
            str(tmp_path / "recipe.json"),
            "--made-by",
            "make model",
        ]
    )
    assert rc == 0
    assert "harder cdl: mean IoU 0.660" in capsys.readouterr().out
    training = json.loads((model / "card.json").read_text())["training"]
    assert training["made_by"]["commands"] == ["phagoflow simulate a", "phagoflow train a"]
    assert training["recipe"] == {"ce_weight": 0.5}


def test_not_an_evaluation_report_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    bad = tmp_path / "bad.json"
    bad.write_text('{"fields": []}')
    with pytest.raises(ValueError, match="not a `phagoflow evaluate --json` report"):
        record_provenance(model, {"normal": bad})
