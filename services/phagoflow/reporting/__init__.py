"""Pictures and reports: plate heat-maps, field overlays, evaluation figures, the HTML report.

These modules draw with matplotlib's Agg backend and never read plates themselves: they take
arrays and summaries produced by :mod:`phagoflow.core`.
"""
