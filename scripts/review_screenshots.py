"""Screenshots of the review app's main views, for the docs.

Usage::

    .venv/bin/python scripts/review_screenshots.py RESULTS_DIR [--out docs/images]

RESULTS_DIR is a folder written by ``phagoflow run PLATE --out RESULTS_DIR --method all``. The
script works on a temporary copy (nothing is written into RESULTS_DIR), serves the app on a free
loopback port and drives the system Chromium headless with Playwright (the same setup as
``tests/review/test_review_browser.py``), writing:

- ``review-plate.png``       plate heat-map of CIP-vs-CDL disagreement and the well table
- ``review-field.png``       field view: CDL mask filled, CIP outlines, zoomed in
- ``review-correction.png``  correction in progress, side by side with the CIP mask
- ``review-rating.png``      a blind rating item with scores chosen
"""

from __future__ import annotations

import argparse
import math
import secrets
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from phagoflow.review.app import create_app
from phagoflow.review.browser import CHROMIUM_ARGS, chromium_path, live_server
from phagoflow.review.results import ResultsFolder
from phagoflow.review.settings import ReviewSettings


def _showcase_field(results: ResultsFolder) -> str:
    """A crowded field with a large CIP-vs-CDL disagreement (what a reviewer would open first)."""

    def key(name: str) -> float:
        summary = results.fields[name]
        objects = sum(summary.counts.get(results.methods[0], {}).values())
        d = 0.0 if math.isnan(summary.disagreement) else summary.disagreement
        return objects * (1.0 + 10.0 * d)

    return max(results.fields, key=key)


def _wait_field(pg: Any) -> None:
    pg.wait_for_function("window.review.state.edit !== null && window.review.state.base !== null")
    pg.wait_for_function("document.getElementById('status').textContent.startsWith('ready')")


def take_screenshots(results_dir: Path, out_dir: Path) -> list[Path]:
    """Serve a copy of ``results_dir`` and write the four PNGs into ``out_dir``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results"
        shutil.copytree(
            results_dir, copy, ignore=shutil.ignore_patterns("curated", "ratings", "report.html")
        )
        results = ResultsFolder(copy)
        token = secrets.token_urlsafe(16)
        app = create_app(results, ReviewSettings(token=token))
        field = _showcase_field(results)
        with live_server(app) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
            pg = browser.new_page(viewport={"width": 1440, "height": 880})
            pg.set_default_timeout(20_000)
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))

            # 1. plate heat-map
            pg.goto(f"{url}/#token={token}")
            pg.fill("#user", "reviewer")
            pg.press("#user", "Enter")
            pg.wait_for_selector("#well-table tbody tr")
            pg.wait_for_function("document.getElementById('auth-state').textContent === 'token ok'")
            written.append(out_dir / "review-plate.png")
            pg.screenshot(path=str(written[-1]))

            # 2. field view with overlays: CDL filled (edited mask), CIP outlines, zoomed in
            pg.goto(f"{url}/#/field/{field}")
            _wait_field(pg)
            pg.check("input[data-ref='cip']")
            cy, cx = results.size_yx[0] / 2, results.size_yx[1] / 2
            cx, cy = _zoom(pg, cx, cy, 2.5, panes=1)
            pg.mouse.move(*_client(pg, cx, cy))
            written.append(out_dir / "review-field.png")
            pg.screenshot(path=str(written[-1]))

            # 3. correction in progress: autolysosome strokes, side by side with the CIP mask
            pg.uncheck("input[data-ref='cip']")
            pg.check("#side-by-side")
            pg.select_option("#side-source", "cip")
            cx, cy = _zoom(pg, cx, cy, 2.5, panes=2)
            pg.keyboard.press("2")
            pg.keyboard.press("b")
            pg.keyboard.press("[")
            pg.keyboard.press("[")
            for (x0, y0), (x1, y1) in (((-30, -20), (-12, -26)), ((14, 18), (30, 12))):
                pg.mouse.move(*_client(pg, cx + x0, cy + y0))
                pg.mouse.down()
                pg.mouse.move(*_client(pg, cx + x1, cy + y1), steps=10)
                pg.mouse.up()
            written.append(out_dir / "review-correction.png")
            pg.screenshot(path=str(written[-1]))

            # 4. blind rating
            pg.goto(f"{url}/#/rate")
            pg.wait_for_selector("#rate-begin")
            pg.fill("#rater", "rater-1")
            pg.fill("#rate-n", "5")
            pg.click("#rate-begin")
            pg.wait_for_selector("#rate-item[data-ready='1']")
            pg.click(".scores[data-slot='A'] button:text-is('7')")
            pg.click(".scores[data-slot='B'] button:text-is('4')")
            written.append(out_dir / "review-rating.png")
            pg.screenshot(path=str(written[-1]))
            browser.close()
    if errors:
        raise RuntimeError(f"JavaScript errors while taking screenshots: {errors}")
    return written


def _zoom(pg: Any, cx: float, cy: float, factor: float, *, panes: int) -> tuple[float, float]:
    """Zoom the field view ``factor`` × the fit scale, centred near pixel (cx, cy).

    The centre is moved so the view stays inside the field; returns the centre used.
    """
    box = pg.evaluate(
        "(() => { const c = document.getElementById('view'); return {w: c.width, h: c.height}; })()"
    )
    h, w = pg.evaluate("[window.review.state.H, window.review.state.W]")
    pane = box["w"] / panes
    scale = factor * min(pane / w, box["h"] / h)
    half_w, half_h = pane / 2 / scale, box["h"] / 2 / scale
    cx = min(max(cx, half_w), w - half_w) if w > 2 * half_w else w / 2
    cy = min(max(cy, half_h), h - half_h) if h > 2 * half_h else h / 2
    pg.evaluate(
        f"window.review.setView({scale}, {pane / 2 - cx * scale}, {box['h'] / 2 - cy * scale})"
    )
    return cx, cy


def _client(pg: Any, x: float, y: float) -> tuple[float, float]:
    p = pg.evaluate(f"window.review.imageToClient({x}, {y})")
    return float(p["x"]), float(p["y"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results folder (phagoflow run --method all)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder")
    args = parser.parse_args(argv)
    for path in take_screenshots(args.results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
