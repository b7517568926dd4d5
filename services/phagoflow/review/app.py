"""The review web app: a FastAPI application over one plate's :class:`ReviewResults`.

The results are a folder written by ``phagoflow run`` (:class:`~phagoflow.review.results.
ResultsFolder`) or one plate in the streaming stack's object store (:class:`~phagoflow.review.
store.StoreResults`); the app only uses the :class:`~phagoflow.review.results.ReviewResults`
protocol.

Every ``/api/`` endpoint needs ``Authorization: Bearer <token>`` (reads too: the masks, counts
and images are the lab's data); only the page, its static files and the probes are open.
Endpoints (all JSON unless noted; ``W`` = write)::

    GET  /                                         the page (static/index.html + the classes)
    GET  /api/plate                                plate, wells (counts, disagreement), progress
    GET  /api/progress                             fields curated / total, per well, correction time
    GET  /api/wells/{well}/fields                  fields of a well, most disagreement first
    GET  /api/fields/{field}                       counts, available masks, contrast, provenance
    GET  /api/fields/{field}/image                 raw (2, H, W) uint16 little-endian bytes
    GET  /api/fields/{field}/masks/{source}        raw (H, W) uint8 bytes (cip, cdl, curated)
    PUT  /api/fields/{field}/curated            W  body: .npy or TIFF mask; saves + provenance
    GET  /api/auth                              W  who the token belongs to (checks a token)
    POST /api/rating/sessions                   W  start a blinded session
    GET  /api/rating/sessions/{sid}                items (fields only) and which are rated
    GET  /api/rating/sessions/{sid}/items/{i}/masks/{slot}   raw uint8 mask of slot A or B
    POST /api/rating/sessions/{sid}/items/{i}   W  {"scores": {"A": 1-10, "B": 1-10}}
    GET  /healthz, /readyz                         liveness; readiness (503 + reason when not)

A rating session belongs to its rater: with a personal token only that user may read its masks
or rate it (403 otherwise). In **blind mode** (``PHAGOFLOW_REVIEW_BLIND``) masks are served only
through sessions, never by method name (403), per-method counts, disagreement and provenance are
withheld, and curation is off, so a shown mask cannot be matched to its method.

Field names, well names, mask sources, session ids and slots are looked up in fixed tables (the
catalogue, the run's methods, stored session ids); a request string never becomes a path.

This module builds the app (:func:`create_app`) and serves it (:func:`serve`, :func:`run_app`);
the routes live with their concern, one :class:`fastapi.APIRouter` each:
:mod:`~phagoflow.review.routes_pages` (page, probes), :mod:`~phagoflow.review.routes_plates`
(plate, progress, wells), :mod:`~phagoflow.review.routes_fields` (a field, its image and masks),
:mod:`~phagoflow.review.routes_curation` (saving a curated mask), :mod:`~phagoflow.review.auth`
(tokens, ``/api/auth``) and :mod:`~phagoflow.review.routes_rating` (blind rating). What they
share (the results, the settings, an image cache) is a :class:`~phagoflow.review.context.
ReviewContext` in ``app.state.review``, handed to each route as a FastAPI dependency.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from phagoflow import __version__
from phagoflow.core.classes import class_table
from phagoflow.review import (
    auth,
    routes_curation,
    routes_fields,
    routes_pages,
    routes_plates,
    routes_rating,
)
from phagoflow.review.auth import Identity, Tokens, authenticate, require_api_token
from phagoflow.review.context import ReviewContext
from phagoflow.review.masks import UploadError
from phagoflow.review.results import (
    ResultsError,
    ResultsFolder,
    ResultsUnavailable,
    ReviewResults,
)
from phagoflow.review.settings import ReviewSettings

__all__ = ["Identity", "authenticate", "create_app", "index_html", "run_app", "serve"]


def index_html(template: Path) -> str:
    """The app's page: ``template`` with the mask classes (names, colours) filled in.

    The classes (:func:`phagoflow.core.classes.class_table`) go into the page's
    ``phagoflow-classes`` JSON script, so the JavaScript holds no copy of them; they are no plate
    data, so the page stays open like its static files.
    """
    classes = json.dumps(class_table(), separators=(",", ":")).replace("</", "<\\/")
    return template.read_text(encoding="utf-8").replace("{{ classes }}", classes)


async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
    """A refused upload (:class:`~phagoflow.review.masks.UploadError`): its status and message."""
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


async def _results_error(_request: Request, exc: ResultsError) -> JSONResponse:
    """The results failed: 503 while they do not answer, 502 when they answered wrongly."""
    status = 503 if isinstance(exc, ResultsUnavailable) else 502
    return JSONResponse({"detail": str(exc)}, status_code=status)


def create_app(results: ReviewResults, settings: ReviewSettings) -> FastAPI:
    """Build the app for ``results``.

    Parameters
    ----------
    results : ReviewResults
        The opened results: a :class:`~phagoflow.review.results.ResultsFolder` or a
        :class:`~phagoflow.review.store.StoreResults`.
    settings : ReviewSettings
        Must hold a token (use :meth:`ReviewSettings.with_token`).

    Raises
    ------
    ValueError
        ``settings.token`` is unset.
    """
    if settings.token is None or not settings.token.get_secret_value():
        raise ValueError("ReviewSettings.token is unset; call settings.with_token() first")
    app = FastAPI(
        title="phagoflow review",
        version=__version__,
        description="Review and correct CIP/CDL masks; blind rating.",
    )
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)
    app.state.results = results
    app.state.tokens = Tokens.from_settings(settings)
    app.middleware("http")(require_api_token)
    app.exception_handler(UploadError)(_upload_error)
    app.exception_handler(ResultsError)(_results_error)

    static_dir = Path(str(resources.files("phagoflow.review") / "static"))
    app.state.review = ReviewContext(results, settings, index_html(static_dir / "index.html"))
    app.include_router(routes_pages.router)
    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    for router in (
        routes_plates.router,
        routes_fields.router,
        routes_curation.router,
        auth.router,
        routes_rating.router,
    ):
        app.include_router(router)
    return app


def serve(
    results_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    export: Path | None = None,
    settings: ReviewSettings | None = None,
) -> None:  # pragma: no cover - exercised by hand and through the browser test's server
    """Open ``results_dir`` and serve the app with uvicorn until interrupted."""

    results = ResultsFolder(results_dir, export=export)
    run_app(results, host=host, port=port, settings=settings)


def run_app(
    results: ReviewResults,
    *,
    host: str,
    port: int,
    settings: ReviewSettings | None = None,
    log_level: str = "info",
) -> None:  # pragma: no cover - exercised by hand and through the CLI tests' fake uvicorn
    """Serve the app for opened ``results`` with uvicorn; print the address with the token."""
    import uvicorn

    settings, generated = (settings or ReviewSettings()).with_token()
    app = create_app(results, settings)
    token = settings.token.get_secret_value() if settings.token else ""
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    print(f"phagoflow review: plate {results.plate_id}, {len(results.fields)} fields")
    print(f"  open http://{shown}:{port}/#token={token}")
    if generated:
        print("  (token generated for this run; set PHAGOFLOW_REVIEW_TOKEN to fix one)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
