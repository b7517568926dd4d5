"""Plate heat-map and the self-contained HTML report of an embedded run.

The heat-map maps **per-field means** (not totals, which would make a well with failed fields
read as low autophagy) and marks wells with failed fields (:func:`failure_marks`): outlined when
some fields failed, hatched when all did. The report opens with the run's status and a failures
summary naming the file and the reason for each failed field.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from phagoflow.core.counting import WellSummary
from phagoflow.core.opera import PlateCatalogue, load_field
from phagoflow.core.qc import well_disagreement
from phagoflow.reporting.figures import (
    MARK_ALL_FAILED,
    MARK_NONE,
    MARK_SOME_FAILED,
    plate_grid,
    plot_plate_heatmaps,
    save_overlay_png,
)

if TYPE_CHECKING:
    from phagoflow.embedded.run import RunResult

__all__ = [
    "HeatmapPanel",
    "comparable_wells",
    "failure_marks",
    "heatmap_panels",
    "write_heatmap",
    "write_report",
]

_CLASSES = (("phagophores", "Blues"), ("autolysosomes", "Reds"))


@dataclass(frozen=True)
class HeatmapPanel:
    """One heat-map panel: title, per-well values, colour map and per-well failure marks.

    ``values`` and ``marks`` are ``(plate_rows, plate_columns)`` arrays; ``marks`` holds
    :data:`~phagoflow.reporting.figures.MARK_NONE`, ``MARK_SOME_FAILED`` or
    ``MARK_ALL_FAILED`` (``None`` for panels without marks).
    """

    title: str
    values: NDArray[Any]
    cmap: str
    marks: NDArray[Any] | None = None


def failure_marks(
    wells: Sequence[WellSummary], method: str, plate_rows: int, plate_columns: int
) -> NDArray[np.int8]:
    """Per-well marks of ``method``: some fields failed, every field failed, or nothing.

    Returns
    -------
    (plate_rows, plate_columns) int8 ndarray
        ``MARK_ALL_FAILED`` where ``fields_ok == 0 < fields_failed``, ``MARK_SOME_FAILED`` where
        both are positive, ``MARK_NONE`` elsewhere (including wells not imaged).
    """
    marks = np.full((plate_rows, plate_columns), MARK_NONE, dtype=np.int8)
    for w in wells:
        if w.method != method or w.fields_failed == 0:
            continue
        if 1 <= w.row <= plate_rows and 1 <= w.col <= plate_columns:
            marks[w.row - 1, w.col - 1] = MARK_ALL_FAILED if w.fields_ok == 0 else MARK_SOME_FAILED
    return marks


def comparable_wells(wells: Sequence[WellSummary]) -> list[WellSummary]:
    """CIP and CDL rows of the wells whose totals can be compared.

    Both methods must have counted the same number of fields, at least one: a well where one
    method lost a field would otherwise read as a disagreement.
    """
    by_well: dict[tuple[str, str], dict[str, WellSummary]] = {}
    for w in wells:
        by_well.setdefault((w.plate, w.well), {})[w.method] = w
    out: list[WellSummary] = []
    for group in by_well.values():
        cip, cdl = group.get("cip"), group.get("cdl")
        if cip is not None and cdl is not None and cip.fields_ok == cdl.fields_ok > 0:
            out += [cip, cdl]
    return out


def heatmap_panels(
    catalogue: PlateCatalogue, wells: Sequence[WellSummary], methods: Sequence[str]
) -> list[HeatmapPanel]:
    """Panels of the plate heat-map: per-field mean per class and method, plus disagreement.

    When both ``cip`` and ``cdl`` ran, one more panel per class shows the per-well CIP-vs-CDL
    disagreement (:func:`phagoflow.core.qc.well_disagreement`) of the :func:`comparable_wells`.
    """
    rows, cols = catalogue.plate_rows, catalogue.plate_columns
    panels: list[HeatmapPanel] = []
    for method in methods:
        marks = failure_marks(wells, method, rows, cols)
        for attr, cmap in _CLASSES:
            values = {
                (w.row, w.col): float(getattr(w, f"{attr}_per_field_mean"))
                for w in wells
                if w.method == method
            }
            title = f"{method.upper()} {attr} per field (mean over the well's fields)"
            panels.append(HeatmapPanel(title, plate_grid(values, rows, cols), cmap, marks))
    if "cip" in methods and "cdl" in methods:
        dis = well_disagreement(comparable_wells(wells), "cip", "cdl")
        for attr, _ in _CLASSES:
            grid = plate_grid({(d.row, d.col): getattr(d, attr) for d in dis}, rows, cols)
            panels.append(
                HeatmapPanel(f"CIP vs CDL disagreement, {attr} (|Δ| / mean)", grid, "magma")
            )
    return panels


def write_heatmap(
    path: Path, catalogue: PlateCatalogue, wells: Sequence[WellSummary], methods: Sequence[str]
) -> bytes:
    """Write ``plate_heatmap.png``; returns the PNG bytes."""
    panels = heatmap_panels(catalogue, wells, methods)
    return plot_plate_heatmaps(
        [(p.title, p.values) for p in panels],
        path,
        title=f"Plate {catalogue.plate_id}",
        cmaps=[p.cmap for p in panels],
        marks=[p.marks for p in panels],
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    return html.escape(str(v))


def _pick_overlay_fields(result: RunResult, n: int) -> list[str]:
    """Fields with the most objects, at most one per well first, for the overlay gallery."""
    totals: dict[str, int] = {}
    for o in result.outcomes:
        if o.error is None and o.counts is not None:
            totals[o.name] = totals.get(o.name, 0) + o.counts.phagophores + o.counts.autolysosomes
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    chosen: list[str] = []
    seen_wells: set[str] = set()
    for name in ranked:
        if len(chosen) >= n:
            break
        if name[:6] not in seen_wells:
            chosen.append(name)
            seen_wells.add(name[:6])
    for name in ranked:
        if len(chosen) >= n:
            break
        if name not in chosen:
            chosen.append(name)
    return chosen


def _overlays(result: RunResult, n: int) -> str:
    if n == 0:
        why = "skipped: the run was interrupted" if result.interrupted else "none requested"
        return f"<p>Overlays {why}.</p>"
    cat, out = result.catalogue, result.out_dir
    by_name = {r.key.name: r for r in cat.fields}
    pictures = []
    for name in _pick_overlay_fields(result, n):
        masks = {}
        for m in result.methods:
            p = out / "masks" / m / f"{name}.tiff"
            if p.exists():
                masks[m.upper()] = tifffile.imread(p)
        image = load_field(cat, by_name[name])
        pictures.append(_img(save_overlay_png(image, masks, title=name), f"overlay {name}"))
    return "".join(pictures) or "<p>no fields processed</p>"


def _status_section(result: RunResult) -> str:
    """The run's status first: interrupted, failed fields, or all good."""
    done, total = result.fields_done, result.fields_total
    parts = []
    if result.interrupted:
        parts.append(
            f'<p class="banner interrupted"><b>Interrupted</b>: {done} of {total} fields were '
            "finished before the run was stopped; the tables and heat-map below cover those "
            "only. Run the same command again to resume: finished fields are reused.</p>"
        )
    if result.kept_methods:
        kept = ", ".join(m.upper() for m in result.kept_methods)
        parts.append(
            f"<p>{kept}: not run this time; the results of an earlier run in this folder were "
            "kept (their masks measured again).</p>"
        )
    return "".join(parts) + _failures_section(result)


