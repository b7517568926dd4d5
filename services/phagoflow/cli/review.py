"""``phagoflow review``: the web app to review and correct the masks of a plate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phagoflow.cli import common

HELP = "web app to review and correct masks of a results folder, and blind rating"
DESCRIPTION = """
Serve the review app for RESULTS_DIR (written by `phagoflow run --method all`): plate heat-map,
fields by CIP-vs-CDL disagreement, mask viewer and correction tools; curated masks go to
RESULTS_DIR/curated/, ratings to RESULTS_DIR/ratings/. With --s3 PLATE instead, the plate comes
from the streaming stack's object store (PHAGOFLOW_S3_ENDPOINT, PHAGOFLOW_BUCKET, ...) and curated
masks go back to it under curated/PLATE/. Writes need the token PHAGOFLOW_REVIEW_TOKEN (generated
and printed if unset).
"""


def add_parser(sub: Any) -> None:
    """Add ``review`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "review", _cmd_review, help=HELP, description=DESCRIPTION)
    add_results_argument(p)
    p.add_argument(
        "--s3",
        default=None,
        metavar="PLATE",
        help="review plate PLATE of the object store instead of a results folder",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--export", type=Path, default=None, help="plate export, if it moved since the run"
    )


def add_results_argument(p: argparse.ArgumentParser) -> None:
    """The optional RESULTS_DIR of the commands that also take ``--s3 PLATE`` instead."""
    p.add_argument("results", type=Path, nargs="?", metavar="RESULTS_DIR", help="results folder")


def source_error(args: argparse.Namespace) -> ValueError | None:
    """The error when neither or both of RESULTS_DIR and ``--s3 PLATE`` are given."""
    if (args.results is None) == (args.s3 is None):
        return ValueError("give either RESULTS_DIR or --s3 PLATE")
    return None


def _cmd_review(args: argparse.Namespace) -> int:
    if (error := source_error(args)) is not None:
        return common.fail(error)
    try:
        from phagoflow.review.app import run_app, serve
    except ImportError as exc:  # fastapi/uvicorn are optional (the review extra)
        hint = "install the web app with `pip install phagoflow[review]`"
        return common.fail(ImportError(f"{exc}; {hint}"))
    from phagoflow.review.results import ResultsError

    try:
        if args.s3 is None:
            serve(args.results, host=args.host, port=args.port, export=args.export)
        else:
            from phagoflow.review.store import ReviewServiceSettings, open_store_results

            results = open_store_results(ReviewServiceSettings(), args.s3)
            run_app(results, host=args.host, port=args.port)
    except ResultsError as exc:
        return common.fail(exc)
    return 0
