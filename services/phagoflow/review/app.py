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
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.gzip import GZipMiddleware

from phagoflow import __version__
from phagoflow.core.classes import class_table
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.wells import well_name
from phagoflow.review import rating as rating_mod
from phagoflow.review.curation import MAX_EDIT_OPERATIONS, MAX_SECONDS_EDITING, curation_summary
from phagoflow.review.masks import UploadError, decode_mask
from phagoflow.review.results import (
    ResultsError,
    ResultsFolder,
    ResultsUnavailable,
    ReviewResults,
)
from phagoflow.review.settings import ReviewSettings

__all__ = ["Identity", "create_app", "run_app", "serve"]

logger = logging.getLogger(__name__)

_EMPTY = "empty"


# ----------------------------------------------------------------------------- models
class SessionRequest(BaseModel):
    """Body of ``POST /api/rating/sessions``."""

    rater: str = Field(min_length=1, max_length=64)
    methods: tuple[str, str] | None = None
    n_fields: int | None = Field(default=None, ge=1, le=100_000)
    seed: int | None = None


class ScoresRequest(BaseModel):
    """Body of ``POST /api/rating/sessions/{sid}/items/{i}``: one score per slot."""

    scores: dict[str, Annotated[int, Field(ge=1, le=10)]]


class CurationQuery(BaseModel):
    """Query parameters of ``PUT /api/fields/{field}/curated``."""

    user: str | None = Field(default=None, max_length=64)
    started_from: str = Field(default=_EMPTY, max_length=32)
    #: Active editing time of this save in seconds (0 … 24 h), as measured by the client.
    seconds_editing: float | None = Field(
        default=None, ge=0.0, le=MAX_SECONDS_EDITING, allow_inf_nan=False
    )
    #: Edit operations of this save (strokes, fills, deletions, undo/redo).
    edit_operations: int | None = Field(default=None, ge=0, le=MAX_EDIT_OPERATIONS)


@dataclass(frozen=True)
class Identity:
    """Who made an authenticated request: a user of a personal token, or ``None`` (shared)."""

    user: str | None


# ----------------------------------------------------------------------------- helpers
def _raw(array: npt.NDArray[Any]) -> Response:
    """Raw little-endian bytes with ``X-Shape`` and ``X-Dtype`` headers."""
    arr = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return Response(
        content=arr.tobytes(),
        media_type="application/octet-stream",
        headers={
            "X-Shape": ",".join(map(str, arr.shape)),
            "X-Dtype": arr.dtype.name,
            "Cache-Control": "no-store",
        },
    )


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


