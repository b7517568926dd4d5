"""``phagoflow serve``: one streaming service, until SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from phagoflow.cli import common

HELP = "run a streaming service (ingest, cip, inference, metrics, review) until SIGTERM"
DESCRIPTION = """
Run one streaming service; settings come from PHAGOFLOW_* environment variables (see
docs/streaming.md): PHAGOFLOW_KAFKA_BOOTSTRAP, PHAGOFLOW_S3_ENDPOINT, PHAGOFLOW_BUCKET,
PHAGOFLOW_WATCH_DIR, PHAGOFLOW_METRICS_PORT, ...
"""


def add_parser(sub: Any) -> None:
    """Add ``serve`` to the ``phagoflow`` sub-parsers ``sub``."""
    from phagoflow.services import SERVICES

    p = common.command(sub, "serve", _cmd_serve, help=HELP, description=DESCRIPTION)
    p.add_argument(
        "service",
        choices=sorted(SERVICES),
        help="service to run (review: the review app on PHAGOFLOW_REVIEW_PLATE of the store)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    """Every deployable, review included, through the one ``serve_service``."""
    from phagoflow.services import serve_service

    return serve_service(args.service)
