"""What several commands share: declaring a command, shared flags, one-line errors, settings.

Every command module calls :func:`command` to add its sub-parser and :func:`fail` (or wraps its
handlers with :func:`one_line_errors`) to turn an error into ``phagoflow: <message>`` on stderr
and exit status 1; ``--channel-role`` and the ``PHAGOFLOW_*`` settings are read here only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from phagoflow.core.cip import CipParameters
    from phagoflow.settings import RunSettings

__all__ = [
    "Handler",
    "action_command",
    "actions",
    "add_backend_option",
    "add_channel_role_option",
    "add_cip_params_option",
    "add_export_argument",
    "add_model_option",
    "channel_roles",
    "command",
    "fail",
    "one_line_errors",
    "progress",
    "settings_cip",
    "settings_message",
]

logger = logging.getLogger("phagoflow")

#: A command's handler: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]


def command(
    sub: Any, name: str, func: Handler | None = None, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add sub-command ``name`` (``help=``, ``description=``) to ``sub``, handled by ``func``."""
    p: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    if func is not None:
        p.set_defaults(func=func)
    return p


def action_command(
    sub: Any, group: str, group_help: str, name: str, func: Handler, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add ``phagoflow GROUP NAME`` (``rating report``): the group's parser only holds actions."""
    p = command(sub, group, help=group_help)
    return command(actions(p, f"{group}_command"), name, func, **kwargs)


def actions(p: argparse.ArgumentParser, dest: str) -> Any:
    """The sub-parsers of a command made of actions (``phagoflow model ACTION``), one required."""
    return p.add_subparsers(dest=dest, metavar="ACTION", required=True)


def fail(exc: BaseException, *, log: logging.Logger = logger) -> int:
    """Print ``phagoflow: <message>`` on stderr (traceback only with -v) and return 1."""
    log.debug("details", exc_info=exc)
    print(f"phagoflow: {exc}", file=sys.stderr)
    return 1


def one_line_errors(
    func: Handler,
    errors: Callable[[], tuple[type[BaseException], ...]],
    *,
    line: Callable[[BaseException], str | None] = lambda exc: None,
    log: logging.Logger = logger,
) -> Handler:
    """Wrap a handler: the exceptions ``errors()`` names (imported only when it runs, so the
    parser stays cheap) print one line and exit 1 — ``line(exc)`` when it gives one, else
    :func:`fail`'s."""

    def run(args: argparse.Namespace) -> int:
        caught = errors()
        try:
            return int(func(args))
        except caught as exc:
            text = line(exc)
            if text is None:
                return fail(exc, log=log)
            print(f"phagoflow: {text}", file=sys.stderr)
            return 1

    return run


def progress(args: argparse.Namespace) -> bool:
    """Whether to show a progress bar: not with the global ``-q``."""
    return not args.quiet


def add_export_argument(p: argparse.ArgumentParser) -> None:
    """The positional plate export of ``run`` and ``evaluate``."""
    p.add_argument("export", type=Path, help="export folder (holding the index, or its parent)")


def add_backend_option(p: argparse.ArgumentParser) -> None:
    """``--backend`` of the commands that run the U-Net."""
    p.add_argument(
        "--backend", choices=("onnxruntime", "torch"), default=None, help="U-Net backend"
    )


def add_model_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--model MODEL_DIR`` of the commands that run the packaged U-Net unless told otherwise."""
    p.add_argument("--model", type=Path, default=None, help=help)


def add_cip_params_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--cip-params FILE.json`` of the commands that run CIP."""
    p.add_argument("--cip-params", type=Path, default=None, help=help)


def add_channel_role_option(p: argparse.ArgumentParser) -> None:
    """``--channel-role NAME=ROLE`` of the commands that read a plate export."""
    p.add_argument(
        "--channel-role",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help="set a channel's role: NAME is a channel name or id, ROLE dsred, phluorin, both "
        "(one channel stands in for both) or none, e.g. 'Alexa 568=dsred' (repeatable; default: "
        "from the wavelengths, else the names, in the index; env PHAGOFLOW_CHANNEL_ROLES)",
    )


def channel_roles(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``--channel-role`` items, else ``PHAGOFLOW_CHANNEL_ROLES``; ``None`` when neither."""
    from pydantic import ValidationError

    from phagoflow.core.opera import parse_channel_roles
    from phagoflow.settings import RunSettings

    try:
        if args.channel_role:
            return parse_channel_roles(args.channel_role)
        return dict(RunSettings().channel_roles) or None
    except ValidationError as exc:  # any bad PHAGOFLOW_* value, named as such
        raise SystemExit(f"phagoflow: {settings_message(exc)}") from None
    except ValueError as exc:
        raise SystemExit(f"phagoflow: --channel-role: {exc}") from None


def settings_message(exc: ValidationError) -> str:
    """One line naming each bad ``PHAGOFLOW_*`` variable, its value and what is wrong."""
    parts = []
    for err in exc.errors():
        name = "PHAGOFLOW_" + "__".join(str(part) for part in err["loc"]).upper()
        parts.append(f"{name}={err.get('input')!r}: {err['msg']}")
    return "invalid setting " + "; ".join(parts)


def settings_cip(path: Path | None) -> tuple[RunSettings, CipParameters]:
    """The run settings and the CIP parameters: from the JSON file ``path``, else the settings'.

    A bad file exits with one line naming it (``SystemExit``); a bad ``PHAGOFLOW_*`` value
    raises pydantic's ``ValidationError`` (see :func:`settings_message`).
    """
    from pydantic import ValidationError

    from phagoflow.core.cip import CipParameters
    from phagoflow.settings import RunSettings

    settings = RunSettings()
    if path is None:
        return settings, settings.cip
    try:
        return settings, CipParameters.model_validate_json(path.read_text())
    except ValidationError as exc:
        bad = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"phagoflow: cannot use CIP parameters from {path}: {bad}") from None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"phagoflow: cannot use CIP parameters from {path}: {exc}") from None
