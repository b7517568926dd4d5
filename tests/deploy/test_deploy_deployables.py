"""One folder per deployable under services/, and the images and the chart run its entry point."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import phagoflow.services as services
from phagoflow.services import SERVICES, build_service, serve_service

ROOT = Path(__file__).resolve().parents[2]
DEPLOYABLES = (*SERVICES, "trainer")


def test_services_names_every_long_running_deployable() -> None:
    assert set(SERVICES) == {"ingest", "cip", "inference", "metrics", "review"}


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_deployable_folder(name: str) -> None:
    folder = ROOT / "services" / name
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == [
        "README.md",
        "main.py",
    ]
    readme = (folder / "README.md").read_text()
    for needle in ("entry point", "image target", "consumes", "produces", "port", "Metrics"):
        assert needle in readme, f"services/{name}/README.md says nothing about {needle}"
    assert not (folder / "__init__.py").exists()  # not a package: only phagoflow is installed
    if name in SERVICES:
        assert f'main("{name}")' in (folder / "main.py").read_text()


def test_images_and_chart_run_the_entry_points() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    for name in SERVICES:
        assert f"COPY services/{name}/ /opt/phagoflow/services/{name}/" in dockerfile
        target = re.search(rf"FROM base AS {name}\n(.*?)(?:\n\n|$)", dockerfile, re.S)
        assert target is not None, f"no image target {name}"
        assert f"/opt/phagoflow/services/{name}/main.py" in target.group(1)
    assert "COPY services/trainer/" in (ROOT / "deploy/docker/Dockerfile.train").read_text()
    helpers = (ROOT / "deploy/helm/phagoflow/templates/_helpers.tpl").read_text()
    assert "/opt/phagoflow/services/%s/main.py" in helpers
    templates = ROOT / "deploy/helm/phagoflow/templates"
    for tpl in ("_deployment.tpl", "review.yaml"):
        assert 'include "phagoflow.entrypoint"' in (templates / tpl).read_text()


def test_review_is_served_not_built() -> None:
    with pytest.raises(ValueError, match="serve_service"):
        build_service("review")
    with pytest.raises(ValueError, match="unknown service"):
        serve_service("nope")


def test_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_kafka(name: str) -> None:
        raise ModuleNotFoundError("No module named 'kafka'", name="kafka")

    monkeypatch.setattr(importlib, "import_module", no_kafka)
    assert serve_service("cip") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'phagoflow[stream]'" in err
    with pytest.raises(services.MissingExtra, match=r"phagoflow\[stream,review\]"):
        services._import("review", SERVICES["review"])


def test_no_long_functions_in_services() -> None:
    """No function of services/phagoflow/services/ is longer than 60 lines (issue 11)."""
    long = []
    for path in sorted((ROOT / "services/phagoflow/services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
