"""A simulated plate fed to the running local stack: what ``e2e`` and ``bench`` share.

Both find the stack that ``phagoflow stack up`` recorded (:func:`running_stack`), simulate a plate
into a temporary folder (:func:`simulated_plate`), copy it into the watch folder as a microscope
writes it (:func:`copy_plate`) and poll the metrics API until the plate is complete
(:func:`wait_complete`). What they do with the plate afterwards is their own.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from phagoflow.stack.process import address

if TYPE_CHECKING:
    from phagoflow.core.simulate import SimulatedPlate
    from phagoflow.stack.local import StackSettings

__all__ = [
    "PlateRun",
    "RunningStack",
    "copy_plate",
    "get_json",
    "running_stack",
    "simulated_plate",
    "wait_complete",
]

#: Index files of an Opera export (a .flex export has none); copied before any field.
_INDEX_NAMES = ("Index.idx.xml", "Index.xml")


@dataclass(frozen=True)
class PlateRun:
    """The shape of one run: the simulated plate and how it is fed to the stack.

    Attributes
    ----------
    wells, fields : int
        Wells of the simulated plate and fields per well.
    seed : int
        Simulation seed.
    interval_s : float
        Seconds from one field's first file to the next field's (0: all at once).
    timeout_s : float
        Seconds to wait for the plate to complete.
    """

    wells: int
    fields: int
    seed: int
    interval_s: float
    timeout_s: float

    @property
    def n_fields(self) -> int:
        """Fields of the plate, ``wells * fields``."""
        return self.wells * self.fields


@dataclass(frozen=True)
class RunningStack:
    """The local stack as ``phagoflow stack up`` recorded it.

    Attributes
    ----------
    settings : phagoflow.stack.local.StackSettings
        Settings the stack was found with (the ``PHAGOFLOW_*`` environment).
    state : dict
        Its ``stack.json`` (ports, endpoints, methods, watch folder, model folder).
    """

    settings: StackSettings
    state: dict[str, Any]

    @property
    def methods(self) -> list[str]:
        """Methods the stack runs, e.g. ``["cip", "cdl"]``."""
        return list(self.state["methods"])

    @property
    def endpoints(self) -> dict[str, str]:
        """Component endpoints (``kafka``, ``triton_metrics``...)."""
        endpoints: dict[str, str] = self.state["endpoints"]
        return endpoints

    @property
    def model_dir(self) -> Path | None:
        """The model folder the stack serves, None when it has none."""
        return Path(self.state["model_dir"]) if self.state.get("model_dir") else None

    def plate_url(self, plate: str) -> str:
        """The metrics API's URL of ``plate`` (``/api/v1/plates/PLATE``)."""
        api = address("127.0.0.1", self.state["metrics_port"], "http")
        return f"{api}/api/v1/plates/{quote(plate, safe='')}"

    def images_dir(self, plate: str) -> Path:
        """Where the microscope would write ``plate``: ``WATCH_DIR/PLATE/Images`` (not created)."""
        return Path(self.state["watch_dir"]) / plate / "Images"


def running_stack() -> RunningStack | None:
    """The stack recorded by ``phagoflow stack up``, or None when none is up."""
    from phagoflow.stack.local import STATE_FILE, StackSettings, stack_status

    settings = StackSettings()
    if not stack_status(settings)["up"]:
        return None
    state = json.loads((settings.stack_dir / STATE_FILE).read_text())
    return RunningStack(settings, state)


@contextmanager
def simulated_plate(run: PlateRun, tool: str) -> Iterator[tuple[str, SimulatedPlate, Path]]:
    """Simulate the plate of ``run`` in a temporary folder, removed on leaving the block.

    Parameters
    ----------
    run : PlateRun
        Wells, fields and seed of the plate.
    tool : str
        ``"e2e"`` or ``"bench"``: the plate id is ``E2E-yyyymmdd-hhmmss`` (upper case, local
        time) and the folder ``phagoflow-e2e-*``.

    Yields
    ------
    tuple of (str, SimulatedPlate, Path)
        The plate id, the simulated plate (export under ``tmp/sim``) and the temporary folder.
    """
    from phagoflow.core.simulate import simulate_plate

    plate = f"{tool.upper()}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix=f"phagoflow-{tool}-") as tmp:
        sim = simulate_plate(
            Path(tmp) / "sim", wells=run.wells, fields=run.fields, seed=run.seed, plate_id=plate
        )
        yield plate, sim, Path(tmp)


def copy_plate(export: Path, dest: Path, interval_s: float) -> tuple[float, int]:
    """Copy an export into ``dest`` as a microscope writes it.

    The index first (none for .flex files), then one field's files every ``interval_s``
    seconds, each written as ``.NAME.part`` and renamed so that ingest never sees half a file.

    Parameters
    ----------
    export : Path
        The export folder (the simulated plate's ``export_dir``).
    dest : Path
        An existing folder, the plate's :meth:`RunningStack.images_dir`.
    interval_s : float
        Seconds from one field's first file to the next field's (0: all at once).

    Returns
    -------
    t_start : float
        When the first file was written, epoch seconds.
    n_fields : int
        Fields copied.
    """
    files = sorted(p for p in export.iterdir() if p.is_file())
    index = [p for p in files if p.name in _INDEX_NAMES]
    by_field: dict[str, list[Path]] = {}
    for p in files:
        if p not in index:
            by_field.setdefault(p.name.split("-")[0], []).append(p)
    t_start = time.time()
    for p in index:
        shutil.copyfile(p, dest / p.name)
    for group in by_field.values():
        t_next = time.monotonic() + interval_s
        for p in group:
            part = dest / f".{p.name}.part"
            shutil.copyfile(p, part)
            part.rename(dest / p.name)
        time.sleep(max(t_next - time.monotonic(), 0.0))
    return t_start, len(by_field)


def get_json(url: str) -> tuple[int, Any]:
    """HTTP GET of a JSON document: ``(status, body)``; ``(code, None)`` on an HTTP error,
    ``(0, None)`` when nothing answers (5 s timeout)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def wait_complete(url: str, deadline: float, poll_s: float) -> tuple[bool, Any]:
    """Poll a plate's metrics-API ``url`` until it says ``complete: true`` or ``deadline`` passes.

    Parameters
    ----------
    url : str
        :meth:`RunningStack.plate_url` of the plate.
    deadline : float
        :func:`time.monotonic` value after which the plate counts as not complete.
    poll_s : float
        Seconds between polls.

    Returns
    -------
    complete : bool
        Whether the API said the plate is complete before the deadline.
    body : object
        The last answer (None when the API did not answer).
    """
    while True:
        code, body = get_json(url)
        if code == 200 and isinstance(body, dict) and body.get("complete"):
            return True, body
        if time.monotonic() > deadline:
            return False, body
        time.sleep(poll_s)
