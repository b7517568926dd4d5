"""``phagoflow model list|push|promote|rollback|pull``: the registry from the command line.

The bucket comes from the services' settings (``PHAGOFLOW_S3_ENDPOINT``,
``PHAGOFLOW_S3_ACCESS_KEY``, ``PHAGOFLOW_S3_SECRET_KEY``, ``PHAGOFLOW_S3_SECURE``,
``PHAGOFLOW_BUCKET``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phagoflow.cli import common
from phagoflow.registry import DEFAULT_MODEL, DEFAULT_PREFIX

if TYPE_CHECKING:
    from phagoflow.registry.store import ModelRegistry

__all__ = ["add_model_commands", "add_parser", "promote_with_gate"]

logger = logging.getLogger(__name__)


HELP = "model registry in the object store: list, push, promote (gated), rollback, pull"
DESCRIPTION = """
U-Net versions under s3://BUCKET/models/autophagy_unet/<N>/ (Triton's repository layout). promote
evaluates the candidate against the serving version on held-out fields (curated masks when present,
else CIP agreement) and serves it only if it is not worse. S3 settings: PHAGOFLOW_S3_* and
PHAGOFLOW_BUCKET.
"""


def add_parser(sub: Any) -> None:
    """Add the ``model`` command and its actions to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "model", help=HELP, description=DESCRIPTION)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"Triton model name ({DEFAULT_MODEL})")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"repository prefix ({DEFAULT_PREFIX})")
    acts = common.actions(p, "model_command")

    a = common.command(
        acts, "list", _safe(_cmd_list), help="stored versions, the serving one and the history"
    )
    a.add_argument("--json", action="store_true", help="the whole registry state as JSON")

    a = common.command(
        acts, "push", _safe(_cmd_push), help="store a model folder as the next version"
    )
    a.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    a.add_argument("--source", default="", help="where it came from (recorded)")
    a.add_argument("--promote", action="store_true", help="then promote it through the gate")
    _add_gate_options(a)

    a = common.command(
        acts, "promote", _safe(_cmd_promote), help="serve a stored version if it passes the gate"
    )
    a.add_argument("model_version", type=int, metavar="VERSION")
    _add_gate_options(a)

    a = common.command(
        acts, "rollback", _safe(_cmd_rollback), help="serve the previously served version again"
    )
    a.add_argument("--to", type=int, default=None, help="version to serve instead")
    a.add_argument("--triton-http", default=_triton_http(), help="as promote")

    a = common.command(
        acts, "pull", _safe(_cmd_pull), help="download a version (or 'serving') as a model folder"
    )
    a.add_argument("model_version", metavar="VERSION", help="version number or 'serving'")
    a.add_argument("out", type=Path, metavar="OUT_DIR")


#: The name the ``phagoflow`` parser knew this by before the CLI became a package.
add_model_commands = add_parser


def _triton_http() -> str | None:
    """``--triton-http``'s default: ``PHAGOFLOW_TRITON_HTTP``, when set and not empty."""
    return os.environ.get("PHAGOFLOW_TRITON_HTTP") or None


def _add_gate_options(a: argparse.ArgumentParser) -> None:
    """The promotion gate's options of ``push --promote`` and ``promote``."""
    a.add_argument(
        "--plates", nargs="+", default=[], metavar="PLATE", help="held-out plates for the gate"
    )
    a.add_argument("--max-fields", type=int, default=None, help="cap the held-out fields")
    a.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed mean-IoU drop (default 0 vs curated masks, 0.02 vs CIP masks)",
    )
    a.add_argument("--force", action="store_true", help="promote without the gate")
    a.add_argument(
        "--triton-config",
        type=Path,
        default=os.environ.get("PHAGOFLOW_TRITON_CONFIG") or None,
        help="Triton config.pbtxt to pin (first promotion; env PHAGOFLOW_TRITON_CONFIG)",
    )
    a.add_argument(
        "--triton-http",
        default=_triton_http(),
        help=(
            "Triton HTTP URL: the gate compares against the version it reports serving, "
            "then asks it to (re)load the model (explicit model control mode)"
        ),
    )
    a.add_argument(
        "--cip-version",
        default=None,
        help="CIP version of the reference masks (default: the current CIP's, or the only one)",
    )


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from phagoflow.registry.store import ModelRegistry
    from phagoflow.services.common import ServiceSettings
    from phagoflow.services.objectstore import ObjectStore

    store = ObjectStore.from_settings(ServiceSettings())
    return ModelRegistry(store, model=args.model, prefix=args.prefix)


def notify_triton(http_url: str, model: str, *, timeout_s: float = 30.0) -> None:
    """Ask Triton (explicit model control) to (re)load ``model`` from its repository.

    Raises
    ------
    RegistryError
        Triton refused or did not answer.
    """
    from phagoflow.registry.store import RegistryError

    url = f"{http_url.rstrip('/')}/v2/repository/models/{model}/load"
    if "://" not in url:
        url = "http://" + url
    req = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"Triton load of {model} at {url} failed: {exc}") from exc


