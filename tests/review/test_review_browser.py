"""A real headless Chromium session (Playwright for Python) against a live review server.

Opens the plate, clicks a well on the heat-map, opens its most disagreeing field, paints a stroke
of class autolysosome with the brush, paints a second stroke and undoes it, saves, and checks the
stored curated mask differs from the CDL mask it started from exactly along the first stroke.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package;
never ``playwright install``. Without them the test skips, except under ``CI`` where it fails.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from review_helpers import TOKEN

from ci_tools import require
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.review.browser import CHROMIUM_ARGS, chromium_path, live_server

CHROMIUM = chromium_path()


def _require_browser() -> None:
    problems = []
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        problems.append(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Python package playwright is not installed (pip install playwright)")
    require("browser test cannot run: " + "; ".join(problems) if problems else None)


@pytest.fixture
def server(results_dir: Path) -> Iterator[str]:
    """A live uvicorn server on a free loopback port; yields its base URL."""
    _require_browser()
    from phagoflow.review.app import create_app
    from phagoflow.review.results import ResultsFolder
    from phagoflow.review.settings import ReviewSettings

    app = create_app(ResultsFolder(results_dir), ReviewSettings(token=TOKEN))
    with live_server(app) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[object]:
    """A Chromium page; JavaScript errors fail the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        pg = browser.new_page(viewport={"width": 1280, "height": 800})
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.set_default_timeout(15_000)
        yield pg
        browser.close()
    assert not errors, f"JavaScript errors: {errors}"


