"""The review app's blind-rating routes: sessions, the masks of their slots, and scores.

``POST /api/rating/sessions`` starts a blinded session (:class:`SessionRequest`) over the fields
where both compared sources have a mask; ``GET /api/rating/sessions/{sid}`` lists its fields and
which are rated (never which slot shows which method); ``GET …/items/{i}/masks/{slot}`` serves
the (H, W) uint8 mask of slot A or B; ``POST …/items/{i}`` stores one score per slot
(:class:`ScoresRequest`). A session belongs to its rater: with a personal token only that user
may read or rate it (403 otherwise). Sessions and scores are kept by
:mod:`phagoflow.review.rating` under the results' root; session ids are looked up there, never
turned into paths here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from phagoflow.review import rating as rating_mod
from phagoflow.review.auth import Auth, Identity
from phagoflow.review.context import Context, raw_response
from phagoflow.review.results import ReviewResults

__all__ = ["ScoresRequest", "SessionRequest", "router"]

router = APIRouter()


class SessionRequest(BaseModel):
    """Body of ``POST /api/rating/sessions``."""

    rater: str = Field(min_length=1, max_length=64)
    methods: tuple[str, str] | None = None
    n_fields: int | None = Field(default=None, ge=1, le=100_000)
    seed: int | None = None


class ScoresRequest(BaseModel):
    """Body of ``POST /api/rating/sessions/{sid}/items/{i}``: one score per slot."""

    scores: dict[str, Annotated[int, Field(ge=1, le=10)]]


def _session_or_404(
    results: ReviewResults, sid: str, identity: Identity
) -> rating_mod.RatingSession:
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


def _item_or_404(session: rating_mod.RatingSession, index: int) -> rating_mod.RatingItem:
    """Item ``index`` of ``session``; :class:`HTTPException` 404 outside the session."""
    if not 0 <= index < len(session.items):
        raise HTTPException(404, f"item {index} outside session of {len(session.items)} item(s)")
    return session.items[index]


def _session_view(results: ReviewResults, session: rating_mod.RatingSession) -> dict[str, Any]:
    """What a client may see of ``session``: its fields in order and which are rated."""
    done = {
        r["field"] for r in rating_mod.read_ratings(results.root) if r.get("session") == session.id
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


@router.post("/api/rating/sessions", status_code=201)
def new_session(body: SessionRequest, identity: Auth, ctx: Context) -> dict[str, Any]:
    """Start a blinded session over the fields where both sources have a mask."""
    results = ctx.results
    rater = ctx.user_name(identity, body.rater)
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
    return _session_view(results, session)


@router.get("/api/rating/sessions/{sid}")
def get_session(sid: str, identity: Auth, ctx: Context) -> dict[str, Any]:
    """The session's fields (in rating order) and which are rated; never the slot map."""
    return _session_view(ctx.results, _session_or_404(ctx.results, sid, identity))


@router.get("/api/rating/sessions/{sid}/items/{index}/masks/{slot}")
def rating_mask(sid: str, index: int, slot: str, identity: Auth, ctx: Context) -> Response:
    """The mask shown in ``slot`` (A or B), as raw (H, W) uint8 bytes (the rater's only)."""
    results = ctx.results
    session = _session_or_404(results, sid, identity)
    item = _item_or_404(session, index)
    if slot not in item.slots:
        raise HTTPException(404, f"slot must be one of {list(rating_mod.SLOTS)}")
    mask = results.mask(results.field_key(item.field), item.slots[slot])
    if mask is None:
        raise HTTPException(404, f"the {slot} mask of {item.field} is missing")
    return raw_response(mask)


@router.post("/api/rating/sessions/{sid}/items/{index}", status_code=201)
def rate(sid: str, index: int, body: ScoresRequest, identity: Auth, ctx: Context) -> dict[str, Any]:
    """Store one score per slot (1–10) for item ``index``; only the session's rater may."""
    results = ctx.results
    session = _session_or_404(results, sid, identity)
    _item_or_404(session, index)
    try:
        lines = rating_mod.record_scores(results.root, session, index, body.scores)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    remaining = sum(not it["rated"] for it in _session_view(results, session)["items"])
    return {"recorded": len(lines), "remaining": remaining}
