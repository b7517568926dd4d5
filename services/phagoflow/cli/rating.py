"""``phagoflow rating report``: the blind ratings of a results folder, per rater."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phagoflow.cli import common

GROUP_HELP = "blind-rating reports (see `phagoflow review`)"
HELP = "per-rater score distributions (PNG), mean scores, KS test per rater"
DESCRIPTION = """
Read RESULTS_DIR/ratings/*.jsonl and write report.json and report.png (per-rater score histograms
per method, two-sample Kolmogorov-Smirnov test per rater).
"""


def add_parser(sub: Any) -> None:
    """Add ``rating`` and its ``report`` action to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.action_command(
        sub, "rating", GROUP_HELP, "report", _cmd_rating_report, help=HELP, description=DESCRIPTION
    )
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="results folder")
    p.add_argument("--out", type=Path, default=None, help="output folder (RESULTS_DIR/ratings)")


def _cmd_rating_report(args: argparse.Namespace) -> int:
    from phagoflow.review.rating import (
        format_rating_report,
        rating_report,
        read_ratings,
        write_rating_report,
    )

    if not ((args.results / "run.json").is_file() or (args.results / "ratings").is_dir()):
        return common.fail(
            ValueError(f"{args.results} is not a results folder (no run.json, no ratings/)")
        )
    out = write_rating_report(args.results, args.out)
    print(format_rating_report(rating_report(read_ratings(args.results))))
    print(f"report: {out / 'report.json'}, {out / 'report.png'}")
    return 0
