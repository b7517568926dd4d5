"""docs/streaming.md's fault table names tests; each must exist (so the table cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _fault_table() -> list[str]:
    text = (ROOT / "docs" / "streaming.md").read_text()
    start = text.index("| fault | behaviour | test |")
    rows = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows[2:]  # past the header and its rule


def test_every_fault_row_names_tests_that_exist() -> None:
    rows = _fault_table()
    assert len(rows) >= 10
    named = 0
    for row in rows:
        test_cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        nodes = NODE.findall(test_cell)
        if not nodes:
            assert test_cell.startswith("no test"), f"row names no test node id: {row[:80]}"
        for path, name in nodes:
            source = ROOT / path
            assert source.is_file(), f"{path} (named in docs/streaming.md) does not exist"
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{path}::{name}"
            named += 1
    assert named >= len(rows) - 1
