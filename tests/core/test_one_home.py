"""One home per concept: the class names, the confusion matrix and IoU are defined once.

Reads the source of the ``phagoflow`` package (no import) and fails when a module other than
the home defines one of them again:

* class names live in ``core/classes.py``: no other module holds a literal collection (tuple,
  list, set, dict) of two or more class names;
* the pixel confusion matrix and IoU live in ``core/evaluation/pixel.py``: no other module
  defines a function whose name says confusion or IoU (the bounding-box IoU of object matching,
  a different quantity, lives in ``core/evaluation/matching.py``), nor takes ``np.diag`` of a
  matrix (the true positives of a confusion matrix).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "phagoflow"
CLASSES_HOME = "core/classes.py"
PIXEL_HOME = "core/evaluation/pixel.py"
#: function names allowed outside the pixel home: (module, name) and why
ALLOWED_FUNCTIONS = {
    ("core/evaluation/matching.py", "_box_iou"),  # bounding-box IoU of object matching
    ("core/training.py", "_confusion"),  # a one-line call of pixel.confusion_matrix_ignoring
    ("core/training.py", "_iou"),  # a one-line call of pixel.class_iou
    ("core/evaluation/result.py", "normalized_confusion"),  # property: pixel.normalized_confusion
}
#: class names; the plural count columns ("phagophores") are table schemas, not class names
CLASS_WORDS = {"background", "phagophore", "autolysosome"}
#: modules of other owners that still list class names, each to move to phagoflow.core.classes
PENDING: dict[str, str] = {}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        out.append((rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)))
    return out


MODULES = _modules()


def _class_name_literals(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            items = [*node.keys, *node.values]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = list(node.elts)
        else:
            continue
        words = {
            i.value
            for i in items
            if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in CLASS_WORDS
        }
        if len(words) >= 2:
            lines.append(node.lineno)
    return lines


def test_the_package_is_found() -> None:
    names = {rel for rel, _ in MODULES}
    assert CLASSES_HOME in names and PIXEL_HOME in names


@pytest.mark.parametrize("rel,tree", MODULES, ids=[rel for rel, _ in MODULES])
def test_class_names_are_defined_only_in_classes(rel: str, tree: ast.Module) -> None:
    if rel == CLASSES_HOME:
        return
    if rel in PENDING:
        pytest.skip(f"pending move to phagoflow.core.classes: {PENDING[rel]}")
    lines = _class_name_literals(tree)
    assert not lines, f"{rel} lists class names at lines {lines}; use phagoflow.core.classes"


@pytest.mark.parametrize("rel,tree", MODULES, ids=[rel for rel, _ in MODULES])
def test_confusion_and_iou_are_defined_only_in_pixel(rel: str, tree: ast.Module) -> None:
    if rel == PIXEL_HOME:
        return
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = node.name.lower()
            if ("confusion" in name or "iou" in name) and (rel, node.name) not in ALLOWED_FUNCTIONS:
                found.append(f"def {node.name} (line {node.lineno})")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "diag"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "np"
        ):
            found.append(f"np.diag (line {node.lineno})")
    assert not found, f"{rel}: {found}; use phagoflow.core.evaluation.pixel"


def test_the_homes_hold_what_they_claim() -> None:
    trees = dict(MODULES)
    pixel = {n.name for n in trees[PIXEL_HOME].body if isinstance(n, ast.FunctionDef)}
    assert {"confusion_matrix", "confusion_matrix_ignoring", "class_iou"} <= pixel
    assert _class_name_literals(trees[CLASSES_HOME]) == []  # names come from the enum itself