def _failures_section(result: RunResult) -> str:
    if not result.failures:
        if result.interrupted:
            return "<h2>Failures</h2><p>None among the fields finished.</p>"
        return '<h2>Failures</h2><p class="ok">None: every field of every method succeeded.</p>'
    n_fields = len({f["field"] or f["path"] for f in result.failures})
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(f[k]))}</td>" for k in ("field", "method", "stage", "path")
        )
        + f"<td>{html.escape(str(f['reason']))}</td></tr>"
        for f in result.failures
    )
    return (
        f'<h2>Failures</h2><p class="banner failed"><b>{n_fields} field(s) failed</b>. Their '
        "wells are outlined on the heat-map (hatched when every field failed); the counts of "
        "those wells cover only the fields that succeeded (see fields_ok / fields_failed).</p>"
        '<table class="fail"><tr><th>field</th><th>method</th><th>stage</th><th>file</th>'
        f"<th>reason</th></tr>{rows}</table>"
    )


def _wells_table(result: RunResult) -> str:
    rows = "".join(
        f"<tr{' class=warn' if w.fields_failed else ''}>"
        + "".join(f"<td>{_fmt(w.as_row()[c])}</td>" for c in _WELL_SHOWN)
        + "</tr>"
        for w in result.wells
    )
    head = "".join(f"<th>{c}</th>" for c in _WELL_SHOWN)
    return f"<h2>Per-well counts</h2><table><tr>{head}</tr>{rows}</table>"


