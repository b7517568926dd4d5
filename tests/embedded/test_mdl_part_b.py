"""Part B: `train --holdout`, `evaluate --unet NAME=DIR --held-out-by MODEL_DIR`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from phagoflow.cli import main
from phagoflow.core.training import TrainingError
from phagoflow.embedded.evaluate import read_holdout
from phagoflow.embedded.train import select_holdout

PLATE_ID = "PARTB1"
#: One epoch of 4 patches of 64 px, width 2, one validation field of the 4 left after hold-out.
TINY = [
    "--epochs", "1", "--patches-per-epoch", "4", "--batch-size", "2", "--patch-size", "64",
    "--base-channels", "2", "--val-fraction", "0.25", "--threads", "2",
]  # fmt: skip


def _names(wells: dict[str, int], plate: str = "P") -> list[str]:
    """``plate/rRRcCCfFFp01`` names: ``wells`` maps ``rRRcCC`` to its number of fields."""
    return [f"{plate}/{w}f{f:02d}p01" for w, n in wells.items() for f in range(1, n + 1)]


def _well(name: str) -> str:
    return name.rpartition("/")[0] + "/" + name.rpartition("/")[2][:6]


# ------------------------------------------------------------------------ hold-out selection
def test_holdout_is_deterministic_for_a_seed_and_depends_on_it() -> None:
    names = _names({"r02c02": 4, "r02c03": 4, "r03c02": 4})
    first = select_holdout(names, 0.25, 3)
    assert first == select_holdout(names, 0.25, 3)
    assert first == select_holdout(list(names), 0.25, 3)
    draws = {tuple(select_holdout(names, 0.25, seed)) for seed in range(8)}
    assert len(draws) > 1, "the seed does not change the held-out fields"


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_holdout_is_spread_over_wells(seed: int) -> None:
    names = _names({"r02c02": 4, "r02c03": 4, "r03c02": 4})
    held = select_holdout(names, 0.25, seed)  # 3 of 12: one per well
    assert len(held) == 3
    assert sorted(Counter(_well(h) for h in held).values()) == [1, 1, 1]
    held = select_holdout(names, 0.5, seed)  # 6 of 12: two per well
    assert sorted(Counter(_well(h) for h in held).values()) == [2, 2, 2]
    # a crowded well does not take the hold-out: one of each before a second of any
    uneven = _names({"r02c02": 5, "r02c03": 1})
    assert sorted(Counter(_well(h) for h in select_holdout(uneven, 0.34, seed)).values()) == [1, 1]
    # same well name on two plates: two different wells
    two = _names({"r02c02": 3}, "A") + _names({"r02c02": 3}, "B")
    held = select_holdout(two, 0.34, seed)
    assert sorted(h.split("/")[0] for h in held) == ["A", "B"]


def test_holdout_keeps_the_order_of_the_names() -> None:
    names = _names({"r02c02": 3, "r02c03": 3})
    held = select_holdout(names, 0.5, 11)
    assert held == [n for n in names if n in set(held)]
    assert len(held) == 3


def test_holdout_fraction_edge_cases() -> None:
    names = _names({"r02c02": 5, "r02c03": 5})
    assert select_holdout(names, 0.0, 0) == []
    assert len(select_holdout(names, 0.01, 0)) == 1  # at least one field when > 0
    assert len(select_holdout(names, 0.34, 0)) == 3  # round(3.4)
    assert len(select_holdout(names, 0.85, 0)) == 8
    assert select_holdout([], 0.5, 0) == []
    assert len(select_holdout(names[:2], 0.5, 0)) == 1


@pytest.mark.parametrize(
    ("n", "fraction", "needle"),
    [
        (1, 0.5, "no field to train on"),  # one field: nothing left
        (2, 0.9, "no field to train on"),  # round(1.8) = 2 of 2
        (10, 0.96, "no field to train on"),  # round(9.6) = 10 of 10
        (4, 1.0, "[0, 1)"),
        (4, -0.1, "[0, 1)"),
    ],
)
def test_holdout_that_leaves_no_training_field_is_refused(
    n: int, fraction: float, needle: str
) -> None:
    names = _names({"r02c02": n})
    with pytest.raises(TrainingError, match=r"holdout") as exc:
        select_holdout(names, fraction, 0)
    assert needle in str(exc.value)


def test_holdout_names_must_be_unique() -> None:
    with pytest.raises(TrainingError, match="unique"):
        select_holdout(["P/r02c02f01p01", "P/r02c02f01p01", "P/r02c03f01p01"], 0.3, 0)


# ------------------------------------------------------------------------------ CLI, fast
@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAGOFLOW_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 wells x 3 fields; its truth stands in for the curated masks (plate/truth)."""
    out = tmp_path_factory.mktemp("sim") / "plate"
    args = ["-q", "simulate", str(out), "--wells", "2", "--fields", "3", "--seed", "5"]
    assert main([*args, "--plate", PLATE_ID]) == 0
    return out


