"""``phagoflow stack``: start, stop or inspect the local full stack."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from phagoflow.cli import common

HELP = "start, stop or inspect the local full stack (Kafka, S3, Triton, services)"
DESCRIPTION = """
up: start tansu, the S3 server, Triton (when a model is available), Prometheus (when installed) and
the services on loopback, detached, and print the endpoints; down: stop them; status: which are
alive and ready. State and logs in var/stack.
"""


def add_parser(sub: Any) -> None:
    """Add ``stack`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "stack", _cmd_stack, help=HELP, description=DESCRIPTION)
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--json", action="store_true", help="status as JSON")


def _cmd_stack(args: argparse.Namespace) -> int:
    from phagoflow.stack.local import stack_down, stack_up
    from phagoflow.stack.process import StackError

    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.action == "up":
            stack_up()
        elif args.action == "down":
            stack_down()
        else:
            return _print_stack_status(args)
    except StackError as exc:
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_stack_status(args: argparse.Namespace) -> int:
    """Print the local stack's processes (or their JSON); 0 when it is up, else 3."""
    from phagoflow.stack.local import stack_status

    status = stack_status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for p in status["processes"]:
            state = "ready" if p["ready"] else "running" if p["running"] else "down"
            rss = f"{p['rss_mib']:7.1f} MiB" if p.get("rss_mib") is not None else " " * 11
            print(f"{p['name']:<11} {state:<8} pid {p['pid']:<8} {rss}  {p['url']}")
        if not status["processes"]:
            print("no local stack recorded (phagoflow stack up)")
    return 0 if status["up"] else 3
