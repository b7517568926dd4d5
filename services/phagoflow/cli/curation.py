"""``phagoflow curation report``: the minutes of correction the curated masks took."""

from __future__ import annotations

import argparse
import json
from typing import Any

from phagoflow.cli import common
from phagoflow.cli.review import add_results_argument, source_error

GROUP_HELP = "correction-time reports (see `phagoflow review`)"
HELP = "fields curated and the minutes of correction they took"
DESCRIPTION = """
Sum the correction time recorded with each curated mask (RESULTS_DIR/curated/*.json, or
curated/PLATE/ in the object store with --s3): fields curated and timed, total, median and mean
minutes per field, edit operations, per user.
"""


def add_parser(sub: Any) -> None:
    """Add ``curation`` and its ``report`` action to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.action_command(
        sub,
        "curation",
        GROUP_HELP,
        "report",
        _cmd_curation_report,
        help=HELP,
        description=DESCRIPTION,
    )
    add_results_argument(p)
    p.add_argument("--s3", default=None, metavar="PLATE", help="plate of the object store")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")


def _cmd_curation_report(args: argparse.Namespace) -> int:
    from phagoflow.review.curation import (
        curation_report,
        format_curation_report,
        read_curated_sidecars,
    )
    from phagoflow.review.results import ResultsError

    if (error := source_error(args)) is not None:
        return common.fail(error)
    if args.s3 is None:
        if not args.results.is_dir():
            return common.fail(ValueError(f"{args.results} is not a folder"))
        docs = read_curated_sidecars(args.results / "curated")
    else:
        from phagoflow.review.store import ReviewServiceSettings, read_store_provenances

        try:
            docs = read_store_provenances(ReviewServiceSettings(), args.s3)
        except ResultsError as exc:
            return common.fail(exc)
    report = curation_report(docs)
    print(json.dumps(report, indent=2) if args.json else format_curation_report(report))
    return 0
