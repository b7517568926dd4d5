"""The review app's plate-level routes: the plate, the curation progress and a well's fields.

``GET /api/plate`` (geometry, mask sources, per-well counts and CIP-vs-CDL disagreement),
``GET /api/progress`` (fields curated / total, per well, and the correction time) and
``GET /api/wells/{well}/fields`` (a well's fields, most disagreement first). The progress
document is built here (:func:`progress_doc`) for these routes and for the curation save's reply.
In blind mode per-method counts and disagreement are left out.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.wells import well_name
from phagoflow.review.context import Context, nan_to_none
from phagoflow.review.curation import curation_summary
from phagoflow.review.results import ReviewResults

__all__ = ["progress_doc", "router"]

router = APIRouter()


def progress_doc(results: ReviewResults, *, correction: bool = True) -> dict[str, Any]:
    """Fields curated / total, overall and per well.

    Parameters
    ----------
    results : ReviewResults
        The plate.
    correction : bool
        Also add ``"correction"``, the correction time spent
        (:func:`~phagoflow.review.curation.curation_summary`; reads every provenance).

    Returns
    -------
    dict
        ``{"curated", "total", "fraction", "by_well": {well: {"curated", "total"}}}`` and
        ``"correction"`` when asked for.
    """
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


@router.get("/api/plate")
def plate(ctx: Context) -> dict[str, Any]:
    """Plate geometry, mask sources and per-well counts and disagreement."""
    results, blind = ctx.results, ctx.blind
    results.refresh()
    prog = progress_doc(results, correction=False)
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
                else {k: nan_to_none(v) for k, v in info.disagreement.items()},
                "disagreement_total": None if blind else nan_to_none(info.disagreement_total),
                "curated": prog["by_well"][info.well]["curated"],
            }
            for info in results.wells.values()
        ],
        "progress": {k: v for k, v in prog.items() if k != "by_well"},
    }


@router.get("/api/progress")
def get_progress(ctx: Context) -> dict[str, Any]:
    """Fields curated / total, overall and per well, and the correction time spent."""
    return progress_doc(ctx.results)


@router.get("/api/wells/{well}/fields")
def well_fields(well: str, ctx: Context) -> dict[str, Any]:
    """Fields of ``well``, sorted by CIP-vs-CDL disagreement (largest first)."""
    results, blind = ctx.results, ctx.blind
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
                "disagreement": None if blind else nan_to_none(results.fields[name].disagreement),
                "curated": name in curated,
            }
            for name in info.fields
        ],
    }