def write_report(path: Path, result: RunResult, *, n_overlays: int = 4) -> None:
    """Write the self-contained ``report.html`` (pictures embedded as data URIs)."""
    cat = result.catalogue
    heat = (result.out_dir / "plate_heatmap.png").read_bytes()
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>phagoflow report — plate {html.escape(cat.plate_id)}</title>
<style>{_CSS}</style></head><body>
<h1>Plate {html.escape(cat.plate_id)} <span class="status">{html.escape(result.status)}</span></h1>
{_status_section(result)}
<h2>Run</h2>
<p>Export <code>{html.escape(str(cat.root))}</code> ({html.escape(cat.format_version)}),
{cat.plate_rows} × {cat.plate_columns} plate, {len(cat.wells)} wells, {result.fields_total} fields,
pixel size {cat.pixel_size_um:.3f} µm. Methods: {", ".join(result.methods)}.
Fields counted: {result.fields_done}; failures: {len(result.failures)}; run time
{result.seconds:.1f} s. Provenance in <code>run.json</code>; each mask carries its own record.</p>
<h2>Plate heat-map</h2>{_img(heat, "plate heat-map")}
{_wells_table(result)}
{_disagreement_section(result)}
<h2>Overlays</h2>
<p>Left: DsRed (red) and pHluorin (green); then the outlines each method drew
(phagophores yellow, autolysosomes magenta).</p>
{_overlays(result, n_overlays)}
</body></html>
"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)


def _disagreement_section(result: RunResult) -> str:
    """Wells ranked by CIP-vs-CDL disagreement (worst first): a QC list of wells to review."""
    if not ("cip" in result.methods and "cdl" in result.methods):
        return ""
    dis = sorted(
        well_disagreement(comparable_wells(result.wells), "cip", "cdl"), key=lambda d: -d.total
    )
    rows = "".join(
        f"<tr><td>{d.well}</td><td>{d.phagophores:.2f}</td><td>{d.autolysosomes:.2f}</td>"
        f"<td>{d.total:.2f}</td></tr>"
        for d in dis
    )
    return (
        "<h2>CIP vs CDL disagreement per well</h2>"
        "<p>|CIP − CDL| / mean of the two per-well totals (0 = same counts, 2 = one method found "
        "nothing), for wells where both methods counted the same fields. Wells at the top "
        "deserve a look first.</p>"
        "<table><tr><th>well</th><th>phagophores</th><th>autolysosomes</th><th>mean</th></tr>"
        f"{rows}</table>"
    )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; }
img { max-width: 100%; }
.fail td { text-align: left; }
tr.warn td { background: #fff3cd; }
.banner { padding: 0.6em 1em; border-left: 6px solid; }
.banner.failed { background: #fdecea; border-color: #c62828; }
.banner.interrupted { background: #fff3cd; border-color: #ef6c00; }
.ok { color: #2e7d32; }
.status { font-size: 0.5em; padding: 0.2em 0.6em; background: #eee; border-radius: 4px; }
"""

_WELL_SHOWN = (
    "well",
    "method",
    "fields",
    "fields_ok",
    "fields_failed",
    "phagophores_per_field_mean",
    "autolysosomes_per_field_mean",
    "phagophores",
    "autolysosomes",
    "autolysosome_phagophore_ratio",
)
