"""The review app's open routes: the page and the liveness and readiness probes.

None of them needs a token (they hold no plate data): ``GET /`` (the page built once by
:func:`~phagoflow.review.app.index_html`), ``GET /healthz`` and ``GET /readyz`` (503 with the
reason while the results do not answer). The static files next to the page are mounted by
:func:`~phagoflow.review.app.create_app`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from phagoflow.review.context import Context

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(ctx: Context) -> JSONResponse:
    """Readiness: ``{"ready": true}``, or 503 with the reason the results are unavailable."""
    problem = ctx.results.problem
    if problem:
        return JSONResponse({"ready": False, "reason": problem}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/")
def index(ctx: Context) -> HTMLResponse:
    """The page (``static/index.html`` with the mask classes), never cached."""
    return HTMLResponse(ctx.page, headers={"Cache-Control": "no-store"})
