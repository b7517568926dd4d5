"""The review app's curation route: save a corrected mask of a field with its provenance.

``PUT /api/fields/{name}/curated`` takes the mask as the request body (``.npy`` or TIFF, at most
:attr:`~phagoflow.review.settings.ReviewSettings.max_upload_bytes`, decoded and checked by
:func:`~phagoflow.review.masks.decode_mask`) and the provenance as query parameters
(:class:`CurationQuery`: who, which mask the edit started from, editing time and operations).
The user of a personal token is recorded whatever name the client declares. Curation is off in
blind mode (403).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from phagoflow.review.auth import Auth
from phagoflow.review.context import Context
from phagoflow.review.curation import MAX_EDIT_OPERATIONS, MAX_SECONDS_EDITING
from phagoflow.review.masks import UploadError, decode_mask
from phagoflow.review.routes_plates import progress_doc

__all__ = ["EMPTY", "CurationQuery", "router"]

logger = logging.getLogger(__name__)

#: ``started_from`` of an edit that began from an empty mask (all background).
EMPTY = "empty"

router = APIRouter()


class CurationQuery(BaseModel):
    """Query parameters of ``PUT /api/fields/{field}/curated``."""

    user: str | None = Field(default=None, max_length=64)
    started_from: str = Field(default=EMPTY, max_length=32)
    #: Active editing time of this save in seconds (0 … 24 h), as measured by the client.
    seconds_editing: float | None = Field(
        default=None, ge=0.0, le=MAX_SECONDS_EDITING, allow_inf_nan=False
    )
    #: Edit operations of this save (strokes, fills, deletions, undo/redo).
    edit_operations: int | None = Field(default=None, ge=0, le=MAX_EDIT_OPERATIONS)


async def _read_upload(request: Request, limit: int) -> bytes:
    """The request body, refused (:class:`UploadError` 413) as soon as it exceeds ``limit``.

    Parameters
    ----------
    request : Request
        The upload; a declared ``Content-Length`` over ``limit`` is refused before reading.
    limit : int
        Largest accepted body, in bytes.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"upload of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise UploadError(413, f"upload exceeds the limit of {limit} bytes")
    return bytes(body)


@router.put("/api/fields/{name}/curated", status_code=201)
async def put_curated(
    name: str,
    request: Request,
    identity: Auth,
    query: Annotated[CurationQuery, Query()],
    ctx: Context,
) -> dict[str, Any]:
    """Save a curated mask (body: ``.npy`` or TIFF) with its provenance sidecar."""
    results = ctx.results
    ctx.not_blind("curation is off")
    key = ctx.field_key(name)
    who = ctx.user_name(identity, query.user)
    if query.started_from not in (*results.sources, EMPTY):
        raise HTTPException(
            422,
            f"started_from must be one of {[*results.sources, EMPTY]}, "
            f"got {query.started_from!r:.40}",
        )
    limit = ctx.settings.max_upload_bytes
    mask = decode_mask(
        await _read_upload(request, limit),
        request.headers.get("content-type", ""),
        results.size_yx,
        max_bytes=limit,
    )
    start = None if query.started_from == EMPTY else results.mask(key, query.started_from)
    if query.started_from == EMPTY:
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
    return {"saved": True, "provenance": doc, "progress": progress_doc(results)}
