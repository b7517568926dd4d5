"""Plate heat-map and the self-contained HTML report of an embedded run, built for checking.

What a biologist checks comes first: the run's status and its failures (file and reason for each
failed field), then — with a plate map — the plate's quality (Z′ per method and readout) and the
hit list. Then the heat-maps: **per-field means** (not totals, which would make a well with failed
fields read as low autophagy), per-cell or per-area readouts and the autolysosome/phagophore
ratio, one colour scale per readout shared by the methods (equal colours, equal values), a unit
on every colour bar, wells with failed fields marked (:func:`failure_marks`: outlined when some
fields failed, hatched when all did). Wells are named ``A01`` everywhere (files keep ``rRRcCC``),
headings and columns are words. Last come crops at full resolution around the most doubtful
objects (:mod:`phagoflow.embedded.crops`), with a scale bar and the reason each was chosen.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from phagoflow.core.classes import OBJECT_CLASSES
from phagoflow.core.counting import READOUTS, WellSummary, readout_label
from phagoflow.core.opera import PlateCatalogue, load_field
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.qc import well_disagreement
from phagoflow.core.screening import PlateStatistics
from phagoflow.core.wells import to_display, well_name
from phagoflow.embedded.crops import CROP_PX, Doubt, pick_doubts
from phagoflow.embedded.masks import mask_path, read_mask
from phagoflow.reporting.figures import (
    MARK_ALL_FAILED,
    MARK_NONE,
    MARK_SOME_FAILED,
    PlatePanel,
    outlined_crop,
    plate_grid,
    plot_plate_heatmaps,
    save_crop_png,
)

if TYPE_CHECKING:
    from phagoflow.embedded.run import RunResult
    from phagoflow.embedded.screen import Screen

__all__ = [
    "HeatmapPanel",
    "comparable_wells",
    "failure_marks",
    "field_label",
    "heatmap_panels",
    "write_heatmap",
    "write_report",
]

#: A heat-map panel (kept under its old name; see :class:`~phagoflow.reporting.figures.PlatePanel`).
HeatmapPanel = PlatePanel

#: Colour map per readout family: each class's own (phagophores blue, autolysosomes red), the
#: autolysosome/phagophore ratio purple.
_CMAPS = {c.plural: c.style.heatmap_cmap for c in OBJECT_CLASSES} | {"autolysosome": "Purples"}
_DISAGREEMENT_UNIT = "|CIP − CDL| / mean (0 to 2)"
#: Display pixels per field pixel in the crops.
_ZOOM = 4


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


def _heatmap_readouts(wells: Sequence[WellSummary], readouts: Sequence[str] | None) -> list[str]:
    """Per-field means, then per cell (else per 1,000 µm²), then the ratio — of ``readouts``
    (default: those with a value in some well)."""
    if readouts is None:
        readouts = [r for r in READOUTS if any(math.isfinite(w.readout(r)) for w in wells)]
    rows = ["phagophores_per_field_mean", "autolysosomes_per_field_mean"]
    for norm in ("per_cell", "per_1000um2"):
        pair = [f"phagophores_{norm}", f"autolysosomes_{norm}"]
        if all(p in readouts for p in pair):
            rows += pair
            break
    return [r for r in [*rows, "autolysosome_phagophore_ratio"] if r in readouts]


def heatmap_panels(
    catalogue: PlateCatalogue,
    wells: Sequence[WellSummary],
    methods: Sequence[str],
    *,
    readouts: Sequence[str] | None = None,
) -> list[PlatePanel | None]:
    """Panels of the plate heat-map: one row per readout, one column per method.

    Readouts are the per-field means, the per-cell (or per-area) readouts and the ratio
    (:func:`_heatmap_readouts`); the panels of one readout share one colour scale. When both
    ``cip`` and ``cdl`` ran, a last column shows, in the per-field rows, the per-well CIP-vs-CDL
    disagreement (:func:`phagoflow.core.qc.well_disagreement`) of the
    :func:`comparable_wells`; ``None`` fills the other rows' slot in that column.
    """
    rows, cols = catalogue.plate_rows, catalogue.plate_columns
    both = "cip" in methods and "cdl" in methods
    dis = well_disagreement(comparable_wells(wells), "cip", "cdl") if both else []
    dis_grids = {
        attr: plate_grid({(d.row, d.col): getattr(d, attr) for d in dis}, rows, cols)
        for attr in ("phagophores", "autolysosomes")
    }
    dis_top = max(
        (float(np.nanmax(g)) for g in dis_grids.values() if np.isfinite(g).any()), default=1.0
    )
    panels: list[PlatePanel | None] = []
    for readout in _heatmap_readouts(wells, readouts):
        info = READOUTS[readout]
        grids = {
            m: plate_grid(
                {(w.row, w.col): w.readout(readout) for w in wells if w.method == m}, rows, cols
            )
            for m in methods
        }
        finite = [g[np.isfinite(g)] for g in grids.values()]
        top = max((float(f.max()) for f in finite if f.size), default=1.0)
        for m in methods:
            panels.append(
                PlatePanel(
                    f"{m.upper()} — {info.label}",
                    grids[m],
                    cmap=_CMAPS[readout.split("_")[0]],
                    unit=info.unit,
                    vmax=top,
                    marks=failure_marks(wells, m, rows, cols),
                )
            )
        if both:
            attr = readout.split("_")[0]
            panels.append(
                PlatePanel(
                    f"CIP vs CDL disagreement — {attr}",
                    dis_grids[attr],
                    cmap="magma",
                    unit=_DISAGREEMENT_UNIT,
                    vmax=dis_top,
                )
                if readout.endswith("_per_field_mean")
                else None
            )
    return panels


def write_heatmap(
    path: Path,
    catalogue: PlateCatalogue,
    wells: Sequence[WellSummary],
    methods: Sequence[str],
    *,
    readouts: Sequence[str] | None = None,
) -> bytes:
    """Write ``plate_heatmap.png``; returns the PNG bytes."""
    panels = heatmap_panels(catalogue, wells, methods, readouts=readouts)
    both = "cip" in methods and "cdl" in methods
    return plot_plate_heatmaps(
        panels,
        path,
        title=f"Plate {catalogue.plate_id} — one colour scale per readout, shared by the methods",
        ncols=len(methods) + both if len(methods) + both > 1 else 2,
    )


# --------------------------------------------------------------------------- html helpers
def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: object) -> str:
    """A table cell: integers as they are, other numbers to about three figures with thousands
    separators and never in exponent form; NaN and ``None`` blank."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        size = abs(v)
        digits = 0 if size >= 100 or v.is_integer() else 1 if size >= 10 else 2
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def field_label(name: str) -> str:
    """A field name ``rRRcCCfFFpPP`` for people, HTML-escaped: ``"B02 field 1"``
    (:attr:`FieldKey.label`); a name that is not a field name is shown as it is."""
    try:
        return html.escape(FieldKey.parse(name).label)
    except ValueError:
        return html.escape(name)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attr}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- sections
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
    rows = [
        [
            field_label(f["field"]) if f["field"] else "",
            html.escape(f["method"].upper()),
            html.escape(f["stage"]),
            html.escape(str(f["path"])),
            html.escape(str(f["reason"])),
        ]
        for f in result.failures
    ]
    return (
        f'<h2>Failures</h2><p class="banner failed"><b>{n_fields} field(s) failed</b>. Their '
        "wells are outlined on the heat-maps (hatched when every field failed); the numbers of "
        "those wells cover only the fields that succeeded (see <i>Fields counted</i> and "
        "<i>Fields failed</i>).</p>"
        + _table(["Field", "Method", "Stage", "File", "Reason"], rows, "fail")
    )


