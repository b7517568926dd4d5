"""Plate heat-map and the self-contained HTML report of an embedded run."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tifffile
from numpy.typing import NDArray

from phagoflow.core.counting import WellSummary
from phagoflow.core.opera import PlateCatalogue, load_field
from phagoflow.core.qc import well_disagreement
from phagoflow.reporting.figures import plate_grid, plot_plate_heatmaps, save_overlay_png

if TYPE_CHECKING:
    from phagoflow.embedded.run import RunResult

__all__ = ["heatmap_panels", "write_heatmap", "write_report"]

_CLASSES = (("phagophores", "Blues"), ("autolysosomes", "Reds"))


def heatmap_panels(
    catalogue: PlateCatalogue, wells: Sequence[WellSummary], methods: Sequence[str]
) -> tuple[list[tuple[str, NDArray[Any]]], list[str]]:
    """Grids for the plate heat-map: total counts per class and method, plus disagreement.

    Returns (panels, colour maps). When both ``cip`` and ``cdl`` ran, one more panel per class
    shows the per-well CIP-vs-CDL disagreement (see
    :func:`phagoflow.core.counting.well_disagreement`).
    """
    panels: list[tuple[str, NDArray[Any]]] = []
    cmaps: list[str] = []
    for method in methods:
        for attr, cmap in _CLASSES:
            values = {(w.row, w.col): float(getattr(w, attr)) for w in wells if w.method == method}
            grid = plate_grid(values, catalogue.plate_rows, catalogue.plate_columns)
            panels.append((f"{method.upper()} {attr} per well (total over fields)", grid))
            cmaps.append(cmap)
    if "cip" in methods and "cdl" in methods:
        dis = well_disagreement(wells, "cip", "cdl")
        for attr, _ in _CLASSES:
            values = {(d.row, d.col): getattr(d, attr) for d in dis}
            grid = plate_grid(values, catalogue.plate_rows, catalogue.plate_columns)
            panels.append((f"CIP vs CDL disagreement, {attr} (|Δ| / mean)", grid))
            cmaps.append("magma")
    return panels, cmaps


def write_heatmap(
    path: Path, catalogue: PlateCatalogue, wells: Sequence[WellSummary], methods: Sequence[str]
) -> bytes:
    """Write ``plate_heatmap.png``; returns the PNG bytes."""
    panels, cmaps = heatmap_panels(catalogue, wells, methods)
    return plot_plate_heatmaps(panels, path, title=f"Plate {catalogue.plate_id}", cmaps=cmaps)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: object) -> str:
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


def write_report(path: Path, result: RunResult, *, n_overlays: int = 4) -> None:
    """Write the self-contained ``report.html`` (pictures embedded as data URIs)."""
    cat = result.catalogue
    out = result.out_dir
    heat = (out / "plate_heatmap.png").read_bytes()
    overlays = []
    by_name = {r.key.name: r for r in cat.fields}
    for name in _pick_overlay_fields(result, n_overlays):
        masks = {}
        for m in result.methods:
            p = out / "masks" / m / f"{name}.tiff"
            if p.exists():
                masks[m.upper()] = tifffile.imread(p)
        image = load_field(cat, by_name[name])
        overlays.append(_img(save_overlay_png(image, masks, title=name), f"overlay {name}"))

    n_done = len({o.name for o in result.outcomes if o.error is None})
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(getattr(w, c))}</td>" for c in _WELL_SHOWN) + "</tr>"
        for w in result.wells
    )
    fails = (
        "".join(
            f"<tr><td>{html.escape(f['field'])}</td><td>{html.escape(f['stage'])}</td>"
            f"<td>{html.escape(f['path'])}</td><td>{html.escape(str(f['reason']))}</td></tr>"
            for f in result.failures
        )
        or '<tr><td colspan="4">none</td></tr>'
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>phagoflow report — plate {html.escape(cat.plate_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
th {{ background: #f2f2f2; }}
img {{ max-width: 100%; }}
.fail td {{ text-align: left; }}
</style></head><body>
<h1>Plate {html.escape(cat.plate_id)}</h1>
<p>Export <code>{html.escape(str(cat.root))}</code> ({html.escape(cat.format_version)}),
{cat.plate_rows} × {cat.plate_columns} plate, {len(cat.wells)} wells, {len(cat.fields)} fields,
pixel size {cat.pixel_size_um:.3f} µm. Methods: {", ".join(result.methods)}.
Fields processed: {n_done}; failures: {len(result.failures)}; run time {result.seconds:.1f} s.
Provenance in <code>run.json</code>.</p>
<h2>Plate heat-map</h2>{_img(heat, "plate heat-map")}
<h2>Per-well counts</h2>
<table><tr>{"".join(f"<th>{c}</th>" for c in _WELL_SHOWN)}</tr>{rows}</table>
{_disagreement_section(result)}
<h2>Overlays</h2>
<p>Left: DsRed (red) and pHluorin (green); then the outlines each method drew
(phagophores yellow, autolysosomes magenta).</p>
{"".join(overlays) or "<p>no fields processed</p>"}
<h2>Failures</h2>
<table class="fail"><tr><th>field</th><th>stage</th><th>file</th><th>reason</th></tr>{fails}</table>
</body></html>
"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)


def _disagreement_section(result: RunResult) -> str:
    """Wells ranked by CIP-vs-CDL disagreement (worst first): a QC list of wells to review."""
    if not ("cip" in result.methods and "cdl" in result.methods):
        return ""
    dis = sorted(well_disagreement(result.wells, "cip", "cdl"), key=lambda d: -d.total)
    rows = "".join(
        f"<tr><td>{d.well}</td><td>{d.phagophores:.2f}</td><td>{d.autolysosomes:.2f}</td>"
        f"<td>{d.total:.2f}</td></tr>"
        for d in dis
    )
    return (
        "<h2>CIP vs CDL disagreement per well</h2>"
        "<p>|CIP − CDL| / mean of the two per-well totals (0 = same counts, 2 = one method found "
        "nothing). Wells at the top deserve a look first.</p>"
        "<table><tr><th>well</th><th>phagophores</th><th>autolysosomes</th><th>mean</th></tr>"
        f"{rows}</table>"
    )


_WELL_SHOWN = (
    "well",
    "method",
    "fields",
    "phagophores",
    "autolysosomes",
    "phagophores_per_field_mean",
    "autolysosomes_per_field_mean",
    "autolysosome_phagophore_ratio",
)
