"""``phagoflow check``: is a plate export complete, and which channel plays which role."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phagoflow.cli import common

HELP = "is a plate export complete? (exit 0 if complete, 3 if not)"
DESCRIPTION = """
Apply the completeness rule: the index parses, its Image count fills the plate's grid, every
acquired image is a whole TIFF inside the export (valid header, every strip or tile present;
compressed TIFFs included), and nothing changed for --quiet-seconds. Also says which channels play
the DsRed and pHluorin roles (informational: the exit status is about completeness only).
"""


def add_parser(sub: Any) -> None:
    """Add ``check`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "check", _cmd_check, help=HELP, description=DESCRIPTION)
    p.add_argument("export", type=Path)
    p.add_argument("--quiet-seconds", type=float, default=60.0, help="quiet period (default 60)")
    common.add_channel_role_option(p)


def _cmd_check(args: argparse.Namespace) -> int:
    from phagoflow.core.opera import check_complete

    report = check_complete(args.export, quiet_seconds=args.quiet_seconds)
    print("complete" if report.complete else "incomplete")
    for reason in report.reasons:
        print(f"  {reason}")
    if report.index_path is not None:
        _print_channel_roles(args)
    return 0 if report.complete else 3


def _print_channel_roles(args: argparse.Namespace) -> None:
    """Which channel plays which role (informational: never changes ``check``'s status)."""
    from phagoflow.core.opera import parse_index
    from phagoflow.core.opera.catalogue import PlateFormatError
    from phagoflow.core.opera.roles import assign_roles

    try:
        index = parse_index(args.export)
        channels = assign_roles(
            index.channel_names,
            index.index_path,
            channel_roles=common.channel_roles(args),
            wavelengths=index.channel_wavelengths,
        )
    except PlateFormatError as exc:
        print(f"channel roles: cannot be assigned: {exc}")
    else:
        for c in channels:
            if c.roles:
                print(f"channel roles: {c.role_label} = {c.name!r} ({c.role_source})")