def _z_prime_cell(s: PlateStatistics | None) -> str:
    if s is None or not math.isfinite(s.z_prime):
        return '<span class="na">—</span>'
    cls = "good" if s.z_prime_acceptable else "bad"
    return f'<span class="{cls}">{s.z_prime:.2f}</span>'


def _screen_section(result: RunResult) -> str:
    """Z′ per method and readout, the hits of the hit readout and where they are."""
    screen = result.screen
    if screen is None:
        return (
            "<h2>Plate quality and hits</h2><p>No plate map was given "
            "(<code>--plate-map FILE.csv</code>), so there is no Z′ and no hit list.</p>"
        )
    p = screen.params
    methods = [m for m in result.methods if screen.of(m) is not None]
    rows = []
    for readout in screen.readouts:
        label = html.escape(readout_label(readout))
        if readout == screen.hit_readout:
            label = f"<b>{label}</b> (calls the hits)"
        rows.append([label, *(_z_prime_cell(screen.of(m, readout)) for m in methods)])
    counts = screen.plate_map.counts()
    intro = (
        f"<p>Plate map <code>{html.escape(screen.plate_map.source)}</code>: "
        f"{counts[_role('negative')]} negative and {counts[_role('positive')]} positive control "
        f"wells, {counts[_role('sample')]} samples. Z′ = 1 − 3 (σ₊ + σ₋) / |μ₊ − μ₋| over the "
        f"control wells; ≥ {p.z_prime_acceptable:g} (green) is a usable screen, below it (red) "
        "the controls overlap too much to call hits with confidence. A negative Z′ only says "
        "that the controls do not separate on that readout, as expected of a readout the "
        "positive control does not act on; what matters is the Z′ of the readout that calls "
        "the hits.</p>"
    )
    table = _table(["Readout", *(f"Z′ {m.upper()}" for m in methods)], rows, "stats")
    return "<h2>Plate quality and hits</h2>" + intro + table + _hits_part(result, screen)


