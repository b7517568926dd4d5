"""Tests of phagoflow.reporting.evaluation_figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from phagoflow.core.evaluation import evaluate_masks
from phagoflow.reporting.evaluation_figure import plot_evaluation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fields(seed: int, noise: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Truth with squares of both classes; prediction relabels a ``noise`` fraction of pixels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(2):
        truth = np.zeros((40, 48), np.uint8)
        for _ in range(8):
            r, c = rng.integers(0, 36), rng.integers(0, 44)
            truth[r : r + 4, c : c + 4] = rng.integers(1, 3)
        pred = truth.copy()
        flip = rng.random(truth.shape) < noise
        pred[flip] = rng.integers(0, 3, int(flip.sum()))
        pairs.append((truth, pred))
    return pairs


def test_plot_evaluation_writes_png(tmp_path: Path) -> None:
    results = {
        "cip": evaluate_masks(_fields(0, 0.10)),
        "cdl": evaluate_masks(_fields(0, 0.02)),
    }
    out = plot_evaluation(results, tmp_path / "sub" / "evaluation.png")
    assert out == tmp_path / "sub" / "evaluation.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    image = mpimg.imread(out)
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_evaluation_single_method_with_absent_class(tmp_path: Path) -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[5:9, 5:9] = 1  # class 2 absent: its confusion row and metrics are nan
    out = plot_evaluation({"cdl": evaluate_masks([(truth, truth)])}, tmp_path / "one.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_evaluation_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        plot_evaluation({}, tmp_path / "x.png")
    truth = np.zeros((6, 6), np.uint8)
    a = evaluate_masks([(truth, truth)])
    b = evaluate_masks([(truth, truth)], class_names=("bg", "fg", "other"))
    with pytest.raises(ValueError, match="different classes"):
        plot_evaluation({"a": a, "b": b}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
