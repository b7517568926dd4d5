"""Fixtures for the review app: a tiny simulated plate and a writable results folder."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_helpers import SIZE_YX, TOKEN, auth, build_results

from phagoflow.core.simulate import SimulationParameters, simulate_plate


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(export root, truth folder, plate id) of a 2-well × 2-field plate of 96 × 128 px."""
    plate = simulate_plate(
        tmp_path_factory.mktemp("plate"),
        wells=2,
        fields=2,
        seed=5,
        params=SimulationParameters(size_yx=SIZE_YX),
    )
    return plate.export_dir, plate.truth_dir, plate.plate_id


@pytest.fixture(scope="session")
def results_template(
    simulated: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A pristine results folder (do not write into it; use ``results_dir``)."""
    export, truth, plate_id = simulated
    return build_results(export, truth, plate_id, tmp_path_factory.mktemp("r") / "results")


@pytest.fixture
def results_dir(results_template: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh, writable copy of the results folder."""
    out = tmp_path / "results"
    shutil.copytree(results_template, out)
    yield out


@pytest.fixture
def client(results_dir: Path):  # type: ignore[no-untyped-def]
    """A TestClient on the app for ``results_dir``; it sends the shared :data:`TOKEN` by
    default (every /api/ read needs it); pass ``headers=ANON`` for an anonymous request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette: "use httpx2" deprecation
        from fastapi.testclient import TestClient

    from phagoflow.review.app import create_app
    from phagoflow.review.results import ResultsFolder
    from phagoflow.review.settings import ReviewSettings

    app = create_app(
        ResultsFolder(results_dir),
        ReviewSettings(token=TOKEN, users={"ana": "ana-personal-token"}, max_upload_bytes=65536),
    )
    with TestClient(app, headers=auth()) as c:
        yield c