def _band(shape: tuple[int, int], a: tuple[int, int], b: tuple[int, int], r: float) -> np.ndarray:
    """Pixels whose centre lies within ``r`` of the segment a → b (x, y in pixels)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    p = np.stack([xx, yy], -1).astype(float)
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    d = b_ - a_
    t = np.clip(((p - a_) @ d) / (d @ d), 0, 1)
    dist = np.linalg.norm(p - (a_ + t[..., None] * d), axis=-1)
    return np.asarray(dist <= r)


def _stroke(pg, a: tuple[int, int], b: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    start = pg.evaluate(f"window.review.imageToClient({a[0]}, {a[1]})")
    end = pg.evaluate(f"window.review.imageToClient({b[0]}, {b[1]})")
    pg.mouse.move(start["x"], start["y"])
    pg.mouse.down()
    pg.mouse.move(end["x"], end["y"], steps=12)
    pg.mouse.up()


def test_paint_stroke_and_save_changes_mask_exactly_there(page, server: str, results_dir: Path):  # type: ignore[no-untyped-def]
    pg = page
    pg.goto(f"{server}/#token={TOKEN}")
    assert "token=" not in pg.url  # the token leaves the address bar
    pg.fill("#user", "browser-bot")
    pg.press("#user", "Enter")
    pg.wait_for_selector("#well-table tbody tr")
    assert pg.text_content("#progress-text") == "curated 0 / 4"

    # plate heat-map → well r02c03
    centre = pg.evaluate("window.review.wellCenter('r02c03')")
    pg.mouse.click(centre["x"], centre["y"])
    pg.wait_for_function("location.hash === '#/well/r02c03'")
    pg.wait_for_selector("#field-table tbody tr")
    # most disagreeing field first
    field = pg.get_attribute("#field-table tbody tr >> nth=0", "data-field")
    pg.click("#field-table tbody tr >> nth=0")
    pg.wait_for_function("window.review.state.edit !== null && window.review.state.base !== null")
    assert pg.text_content("#field-title") == FieldKey.parse(field).label  # "B03 field 2"
    assert pg.text_content("#back-well") == "← B03"
    assert pg.input_value("#start-from") == "cdl"

    # class autolysosome, brush of 3 px
    pg.keyboard.press("2")
    pg.keyboard.press("b")
    pg.keyboard.press("[")
    pg.keyboard.press("[")
    assert pg.text_content("#brush-size-text") == "3"
    a, b = (20, 30), (70, 55)
    _stroke(pg, a, b)
    # a second stroke, undone
    _stroke(pg, (100, 10), (120, 20))
    pg.keyboard.press("Control+z")
    pg.click("#save")
    pg.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
    assert pg.text_content("#progress-text") == "curated 1 / 4"

    start = tifffile.imread(results_dir / "masks" / "cdl" / f"{field}.tiff")
    curated = tifffile.imread(results_dir / "curated" / f"{field}.tiff")
    changed = curated != start
    inner = _band(start.shape, a, b, 1.0)  # certainly painted
    outer = _band(start.shape, a, b, 1.5 + 1.5)  # brush radius 1.5 + mouse rounding
    assert changed.any()
    assert (curated[inner] == 2).all(), "the stroke was not painted as autolysosome"
    assert not changed[~outer].any(), (
        f"pixels changed outside the stroke: {np.argwhere(changed & ~outer)[:5].tolist()}"
    )
    assert (curated[changed] == 2).all()
    np.testing.assert_array_equal(curated[~outer], start[~outer])
    prov = json.loads((results_dir / "curated" / f"{field}.json").read_text())
    assert prov["user"] == "browser-bot"
    assert prov["started_from"] == "cdl"
    assert prov["pixels_changed"] == int(changed.sum())
    # correction time: the gaps between field open, strokes, undo and save (a few seconds here)
    assert 0 < prov["seconds_editing"] < 120
    assert prov["edit_operations"] == 3  # two strokes and one undo


def test_outline_fill_delete_eraser_undo_redo(page, server: str, results_dir: Path):  # type: ignore[no-untyped-def]
    pg = page
    field = "r02c02f02p01"
    pg.goto(f"{server}/#token={TOKEN}")
    pg.fill("#user", "browser-bot")
    pg.press("#user", "Enter")
    pg.goto(f"{server}/#/field/{field}")
    pg.wait_for_function("window.review.state.edit !== null && window.review.state.base !== null")
    pg.select_option("#start-from", "empty")
    pg.click("#load-start")
    # fill on open background is refused
    pg.keyboard.press("f")
    corner = pg.evaluate("window.review.imageToClient(5, 5)")
    pg.mouse.click(corner["x"], corner["y"])
    assert "touches the field edge" in (pg.text_content("#status") or "")
    # closed square outline of phagophore, 1 px brush
    pg.keyboard.press("b")
    pg.keyboard.press("1")
    for _ in range(4):
        pg.keyboard.press("[")
    assert pg.text_content("#brush-size-text") == "1"
    corners = [(30, 30), (60, 30), (60, 60), (30, 60), (30, 30)]
    pts = [pg.evaluate(f"window.review.imageToClient({x}, {y})") for x, y in corners]
    pg.mouse.move(pts[0]["x"], pts[0]["y"])
    pg.mouse.down()
    for p in pts[1:]:
        pg.mouse.move(p["x"], p["y"], steps=15)
    pg.mouse.up()
    # fill the inside with autolysosome, then delete the outline object with one click
    pg.keyboard.press("2")
    pg.keyboard.press("f")
    inside = pg.evaluate("window.review.imageToClient(45, 45)")
    pg.mouse.click(inside["x"], inside["y"])
    pg.keyboard.press("d")
    edge = pg.evaluate("window.review.imageToClient(45, 30)")
    pg.mouse.click(edge["x"], edge["y"])
    assert "deleted an object" in (pg.text_content("#status") or "")
    pg.keyboard.press("Control+z")  # outline back
    pg.keyboard.press("Control+Shift+Z")  # and gone again
    # erase a horizontal line through the middle
    pg.keyboard.press("e")
    a, b = (pg.evaluate(f"window.review.imageToClient({x}, 45)") for x in (35, 55))
    pg.mouse.move(a["x"], a["y"])
    pg.mouse.down()
    pg.mouse.move(b["x"], b["y"], steps=10)
    pg.mouse.up()
    pg.keyboard.press("Control+s")
    pg.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")

    curated = tifffile.imread(results_dir / "curated" / f"{field}.tiff")
    assert not (curated == 1).any(), "the deleted outline came back"
    assert (curated[32:44, 32:59] == 2).all() and (curated[47:59, 32:59] == 2).all()
    assert (curated[45, 36:55] == 0).all(), "the eraser stroke is missing"
    assert not curated[:29].any() and not curated[62:].any()
    prov = json.loads((results_dir / "curated" / f"{field}.json").read_text())
    assert prov["started_from"] == "empty"
    assert prov["pixels_changed"] == int((curated != 0).sum())


def test_blind_rating_session_in_the_browser(page, server: str, results_dir: Path):  # type: ignore[no-untyped-def]
    pg = page
    pg.goto(f"{server}/#token={TOKEN}")
    pg.wait_for_selector("#well-table tbody tr")
    pg.click("header nav a:text-is('Blind rating')")
    pg.wait_for_selector("#rate-begin")
    pg.fill("#rater", "rita")
    pg.fill("#rate-n", "2")
    pg.click("#rate-begin")
    seen = []
    for a, b in ((9, 2), (8, 3)):
        pg.wait_for_selector("#rate-item[data-ready='1']")
        seen.append(pg.text_content("#rate-title"))
        assert pg.is_disabled("#rate-submit")
        pg.click(f".scores[data-slot='A'] button:text-is('{a}')")
        assert pg.is_disabled("#rate-submit")  # both slots need a score
        pg.click(f".scores[data-slot='B'] button:text-is('{b}')")
        pg.click("#rate-submit")
        pg.wait_for_function(
            "!document.getElementById('rate-done').hidden || "
            "(document.getElementById('rate-item').dataset.ready === '1' && "
            f"document.getElementById('rate-title').textContent !== {seen[-1]!r})"
        )
    assert len(set(seen)) == 2
    pg.wait_for_selector("#rate-done:not([hidden])")
    lines = [
        json.loads(x) for x in (results_dir / "ratings" / "rita.jsonl").read_text().splitlines()
    ]
    assert sorted((ln["slot"], ln["score"]) for ln in lines) == [
        ("A", 8),
        ("A", 9),
        ("B", 2),
        ("B", 3),
    ]
    assert {ln["method"] for ln in lines} == {"cip", "cdl"}
    assert len({ln["field"] for ln in lines}) == 2
