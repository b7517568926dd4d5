"""The review app's routes of one field: its summary, its raw channels and its masks by source.

``GET /api/fields/{name}`` (counts, available masks, default contrast per channel, curated
provenance), ``GET /api/fields/{name}/image`` ((2, H, W) uint16 bytes) and
``GET /api/fields/{name}/masks/{source}`` ((H, W) uint8 bytes; 403 in blind mode, where masks
are shown only as rating-session slots). Field names and sources are looked up in the
catalogue and the run's sources; a request string never becomes a path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from phagoflow.core.wells import well_name
from phagoflow.review.context import Context, nan_to_none, raw_response

__all__ = ["router"]

router = APIRouter()


@router.get("/api/fields/{name}")
def field_info(name: str, ctx: Context) -> dict[str, Any]:
    """Counts, available masks, default contrast per channel and curated provenance."""
    results, blind = ctx.results, ctx.blind
    key = ctx.field_key(name)
    image = ctx.images.get(key)
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
        "disagreement": None if blind else nan_to_none(summary.disagreement),
        "masks": [] if blind else [s for s in results.sources if results.has_mask(key, s)],
        "contrast": contrast,
        "provenance": None if blind else results.provenance(key),
        "well_fields": well.fields,
    }


@router.get("/api/fields/{name}/image")
def field_image(name: str, ctx: Context) -> Response:
    """Raw channels: (2, H, W) uint16, [DsRed, pHluorin], clipped to 0‥65535."""
    key = ctx.field_key(name)
    image = ctx.images.get(key)
    return raw_response(np.clip(np.rint(image), 0, 65535).astype(np.uint16))


@router.get("/api/fields/{name}/masks/{source}")
def field_mask(name: str, source: str, ctx: Context) -> Response:
    """Raw (H, W) uint8 mask of ``source``; 404 when that mask does not exist."""
    results = ctx.results
    ctx.not_blind("no mask is served by method name")
    key = ctx.field_key(name)
    if source not in results.sources:
        raise HTTPException(
            404, f"no mask source {source[:40]!r}; choose from {list(results.sources)}"
        )
    mask = results.mask(key, source)
    if mask is None:
        raise HTTPException(404, f"field {key.name} has no {source} mask")
    return raw_response(mask)