def _role(name: str) -> Any:
    from phagoflow.core.platemap import Role

    return Role(name)


def _hits_part(result: RunResult, screen: Screen) -> str:
    p = screen.params
    side = {"up": f"≥ {p.hit_z:g}", "down": f"≤ −{p.hit_z:g}", "both": f"|z| ≥ {p.hit_z:g}"}
    unit = READOUTS[screen.hit_readout].unit
    rule = (
        f"<p>A <b>hit</b> is a sample well whose robust z of <i>"
        f"{html.escape(readout_label(screen.hit_readout))}</i> is {side[p.hit_direction]}: "
        "z = (value − median of the samples) / (1.4826 · their median absolute deviation). "
        "Percent of control = 100 · value / mean of the negative controls.</p>"
    )
    rows = []
    for s in screen.hit_statistics:
        for w in s.hits:
            conc = "" if w.concentration is None else f"{w.concentration:g} {w.unit or ''}"
            rows.append(
                [
                    s.method.upper(),
                    w.well,
                    html.escape(w.compound),
                    html.escape(w.condition),
                    html.escape(conc),
                    f"{w.value:.3g}",
                    f"{w.robust_z:.1f}",
                    f"{w.percent_of_control:.0f} %",
                ]
            )
    head = [
        "Method",
        "Well",
        "Compound",
        "Condition",
        "Concentration",
        f"{html.escape(readout_label(screen.hit_readout))} ({html.escape(unit)})",
        "Robust z",
        "% of control",
    ]
    hits = _table(head, rows, "hits") if rows else '<p class="ok">No hits.</p>'
    return rule + hits + _img(_hits_png(result, screen), "robust z on the plate, hits ringed")


def _hits_png(result: RunResult, screen: Screen) -> bytes:
    cat = result.catalogue
    grids = [
        plate_grid({(w.row, w.col): w.robust_z for w in s.wells}, cat.plate_rows, cat.plate_columns)
        for s in screen.hit_statistics
    ]
    # one colour scale for all methods (equal colours, equal z), at least ±3 (the hit line)
    top = max((float(np.nanmax(np.abs(z))) for z in grids if np.isfinite(z).any()), default=1.0)
    panels: list[PlatePanel | None] = []
    for s, z in zip(screen.hit_statistics, grids, strict=True):
        hits = np.isfinite(
            plate_grid({(w.row, w.col): 1.0 for w in s.hits}, cat.plate_rows, cat.plate_columns)
        )
        panels.append(
            PlatePanel(
                f"{s.method.upper()} — robust z of {readout_label(s.readout).lower()}",
                z,
                cmap="RdBu_r",
                unit="robust z (samples' median = 0)",
                vmax=max(top, 3.0),
                marks=failure_marks(result.wells, s.method, cat.plate_rows, cat.plate_columns),
                rings=hits,
                centred=True,
            )
        )
    controls = ", ".join(
        f"{role}: " + " ".join(well_name(*w) for w in screen.plate_map.wells(_role(role)))
        for role in ("negative", "positive")
    )
    return plot_plate_heatmaps(panels, ncols=2, legend=f"ringed: hits;  controls — {controls}")


def _run_section(result: RunResult) -> str:
    cat = result.catalogue
    nuclear = cat.nuclear_channel
    cells = (
        f"Cells: nuclei from <i>{html.escape(nuclear.name)}</i>, cytoplasm from the Rosella signal."
        if nuclear is not None
        else "Cells: no nuclear stain, so readouts are per 1,000 µm² of cytoplasm (from the "
        "Rosella signal)."
    )
    if not any(r.endswith("_1000um2") for r in result.readouts):
        cells = "Cell readouts were not measured (PHAGOFLOW_CELL_READOUTS=false)."
    return (
        f"<h2>Run</h2><p>Export <code>{html.escape(str(cat.root))}</code> "
        f"({html.escape(cat.format_version)}), {cat.plate_rows} × {cat.plate_columns} plate, "
        f"{len(cat.wells)} wells, {result.fields_total} fields, pixel size "
        f"{cat.pixel_size_um:.3f} µm. Methods: {', '.join(m.upper() for m in result.methods)}. "
        f"Fields counted: {result.fields_done}; failures: {len(result.failures)}; run time "
        f"{result.seconds:.1f} s. {cells} Provenance in <code>run.json</code>; each mask "
        "carries its own record.</p>"
    )


