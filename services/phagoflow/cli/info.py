"""``phagoflow info``: the catalogue of a plate export as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from phagoflow.cli import common

HELP = "print the catalogue of a plate export (wells, fields, channels, problems)"
DESCRIPTION = """
Read a Harmony or .flex export and print its catalogue as JSON.
"""


def add_parser(sub: Any) -> None:
    """Add ``info`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "info", _cmd_info, help=HELP, description=DESCRIPTION)
    p.add_argument("export", type=Path)
    common.add_channel_role_option(p)


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the catalogue as JSON; exit 1 (after printing it) when roles cannot be assigned."""
    import math

    from phagoflow.core.opera import read_plate

    cat = read_plate(args.export, channel_roles=common.channel_roles(args), strict_roles=False)
    pixel = None if math.isnan(cat.pixel_size_um) else cat.pixel_size_um
    doc = {
        "plate_id": cat.plate_id,
        "measurement_id": cat.measurement_id,
        "format": cat.format_version,
        "index": str(cat.index_path),
        "plate": f"{cat.plate_rows} x {cat.plate_columns}",
        "wells": list(cat.wells),
        "fields": len(cat.fields),
        "images_declared": cat.declared_images,
        "images_expected": cat.expected_images,
        "size_yx": list(cat.size_yx),
        "pixel_size_um": pixel,
        "channels": [c.as_record() for c in cat.channels],
        "channel_roles_error": cat.role_error,
        "problems": [
            {"field": p.key.name if p.key else None, "path": p.path, "reason": p.reason}
            for p in cat.problems
        ],
    }
    print(json.dumps(doc, indent=2))
    if cat.role_error is not None:
        print(f"phagoflow: {cat.role_error}", file=sys.stderr)
        return 1
    return 0