@pytest.fixture(scope="module")
def held_model(plate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MDL trained on 4 of the 6 curated fields, 2 held out."""
    out = tmp_path_factory.mktemp("mdl") / "model"
    rc = main(["-q", "train", str(plate), "--out", str(out), "--labels", str(plate / "truth"),
               "--holdout", "0.34", "--seed", "2", *TINY])  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def plain_model(plate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny training without --holdout."""
    out = tmp_path_factory.mktemp("plain") / "model"
    rc = main(["-q", "train", str(plate), "--out", str(out), "--labels", str(plate / "truth"),
               *TINY])  # fmt: skip
    assert rc == 0
    return out


def _card(model: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((model / "card.json").read_text())
    return card


def _evaluate(plate: Path, *args: str, truth: Path | None = None) -> int:
    truth = plate / "truth" if truth is None else truth
    return main(["-q", "evaluate", str(plate), "--truth", str(truth), *args])


def _refused(rc: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("phagoflow: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_help_lists_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    for command, flags in (("train", ["--holdout"]), ("evaluate", ["--unet", "--held-out-by"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for flag in flags:
            assert flag in out


def test_train_holdout_is_recorded_and_kept_out_of_train_and_val(held_model: Path) -> None:
    training = _card(held_model)["training"]
    split = training["split"]
    every = {f"{PLATE_ID}/r02c0{c}f0{f}p01" for c in (2, 3) for f in (1, 2, 3)}
    assert len(split["holdout"]) == 2  # round(0.34 * 6)
    assert {_well(h) for h in split["holdout"]} == {f"{PLATE_ID}/r02c02", f"{PLATE_ID}/r02c03"}
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    parts = [set(split["holdout"]), set(split["train"]), set(split["val"])]
    assert set.union(*parts) == every
    assert sum(len(p) for p in parts) == 6  # disjoint
    assert set(training["data_checksums"]) == every - set(split["holdout"])
    data = training["data"]
    assert data["n_fields"] == 4 and data["n_holdout"] == 2 and data["holdout_fraction"] == 0.34
    assert data["exports"][0]["fields"] == 4 and data["exports"][0]["fields_holdout"] == 2
    # the same seed draws the same fields, as the public function says
    assert split["holdout"] == select_holdout(sorted(every), 0.34, 2)
    assert read_holdout(held_model)[0] == split["holdout"]


def test_train_without_holdout_records_an_empty_list(plain_model: Path) -> None:
    training = _card(plain_model)["training"]
    split = training["split"]
    assert split["holdout"] == []
    assert len(split["train"]) + len(split["val"]) == 6
    assert training["data"]["n_holdout"] == 0
    assert training["data"]["exports"][0]["fields"] == 6
    assert training["data"]["exports"][0]["fields_holdout"] == 0
    # the pixel size inference resamples other fields to (the simulator's 0.2 µm)
    assert training["data"]["exports"][0]["pixel_size_um"] == pytest.approx(0.2)
    assert training["pixel_size_um"] == pytest.approx(0.2)


def test_train_refuses_a_holdout_that_leaves_nothing(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in ("0.95", "1", "-0.2"):
        out = tmp_path / f"m{value}"
        rc = main(["-q", "train", str(plate), "--out", str(out), "--labels", str(plate / "truth"),
                   "--holdout", value, *TINY])  # fmt: skip
        _refused(rc, capsys, "holdout")
        assert not (out / "card.json").exists()


def test_evaluate_held_out_fields_with_an_extra_unet(
    plate: Path, held_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js = tmp_path / "e.json"
    rc = _evaluate(plate, "--methods", "cip", "--unet", f"mdl={held_model}",
                   "--held-out-by", str(held_model), "--json", str(js))  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    split = _card(held_model)["training"]["split"]
    held = [h.split("/")[1] for h in split["holdout"]]
    assert list(doc["methods"]) == ["cip", "mdl"]
    assert sorted(doc["fields"]) == sorted(held)
    assert doc["methods"]["mdl"]["metrics"]["n_images"] == len(held)
    prov = doc["methods"]["mdl"]["provenance"]
    assert prov["method"] == "mdl" and prov["model_version"] == _card(held_model)["version"]
    assert doc["held_out_by"]["holdout_fields"] == 2 and doc["held_out_by"]["on_plate"] == 2
    assert f"held out of training by {held_model}" in out and "2 field(s) evaluated" in out
    # without --held-out-by every field is evaluated, with a different score for the U-Net
    js_all = tmp_path / "all.json"
    assert _evaluate(plate, "--unet", f"mdl={held_model}", "--json", str(js_all)) == 0
    every = json.loads(js_all.read_text())
    assert list(every["methods"]) == ["mdl"]  # --unet alone: no default cip
    assert every["fields_evaluated"] == 6 and every["held_out_by"] is None


def test_held_out_by_a_model_without_holdout(
    plate: Path, plain_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = plain_model / "card.json"
    _refused(_evaluate(plate, "--held-out-by", str(plain_model)), capsys, str(card),
             "training.split.holdout", "--holdout")  # fmt: skip
    # a card written before --holdout existed has no holdout key at all
    old = tmp_path / "old"
    shutil.copytree(plain_model, old)
    doc = _card(old)
    del doc["training"]["split"]["holdout"]
    (old / "card.json").write_text(json.dumps(doc))
    _refused(_evaluate(plate, "--held-out-by", str(old)), capsys, str(old / "card.json"))
    _refused(_evaluate(plate, "--held-out-by", str(tmp_path / "none")), capsys, "does not exist")


def test_held_out_fields_on_another_plate_or_without_truth(
    plate: Path, held_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(held_model, other)
    doc = _card(other)
    doc["training"]["split"]["holdout"] = ["ELSEWHERE/r02c02f01p01"]
    (other / "card.json").write_text(json.dumps(doc))
    _refused(_evaluate(plate, "--held-out-by", str(other)), capsys, str(other / "card.json"),
             f"is on plate {PLATE_ID}", "ELSEWHERE")  # fmt: skip

    held = [h.split("/")[1] for h in _card(held_model)["training"]["split"]["holdout"]]
    truth = tmp_path / "truth"
    truth.mkdir()
    for tif in (plate / "truth").glob("*.tiff"):
        if tif.stem not in held:
            shutil.copy(tif, truth / tif.name)
    rc = _evaluate(plate, "--held-out-by", str(held_model), truth=truth)
    _refused(rc, capsys, str(held_model / "card.json"), "has a truth mask", held[0])

    # one held-out truth mask present: evaluated alone, the other listed as without truth
    shutil.copy(plate / "truth" / f"{held[0]}.tiff", truth)
    js = tmp_path / "one.json"
    rc = _evaluate(plate, "--held-out-by", str(held_model), "--json", str(js), truth=truth)
    assert rc == 0
    doc = json.loads(js.read_text())
    assert doc["fields"] == [held[0]]
    assert doc["held_out_by"]["without_truth"] == [held[1]]


def test_bad_unet_values(
    plate: Path, held_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    _refused(_evaluate(plate, "--unet", f"mdl={missing}"), capsys, str(missing))
    _refused(_evaluate(plate, "--unet", f"mdl={tmp_path}"), capsys, "card.json")  # not a model
    clash = _evaluate(plate, "--methods", "cip", "--unet", f"cip={held_model}")
    _refused(clash, capsys, "cip", "used twice")
    twice = _evaluate(plate, "--unet", f"m={held_model}", "--masks", f"m={plate / 'truth'}")
    _refused(twice, capsys, "m", "used twice")
    _refused(_evaluate(plate, "--unet", f"truth={held_model}"), capsys, "reserved")


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_part_b_mdl_from_default_on_curated_fields_it_never_saw(
    plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curated = plate / "truth"  # stands in for RESULTS/curated of `phagoflow review`
    mdl = tmp_path / "mdl-1"
    rc = main(["-q", "train", str(plate), "--labels", str(curated), "--holdout", "0.34",
               "--init", "default", "--out", str(mdl), "--epochs", "1", "--patches-per-epoch",
               "4", "--batch-size", "2", "--patch-size", "64", "--val-fraction", "0.25",
               "--threads", "2"])  # fmt: skip
    assert rc == 0
    assert "2 field(s) held out" in capsys.readouterr().out
    js = tmp_path / "part-b.json"
    rc = _evaluate(plate, "--methods", "cip,cdl", "--unet", f"mdl={mdl}", "--held-out-by",
                   str(mdl), "--json", str(js), truth=curated)  # fmt: skip
    assert rc == 0
    doc = json.loads(js.read_text())
    training = _card(mdl)["training"]
    split = training["split"]
    assert training["data"]["init"]["name"]  # fine-tuned from the packaged model
    assert {"cip", "cdl", "mdl"} == set(doc["methods"])
    evaluated = {f"{PLATE_ID}/{f}" for f in doc["fields"]}
    assert evaluated == set(split["holdout"]) and len(evaluated) == 2
    assert not evaluated & (set(split["train"]) | set(split["val"]))
    for method in ("cip", "cdl", "mdl"):
        assert doc["methods"][method]["metrics"]["n_images"] == 2
    assert doc["methods"]["mdl"]["provenance"]["model_dir"] == str(mdl)