#: Per-well table columns: wells.csv column → heading in words.
_WELL_SHOWN = {
    "method": "Method",
    "fields": "Fields imaged",
    "fields_ok": "Fields counted",
    "fields_failed": "Fields failed",
    "phagophores_per_field_mean": "Phagophores per field (mean)",
    "autolysosomes_per_field_mean": "Autolysosomes per field (mean)",
    "cells": "Cells (nuclei)",
    "phagophores_per_cell": "Phagophores per cell",
    "autolysosomes_per_cell": "Autolysosomes per cell",
    "cytoplasm_area_um2": "Cytoplasm area (µm²)",
    "phagophores_per_1000um2": "Phagophores per 1,000 µm²",
    "autolysosomes_per_1000um2": "Autolysosomes per 1,000 µm²",
    "autolysosome_phagophore_ratio": "Autolysosome / phagophore ratio",
}


def _wells_table(result: RunResult) -> str:
    shown = [c for c in _WELL_SHOWN if any(_has(w, c) for w in result.wells)]
    screen = result.screen
    head = ["Well", *(_WELL_SHOWN[c] for c in shown)]
    if screen is not None:
        head += ["Role", "Compound", "Robust z", "% of control", "Hit"]
    rows = []
    for w in result.wells:
        row = w.as_row() | {"method": w.method.upper()}
        cells = [to_display(w.well), *(_fmt(row[c]) for c in shown)]
        if screen is not None:
            cells += _screen_cells(screen, w)
        rows.append(cells)
    body = _table(head, rows, "wells")
    return (
        "<h2>Per-well results</h2><p>Rows with failed fields are shaded; their numbers cover "
        "the fields counted. Totals per well are in <code>wells.csv</code>.</p>"
        f'<div class="scroll">{_shade_failed(body, result.wells)}</div>'
    )


def _has(w: WellSummary, column: str) -> bool:
    v = w.as_row()[column]
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _screen_cells(screen: Screen, w: WellSummary) -> list[str]:
    from phagoflow.embedded.screen import well_screen_values

    v = well_screen_values(screen, w)
    z, poc = v["robust_z"], v["percent_of_control"]
    return [
        _fmt(v["role"]),
        _fmt(v["compound"]),
        "" if z is None or math.isnan(z) else f"{z:.1f}",
        "" if poc is None or math.isnan(poc) else f"{poc:.0f} %",
        "<b>hit</b>" if v["hit"] else "",
    ]


def _shade_failed(table: str, wells: Sequence[WellSummary]) -> str:
    """Add ``class="warn"`` to the body rows of wells with failed fields (same order)."""
    head, _, body = table.partition("<tbody>")
    rows = body.split("<tr>")
    out = [rows[0]]
    for w, row in zip(wells, rows[1:], strict=False):
        out.append(('<tr class="warn">' if w.fields_failed else "<tr>") + row)
    return head + "<tbody>" + "".join(out)


def _disagreement_section(result: RunResult) -> str:
    """Wells ranked by CIP-vs-CDL disagreement (worst first): a QC list of wells to review."""
    if not ("cip" in result.methods and "cdl" in result.methods):
        return ""
    dis = sorted(
        well_disagreement(comparable_wells(result.wells), "cip", "cdl"), key=lambda d: -d.total
    )
    rows = [
        [to_display(d.well), f"{d.phagophores:.2f}", f"{d.autolysosomes:.2f}", f"{d.total:.2f}"]
        for d in dis
    ]
    return (
        "<h2>CIP vs CDL disagreement per well</h2>"
        "<p>|CIP − CDL| / mean of the two per-well totals (0 = same counts, 2 = one method found "
        "nothing), for wells where both methods counted the same fields. Wells at the top "
        "deserve a look first.</p>"
        + _table(["Well", "Phagophores", "Autolysosomes", "Mean"], rows, "dis")
    )


