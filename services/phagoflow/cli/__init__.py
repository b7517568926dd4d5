"""The ``phagoflow`` command line.

:func:`get_arg_parser` only assembles the sub-parsers (so docs can render it); each command group
lives in its own module with an ``add_parser(subparsers)`` and its ``_cmd_*`` handlers, which
import what they need lazily so ``phagoflow --help`` stays fast:

=============================  ===========================================================
module                         commands
=============================  ===========================================================
:mod:`.simulate`               ``simulate``
:mod:`.run`                    ``run``
:mod:`.train`                  ``train``
:mod:`.evaluate`               ``evaluate``
:mod:`.info`                   ``info``
:mod:`.check`                  ``check``
:mod:`.review`                 ``review``
:mod:`.rating`                 ``rating report``
:mod:`.curation`               ``curation report``
:mod:`.serve`                  ``serve``
:mod:`.stack`                  ``stack``
:mod:`phagoflow.registry.cli`  ``model list|push|promote|rollback|pull``
:mod:`phagoflow.k8s.cli`       ``train-job submit|status|logs|trigger``
=============================  ===========================================================

Shared flags, settings and one-line errors live in :mod:`.common`. :func:`main` parses, sets up
logging and runs the handler, turning a bad ``PHAGOFLOW_*`` setting into one line and status 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from phagoflow.cli import (
    check,
    curation,
    evaluate,
    info,
    rating,
    review,
    run,
    serve,
    simulate,
    stack,
    train,
)
from phagoflow.cli.common import settings_message

__all__ = ["get_arg_parser", "main"]

#: The command groups of this package, in the order ``phagoflow --help`` lists their commands
#: (the ``model`` and ``train-job`` groups of the registry and k8s packages follow).
GROUPS = (simulate, run, train, evaluate, info, check, review, rating, curation, serve, stack)


def get_arg_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="phagoflow",
        description=(
            "Opera autophagy (Rosella) screening plates to per-well phagophore and "
            "autolysosome counts."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bar")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from phagoflow.k8s import cli as k8s_cli  # both import phagoflow.cli.common
    from phagoflow.registry import cli as registry_cli

    for group in (*GROUPS, registry_cli, k8s_cli):
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phagoflow`` console script."""
    parser = get_arg_parser()
    args = parser.parse_args(argv)
    if args.version:
        from phagoflow import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from pydantic import ValidationError

        from phagoflow.core.model_dir import ModelDirError  # imports torch: seconds
        from phagoflow.core.opera.catalogue import PlateFormatError
    except KeyboardInterrupt:
        print("phagoflow: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    try:
        return int(args.func(args))
    except ValidationError as exc:  # a bad PHAGOFLOW_* value read by any command
        print(f"phagoflow: {settings_message(exc)}", file=sys.stderr)
        return 1
    except (PlateFormatError, ModelDirError) as exc:
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1