class _ImageCache:
    """A few recently loaded fields (the viewer asks for contrast and pixels back to back)."""

    def __init__(self, results: ReviewResults, size: int = 4) -> None:
        self._results = results
        self._size = size
        self._items: OrderedDict[FieldKey, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()  # sync endpoints run in a thread pool

    def get(self, key: FieldKey) -> npt.NDArray[np.float32]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = self._results.image(key)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return image


@dataclass(frozen=True)
class _Tokens:
    shared: bytes
    personal: dict[str, bytes]


def _identify(tokens: _Tokens, header: str) -> Identity:
    """The identity of an ``Authorization`` header; :class:`HTTPException` 401 otherwise."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "authentication required: send 'Authorization: Bearer <token>' "
            "(printed by `phagoflow review`, or PHAGOFLOW_REVIEW_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.strip().encode()
    for user, tok in tokens.personal.items():
        if hmac.compare_digest(given, tok):
            return Identity(user)
    if hmac.compare_digest(given, tokens.shared):
        return Identity(None)
    raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


def index_html(template: Path) -> str:
    """The app's page: ``template`` with the mask classes (names, colours) filled in.

    The classes (:func:`phagoflow.core.classes.class_table`) go into the page's
    ``phagoflow-classes`` JSON script, so the JavaScript holds no copy of them; they are no plate
    data, so the page stays open like its static files.
    """
    classes = json.dumps(class_table(), separators=(",", ":")).replace("</", "<\\/")
    return template.read_text(encoding="utf-8").replace("{{ classes }}", classes)


def authenticate(request: Request) -> Identity:
    """FastAPI dependency: check ``Authorization: Bearer <token>``; 401 otherwise."""
    return _identify(request.app.state.tokens, request.headers.get("authorization", ""))


Auth = Annotated[Identity, Depends(authenticate)]


# ----------------------------------------------------------------------------- factory
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
    user_re = re.compile(settings.user_pattern)
    images = _ImageCache(results)
    app = FastAPI(
        title="phagoflow review",
        version=__version__,
        description="Review and correct CIP/CDL masks; blind rating.",
    )
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)
    app.state.results = results
    app.state.tokens = _Tokens(
        shared=settings.token.get_secret_value().encode(),
        personal={user: tok.get_secret_value().encode() for user, tok in settings.users.items()},
    )
    blind = settings.blind

    @app.middleware("http")
    async def _api_needs_token(request: Request, call_next: Any) -> Any:
        """Every /api/ request carries a valid token, reads included (one check for all)."""
        if request.url.path.startswith("/api/"):
            try:
                _identify(app.state.tokens, request.headers.get("authorization", ""))
            except HTTPException as exc:
                return JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
        return await call_next(request)

    # ------------------------------------------------------------------ dependencies

    def field_key(name: str) -> FieldKey:
        try:
            return results.field_key(name)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc

    def user_name(identity: Identity, declared: str | None) -> str:
        if identity.user is not None:
            return identity.user
        if declared is None or not user_re.fullmatch(declared):
            raise HTTPException(
                422,
                f"give your name as 'user' matching {settings.user_pattern} (got {declared!r:.40})",
            )
        return declared

    def session_or_404(sid: str, identity: Identity) -> rating_mod.RatingSession:
        """The stored session, if ``identity`` may use it (its rater; 403 otherwise)."""
        try:
            session = rating_mod.load_session(results.root, sid)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc
        mine = identity.user == session.rater if identity.user is not None else not session.personal
        if not mine:
            who = "the shared token" if identity.user is None else f"user {identity.user!r}"
            raise HTTPException(403, f"session {sid} is {session.rater!r}'s, not {who}'s")
        return session

    def not_blind(what: str) -> None:
        if blind:
            raise HTTPException(
                403, f"blind mode: {what} (masks are shown only as slots of a rating session)"
            )

    # ------------------------------------------------------------------ exception handlers
    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ResultsError)
    async def _results_error(_request: Request, exc: ResultsError) -> JSONResponse:
        status = 503 if isinstance(exc, ResultsUnavailable) else 502
        return JSONResponse({"detail": str(exc)}, status_code=status)

    # ------------------------------------------------------------------ probes
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        problem = results.problem
        if problem:
            return JSONResponse({"ready": False, "reason": problem}, status_code=503)
        return JSONResponse({"ready": True})

    # ------------------------------------------------------------------ pages
    static_dir = Path(str(resources.files("phagoflow.review") / "static"))
    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    page = index_html(static_dir / "index.html")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ plate and wells
    def progress(*, correction: bool = True) -> dict[str, Any]:
        if correction:
            provenances = results.curated_provenances()
            curated = set(provenances)
        else:
            curated = set(results.curated_names())
        by_well = {
            w: {"curated": sum(f in curated for f in info.fields), "total": len(info.fields)}
            for w, info in results.wells.items()
        }
        total = len(results.fields)
        doc: dict[str, Any] = {
            "curated": len(curated),
            "total": total,
            "fraction": len(curated) / total if total else 0.0,
            "by_well": by_well,
        }
        if correction:
            doc["correction"] = curation_summary(provenances)
        return doc

    @app.get("/api/plate")
    def plate() -> dict[str, Any]:
        """Plate geometry, mask sources and per-well counts and disagreement."""
        results.refresh()
        prog = progress(correction=False)
        return {
            "plate_id": results.plate_id,
            "rows": results.plate_rows,
            "columns": results.plate_columns,
            "size_yx": list(results.size_yx),
            "pixel_size_um": results.pixel_size_um,
            "methods": list(results.methods),
            "sources": list(results.sources),
            "blind": blind,
            "channels": ["dsred", "phluorin"],
            "wells": [
                {
                    "well": info.well,
                    "name": well_name(info.row, info.col),
                    "row": info.row,
                    "col": info.col,
                    "fields": len(info.fields),
                    "counts": {} if blind else info.counts,
                    "disagreement": {}
                    if blind
                    else {k: _nan_to_none(v) for k, v in info.disagreement.items()},
                    "disagreement_total": None if blind else _nan_to_none(info.disagreement_total),
                    "curated": prog["by_well"][info.well]["curated"],
                }
                for info in results.wells.values()
            ],
            "progress": {k: v for k, v in prog.items() if k != "by_well"},
        }

    @app.get("/api/progress")
    def get_progress() -> dict[str, Any]:
        """Fields curated / total, overall and per well, and the correction time spent."""
        return progress()

    @app.get("/api/wells/{well}/fields")
    def well_fields(well: str) -> dict[str, Any]:
        """Fields of ``well``, sorted by CIP-vs-CDL disagreement (largest first)."""
        try:
            info = results.wells[results.well_name(well)]
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc
        curated = set(results.curated_names())
        return {
            "well": info.well,
            "name": well_name(info.row, info.col),
            "fields": [
                {
                    "field": name,
                    "label": FieldKey.parse(name).label,
                    "counts": {} if blind else results.fields[name].counts,
                    "disagreement": None
                    if blind
                    else _nan_to_none(results.fields[name].disagreement),
                    "curated": name in curated,
                }
                for name in info.fields
            ],
        }

    # ------------------------------------------------------------------ fields
    @app.get("/api/fields/{name}")
    def field_info(name: str) -> dict[str, Any]:
        """Counts, available masks, default contrast per channel and curated provenance."""
        key = field_key(name)
        image = images.get(key)
        contrast = []
        for ch in image:
            lo, hi = np.percentile(ch, [0.5, 99.8])
            contrast.append(
                {
                    "low": float(lo),
                    "high": float(max(hi, lo + 1)),
                    "max": float(ch.max()),
                }
            )
        summary = results.fields[key.name]
        well = results.wells[key.well]
        return {
            "field": key.name,
            "label": key.label,
            "well": key.well,
            "well_name": well_name(key.row, key.col),
            "size_yx": list(results.size_yx),
            "counts": {} if blind else summary.counts,
            "disagreement": None if blind else _nan_to_none(summary.disagreement),
            "masks": [] if blind else [s for s in results.sources if results.has_mask(key, s)],
            "contrast": contrast,
            "provenance": None if blind else results.provenance(key),
            "well_fields": well.fields,
        }

    @app.get("/api/fields/{name}/image")
    def field_image(name: str) -> Response:
        """Raw channels: (2, H, W) uint16, [DsRed, pHluorin], clipped to 0‥65535."""
        key = field_key(name)
        image = images.get(key)
        return _raw(np.clip(np.rint(image), 0, 65535).astype(np.uint16))

    @app.get("/api/fields/{name}/masks/{source}")
    def field_mask(name: str, source: str) -> Response:
        """Raw (H, W) uint8 mask of ``source``; 404 when that mask does not exist."""
        not_blind("no mask is served by method name")
        key = field_key(name)
        if source not in results.sources:
            raise HTTPException(
                404, f"no mask source {source[:40]!r}; choose from {list(results.sources)}"
            )
        mask = results.mask(key, source)
        if mask is None:
            raise HTTPException(404, f"field {key.name} has no {source} mask")
        return _raw(mask)

    @app.put("/api/fields/{name}/curated", status_code=201)
    async def put_curated(
        name: str,
        request: Request,
        identity: Auth,
        query: Annotated[CurationQuery, Query()],
    ) -> dict[str, Any]:
        """Save a curated mask (body: ``.npy`` or TIFF) with its provenance sidecar."""
        not_blind("curation is off")
        key = field_key(name)
        who = user_name(identity, query.user)
        if query.started_from not in (*results.sources, _EMPTY):
            raise HTTPException(
                422,
                f"started_from must be one of {[*results.sources, _EMPTY]}, "
                f"got {query.started_from!r:.40}",
            )
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise UploadError(413, f"upload of {declared} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise UploadError(413, f"upload exceeds the limit of {limit} bytes")
        mask = decode_mask(
            bytes(body),
            request.headers.get("content-type", ""),
            results.size_yx,
            max_bytes=limit,
        )
        start = None if query.started_from == _EMPTY else results.mask(key, query.started_from)
        if query.started_from == _EMPTY:
            start = np.zeros(results.size_yx, np.uint8)
        doc = results.save_curated(
            key,
            mask,
            user=who,
            started_from=query.started_from,
            start_mask=start,
            seconds_editing=query.seconds_editing,
            edit_operations=query.edit_operations,
            authenticated_user=identity.user is not None,
            previous=results.provenance(key),
        )
        logger.info("curated %s by %s (%s px changed)", key.name, who, doc["pixels_changed"])
        return {"saved": True, "provenance": doc, "progress": progress()}

    @app.get("/api/auth")
    def whoami(identity: Auth) -> dict[str, Any]:
        """Check a token; returns the user of a personal token (``null`` for the shared one)."""
        return {"ok": True, "user": identity.user}

    # ------------------------------------------------------------------ rating
    def session_view(session: rating_mod.RatingSession) -> dict[str, Any]:
        done = {
            r["field"]
            for r in rating_mod.read_ratings(results.root)
            if r.get("session") == session.id
        }
        return {
            "id": session.id,
            "rater": session.rater,
            "methods": sorted(session.methods),  # which slot is which stays hidden
            "slots": list(rating_mod.SLOTS),
            "items": [
                {"index": i, "field": item.field, "rated": item.field in done}
                for i, item in enumerate(session.items)
            ],
        }

    @app.post("/api/rating/sessions", status_code=201)
    def new_session(body: SessionRequest, identity: Auth) -> dict[str, Any]:
        """Start a blinded session over the fields where both sources have a mask."""
        rater = user_name(identity, body.rater)
        methods = body.methods or tuple(results.sources[:2])
        if len(methods) != 2 or any(m not in results.sources for m in methods):
            raise HTTPException(
                422, f"methods must be two of {list(results.sources)}, got {list(methods)}"
            )
        a, b = methods
        fields = [
            name
            for name in results.fields
            if results.has_mask(results.field_key(name), a)
            and results.has_mask(results.field_key(name), b)
        ]
        try:
            session = rating_mod.create_session(
                results.root,
                rater,
                (a, b),
                fields,
                n_fields=body.n_fields,
                rng=body.seed,
                personal=identity.user is not None,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return session_view(session)

    @app.get("/api/rating/sessions/{sid}")
    def get_session(sid: str, identity: Auth) -> dict[str, Any]:
        """The session's fields (in rating order) and which are rated; never the slot map."""
        return session_view(session_or_404(sid, identity))

    def item_or_404(session: rating_mod.RatingSession, index: int) -> rating_mod.RatingItem:
        if not 0 <= index < len(session.items):
            raise HTTPException(
                404, f"item {index} outside session of {len(session.items)} item(s)"
            )
        return session.items[index]

    @app.get("/api/rating/sessions/{sid}/items/{index}/masks/{slot}")
    def rating_mask(sid: str, index: int, slot: str, identity: Auth) -> Response:
        """The mask shown in ``slot`` (A or B), as raw (H, W) uint8 bytes (the rater's only)."""
        session = session_or_404(sid, identity)
        item = item_or_404(session, index)
        if slot not in item.slots:
            raise HTTPException(404, f"slot must be one of {list(rating_mod.SLOTS)}")
        mask = results.mask(results.field_key(item.field), item.slots[slot])
        if mask is None:
            raise HTTPException(404, f"the {slot} mask of {item.field} is missing")
        return _raw(mask)

    @app.post("/api/rating/sessions/{sid}/items/{index}", status_code=201)
    def rate(sid: str, index: int, body: ScoresRequest, identity: Auth) -> dict[str, Any]:
        """Store one score per slot (1–10) for item ``index``; only the session's rater may."""
        session = session_or_404(sid, identity)
        item_or_404(session, index)
        try:
            lines = rating_mod.record_scores(results.root, session, index, body.scores)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        remaining = sum(not it["rated"] for it in session_view(session)["items"])
        return {"recorded": len(lines), "remaining": remaining}

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