def _crops_section(result: RunResult, n: int) -> str:
    if n == 0:
        why = "skipped: the run was interrupted" if result.interrupted else "none requested"
        return f"<h2>Doubtful objects</h2><p>Crops {why}.</p>"
    doubts = pick_doubts(result, n)
    two = "cip" in result.methods and "cdl" in result.methods
    how = (
        "where the CIP and CDL masks disagree most, the strongest of each kind of disagreement "
        "first (found by one method only, classified differently, outlined differently)"
        if two
        else "whose green/red ratio lies nearest this plate's boundary between the two classes"
    )
    legend = ", ".join(f"{c.plural} outlined {c.style.outline_colour_name}" for c in OBJECT_CLASSES)
    intro = (
        f"<h2>Doubtful objects, at full resolution</h2><p>The objects {how}: "
        f"{CROP_PX} × {CROP_PX} px around each, every field pixel drawn as {_ZOOM} × {_ZOOM} "
        f"screen pixels (nothing interpolated). Left: DsRed (red) + pHluorin (green); then each "
        f"method's mask: {legend}, each outline edged in black; the dashed box frames the "
        "object the crop is about.</p>"
    )
    by_name = {r.key.name: r for r in result.catalogue.fields}
    items = []
    for d in doubts:
        png = _crop_png(result, by_name[d.field], d)
        items.append(
            f'<figure class="crop">{_img(png, d.caption)}<figcaption><b>{html.escape(d.caption)}'
            f"</b> — chosen because {html.escape(d.reason)}.</figcaption></figure>"
        )
    return intro + ("".join(items) or "<p>No object to show.</p>")


def _crop_png(result: RunResult, record: Any, doubt: Doubt) -> bytes:
    cat = result.catalogue
    box = doubt.box
    image = load_field(cat, record)
    panels = [("DsRed + pHluorin", outlined_crop(image, None, box, zoom=_ZOOM))]
    for m in result.methods:
        stored = read_mask(mask_path(result.out_dir, m, record.key.name), cat.size_yx)
        if stored is not None:
            panels.append((m.upper(), outlined_crop(image, stored[0], box, zoom=_ZOOM)))
    y0, x0, y1, x1 = doubt.target
    target = (y0 - box[0], x0 - box[1], y1 - box[0], x1 - box[1])
    return save_crop_png(panels, pixel_size_um=cat.pixel_size_um, zoom=_ZOOM, target=target)


def write_report(path: Path, result: RunResult, *, n_overlays: int = 4) -> None:
    """Write the self-contained ``report.html`` (pictures embedded as data URIs).

    ``n_overlays`` is the number of doubtful-object crops (none when interrupted).
    """
    cat = result.catalogue
    heat = (result.out_dir / "plate_heatmap.png").read_bytes()
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>phagoflow report — plate {html.escape(cat.plate_id)}</title>
<style>{_CSS}</style></head><body>
<h1>Plate {html.escape(cat.plate_id)} <span class="status">{
        _STATUS_WORDS.get(result.status, html.escape(result.status))
    }</span></h1>
{_status_section(result)}
{_screen_section(result)}
{_run_section(result)}
<h2>Plate heat-maps</h2>
<p>Per-field means (a well that lost fields is not read as low), per-cell or per-area readouts
and the autolysosome/phagophore ratio (autophagic flux). Each readout has one colour scale, shared
by the methods, with its unit on the colour bar. Grey: no value.</p>
{_img(heat, "plate heat-maps")}
{_wells_table(result)}
{_disagreement_section(result)}
{_crops_section(result, n_overlays)}
</body></html>
"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)


_STATUS_WORDS = {
    "complete": "complete",
    "failed_fields": "finished with failed fields",
    "interrupted": "interrupted",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
.fail td, .fail th { text-align: left; }
tr.warn td { background: #fff3cd; }
.banner { padding: 0.6em 1em; border-left: 6px solid; }
.banner.failed { background: #fdecea; border-color: #c62828; }
.banner.interrupted { background: #fff3cd; border-color: #ef6c00; }
.ok { color: #2e7d32; }
.good { color: #1b5e20; font-weight: bold; }
.bad { color: #b71c1c; font-weight: bold; }
.na { color: #888; }
.scroll { overflow-x: auto; }
table.wells th { max-width: 7em; }
.status { font-size: 0.5em; padding: 0.2em 0.6em; background: #eee; border-radius: 4px; }
figure.crop { margin: 0 0 1.2em; }
figcaption { font-size: 0.9em; max-width: 1000px; }
"""