def triton_serving_version(http_url: str, model: str, *, timeout_s: float = 10.0) -> int | None:
    """The newest version of ``model`` Triton reports ready (``GET /v2/models/<model>``).

    Returns None when Triton serves no version of it (HTTP 400/404: not loaded).

    Raises
    ------
    RegistryError
        Triton did not answer, or answered something that is not model metadata.
    """
    from phagoflow.registry.store import RegistryError

    url = f"{http_url.rstrip('/')}/v2/models/{model}"
    if "://" not in url:
        url = "http://" + url
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404):
            return None
        raise RegistryError(f"Triton at {url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(f"Triton at {url} did not answer: {exc}") from exc
    versions = [int(v) for v in doc.get("versions", []) if str(v).isdigit()]
    return max(versions) if versions else None


def serving_version(registry: ModelRegistry, triton_http: str | None) -> tuple[int | None, str]:
    """``(version, "triton" | "registry")``: what Triton serves if asked, else registry.json's.

    A disagreement (a promotion Triton never loaded) is logged; Triton's answer wins, since
    that is the model producing results.
    """
    recorded = registry.serving()
    if not triton_http:
        return recorded, "registry"
    live = triton_serving_version(triton_http, registry.model)
    if live != recorded:
        logger.warning(
            "registry.json says version %s serves, Triton serves %s: comparing with Triton's",
            recorded,
            live,
        )
    return live, "triton"


def promote_with_gate(
    registry: ModelRegistry,
    version: int,
    *,
    plates: list[str],
    force: bool = False,
    tolerance: float | None = None,
    base_config: str | None = None,
    max_fields: int | None = None,
    triton_http: str | None = None,
    cip_version: str | None = None,
) -> tuple[bool, str]:
    """Promote ``version`` if the gate allows it; returns ``(promoted, reason)``.

    Without a serving version and without held-out plates the first version is promoted as is.
    The gate scores on fields neither version trained or validated on, against the version
    actually serving (Triton's, with ``triton_http``).

    Raises
    ------
    RegistryError
        A version serves, no ``--plates`` were given and ``force`` is off; no held-out field;
        or every curated field was used to train or validate a compared version.
    """
    from phagoflow.registry.gate import gate_versions, load_heldout, trained_on
    from phagoflow.registry.store import RegistryError

    if force:
        reason = "forced (gate skipped)"
        registry.promote(version, base_config=base_config, reason=reason)
        return True, reason
    serving, serving_from = serving_version(registry, triton_http)
    if serving == version:
        return True, f"version {version} already serving"
    if not plates:
        if serving is None:
            reason = "first version: nothing serving to compare with"
            registry.promote(version, base_config=base_config, reason=reason)
            return True, reason
        raise RegistryError(
            f"version {serving} serves: name held-out plates (--plates) for the gate, or --force"
        )
    exclude = trained_on(registry.card(version))
    if serving is not None:
        exclude |= trained_on(registry.card(serving))
    held = load_heldout(
        registry.store, plates, exclude=exclude, cip_version=cip_version, max_fields=max_fields
    )
    if not held.fields:
        raise RegistryError(held.empty_reason(plates))
    decision = gate_versions(
        registry, version, held, serving=serving, serving_from=serving_from, tolerance=tolerance
    )
    if decision.promote:
        registry.promote(
            version, base_config=base_config, reason=decision.reason, gate=decision.to_dict()
        )
    else:
        registry.record_rejection(version, reason=decision.reason, gate=decision.to_dict())
    return decision.promote, decision.reason


def _promote(args: argparse.Namespace, registry: ModelRegistry, version: int) -> int:
    base = args.triton_config.read_text() if args.triton_config is not None else None
    promoted, reason = promote_with_gate(
        registry,
        version,
        plates=list(args.plates),
        force=args.force,
        tolerance=args.tolerance,
        base_config=base,
        max_fields=args.max_fields,
        triton_http=args.triton_http,
        cip_version=args.cip_version,
    )
    print(f"version {version}: {reason}")
    if promoted and args.triton_http:
        notify_triton(args.triton_http, registry.model)
        print(f"Triton at {args.triton_http} reloaded {registry.model}")
    return 0 if promoted else 3


def _cmd_list(args: argparse.Namespace) -> int:
    from phagoflow.registry.store import dumps_state

    state = _registry(args).state()
    if args.json:
        print(dumps_state(state))
        return 0
    if not state.versions:
        print(f"{state.model}: no versions stored")
    for v in sorted(state.versions, key=lambda v: v.version):
        mark = "*" if v.version == state.serving else " "
        print(f"{mark} {v.version:>4}  {v.card_version:<20} {v.pushed_at}  {v.name}  {v.source}")
    for e in state.history[-10:]:
        print(f"  {e.at} {e.action:<8} {e.version} (was {e.previous}): {e.reason}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    registry = _registry(args)
    info = registry.push(args.model_dir, source=args.source)
    print(f"stored {args.model_dir} as {registry.key(info.version)}/ ({info.card_version})")
    return _promote(args, registry, info.version) if args.promote else 0


def _cmd_promote(args: argparse.Namespace) -> int:
    return _promote(args, _registry(args), args.model_version)


def _cmd_rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    state = registry.rollback(to=args.to)
    print(f"{registry.model}: serving version {state.serving} again")
    if args.triton_http:
        notify_triton(args.triton_http, registry.model)
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from phagoflow.registry.store import RegistryError

    registry = _registry(args)
    if args.model_version == "serving":
        version = registry.serving()
        if version is None:
            raise RegistryError(f"{registry.model}: nothing is serving")
    else:
        version = int(args.model_version)
    out = registry.fetch(version, args.out)
    print(json.dumps({"version": version, "model_dir": str(out)}))
    return 0


def _errors() -> tuple[type[BaseException], ...]:
    """What a ``model`` action reports in one line (status 1): registry and store errors."""
    from phagoflow.core.model_dir import ModelDirError
    from phagoflow.registry.store import RegistryError
    from phagoflow.services.objectstore import ObjectStoreError

    return (RegistryError, ModelDirError, ObjectStoreError, ValueError, OSError)


def _safe(func: common.Handler) -> common.Handler:
    """Wrap a handler: registry and store errors print ``phagoflow: message`` and exit 1."""
    return common.one_line_errors(func, _errors, log=logger)
