"""Streaming benchmark against the running local stack: latency, throughput and memory.

``python -m phagoflow.stack.bench`` (needs ``phagoflow stack up``). Simulates a plate and copies
it into the watch folder one field every ``--interval`` seconds (2 s ≈ a microscope; 0 = all at
once, for throughput), waits for ``complete: true``, then reads the plate's events from Kafka:

- per field: acquisition (file time, ``FieldAcquired.acquired_at``) → ``MaskReady`` produced;
- per well: acquisition of its last field → ``WellComplete`` (the "well result" latency);
- throughput: fields ÷ (first file → the plate's last ``WellComplete``, i.e. every well of
  every method aggregated — the stack's equivalent of the embedded run's finished report);
- peak RSS (``VmHWM``) of every process of every stack component, per process.

:func:`embedded_baseline` times ``phagoflow run`` (1 worker, report included) on an export in
a child process of its own and reads that child's peak RSS from ``wait4``; run it with the stack
**down** (``benchmarks/bench_stream.py`` does) — beside a running stack on the same cores it
measures the competition, not the embedded runner. ``--embedded`` does exactly that, for a
quick look only.

Prints one JSON document. Numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from phagoflow.stack.feed import (
    PlateRun,
    RunningStack,
    copy_plate,
    running_stack,
    simulated_plate,
    wait_complete,
)
from phagoflow.stack.procfs import group_members

__all__ = ["main", "run_bench"]


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "max": round(float(arr.max()), 3),
    }


def group_cpu_seconds(pgids: Sequence[int]) -> dict[int, float]:
    """CPU time (user + system, seconds) of every live process in each process group.

    Each stack component runs in its own process group, so this includes helpers such as
    Triton's Python-backend stub (where the U-Net actually runs). Processes that exited
    during the interval are not counted.
    """
    tick = os.sysconf("SC_CLK_TCK")
    return {
        g: sum((int(f[11]) + int(f[12])) / tick for _, f in procs)  # utime + stime
        for g, procs in group_members(pgids).items()
    }


def group_rss_mib(pgids: Sequence[int]) -> dict[int, float]:
    """Resident memory (MiB) summed over every process of each process group.

    Triton's Python-backend stubs (one per model instance) are processes of their own; this
    counts them with the server.
    """
    totals: dict[int, float] = {}
    for g, procs in group_members(pgids).items():
        kib = 0
        for entry, _ in procs:
            try:
                lines = (entry / "status").read_text().splitlines()
            except OSError:
                continue
            kib += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
        totals[g] = round(kib / 1024, 1)
    return totals


_TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")


def triton_counters(url: str | None) -> dict[str, float]:
    """Triton's request, inference (tile) and execution counters summed over models.

    ``nv_inference_exec_count`` below ``nv_inference_request_success`` means the dynamic
    batcher merged requests (here: tiles of different fields) into one execution. Empty when
    there is no Triton or its metrics endpoint does not answer.
    """
    if not url:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    totals = dict.fromkeys(_TRITON_COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def _plate_events(bootstrap: str, plate: str) -> dict[str, list[Any]]:
    """Every event of ``plate`` on the fields, masks and wells topics (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    from phagoflow import events as ev

    topics = [
        ev.Topic.FIELDS_ACQUIRED.value,
        ev.Topic.MASKS_CIP.value,
        ev.Topic.MASKS_CDL.value,
        ev.Topic.WELLS.value,
    ]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    event: Any = ev.decode_record(tp.topic, r.value, list(r.headers or ()))
                    owner = event.plate if tp.topic == ev.Topic.WELLS.value else event.field.plate
                    if owner == plate:
                        out[tp.topic].append(event)
    finally:
        consumer.close()
    return out


def peak_rss_per_process(pgids: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Peak resident memory (``VmHWM``, MiB) of each process of each component's group.

    Parameters
    ----------
    pgids : dict
        Component name → process-group id (its pid: each runs in a session of its own).

    Returns
    -------
    dict
        Component → ``[{"pid", "comm", "peak_rss_mib"}, ...]``, one entry per live process
        (Triton's Python-backend stubs are processes of their own next to the server).
    """
    members = group_members(list(pgids.values()))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, pgid in pgids.items():
        rows = []
        for entry, _ in members.get(pgid, []):
            try:
                status = (entry / "status").read_text().splitlines()
            except OSError:
                continue
            info = dict(line.split(":", 1) for line in status if ":" in line)
            hwm = info.get("VmHWM", "0 kB").split()[0]
            rows.append(
                {
                    "pid": int(entry.name),
                    "comm": info.get("Name", "").strip(),
                    "peak_rss_mib": round(int(hwm) / 1024, 1),
                }
            )
        out[name] = rows
    return out


def embedded_baseline(
    export: Path, out: Path, *, methods: Sequence[str], model_dir: Path | None
) -> dict[str, Any]:
    """``phagoflow run`` (1 worker, report included) on ``export`` in a child process.

    Returns wall seconds, CPU seconds (user + system) and the child's own peak RSS, MiB, from
    ``wait4`` (not ``RUSAGE_CHILDREN``, which would fold in every earlier child).
    """
    code = (
        "import sys; from pathlib import Path; from phagoflow.embedded.run import run_plate; "
        "run_plate(Path(sys.argv[1]), Path(sys.argv[2]), methods=tuple(sys.argv[3].split(',')),"
        " model_dir=Path(sys.argv[4]) if sys.argv[4] else None, progress=False)"
    )
    argv = [sys.executable, "-c", code, str(export), str(out), ",".join(methods)]
    argv.append(str(model_dir) if model_dir is not None else "")
    t0 = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"phagoflow run exited with status {child.returncode}")
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
    }


def _latency(events: dict[str, list[Any]], methods: Sequence[str]) -> tuple[dict[str, Any], float]:
    """Per-method latency figures, and the time of the plate's last ``WellComplete``."""
    from phagoflow import events as ev

    acquired = {
        ev.field_key(e.field).name: ev.from_timestamp(e.acquired_at).timestamp()
        for e in events[ev.Topic.FIELDS_ACQUIRED.value]
    }
    per_method: dict[str, Any] = {}
    last_well = 0.0
    for method in methods:
        masks = events[ev.mask_topic(method)]
        lat = [
            ev.from_timestamp(m.header.produced_at).timestamp()
            - acquired[ev.field_key(m.field).name]
            for m in masks
        ]
        well_lat = []
        for w in events[ev.Topic.WELLS.value]:
            if ev.method_name(w.method) != method:
                continue
            done = ev.from_timestamp(w.completed_at).timestamp()
            last_well = max(last_well, done)
            last_field = max(t for name, t in acquired.items() if name.startswith(w.well))
            well_lat.append(done - last_field)
        stages: dict[str, list[float]] = {}
        for m in masks:
            for stage, seconds in m.stage_seconds.items():
                stages.setdefault(stage, []).append(seconds)
        per_method[method] = {
            "field_acquisition_to_mask_s": _percentiles(lat),
            "well_acquisition_to_result_s": _percentiles(well_lat),
            "stage_seconds_mean": {k: round(float(np.mean(v)), 4) for k, v in stages.items()},
        }
    return per_method, last_well


def _resources(
    procs: dict[str, int],
    cpu: tuple[dict[int, float], dict[int, float]],
    triton: tuple[dict[str, float], dict[str, float]],
    n: int,
    settings: Any,
) -> dict[str, Any]:
    """CPU seconds per field per component, Triton's counters, RSS now and peak per process."""
    from phagoflow.stack.local import stack_status

    per_field = {name: round((cpu[1][pid] - cpu[0][pid]) / n, 4) for name, pid in procs.items()}
    counters = {k: triton[1][k] - triton[0].get(k, 0.0) for k in triton[1]}
    if counters.get("nv_inference_exec_count"):
        counters["tiles_per_execution"] = round(
            counters["nv_inference_count"] / counters["nv_inference_exec_count"], 2
        )
    status = stack_status(settings)
    return {
        "cpu_seconds_per_field": {**per_field, "stack_total": round(sum(per_field.values()), 4)},
        "triton": counters,
        "rss_mib": {p["name"]: p.get("rss_mib") for p in status["processes"]},
        "peak_rss_mib": peak_rss_per_process(procs),
    }


@dataclass(frozen=True)
class _Streamed:
    """What :func:`_stream` measured while the plate streamed in."""

    procs: dict[str, int]  # component → pid (= process group)
    t_start: float  # first file written, epoch seconds
    t_complete: float  # the metrics API said complete, epoch seconds
    cpu: tuple[dict[int, float], dict[int, float]]  # group_cpu_seconds before, after
    triton: tuple[dict[str, float], dict[str, float]]  # triton_counters before, after
    events: dict[str, list[Any]]  # the plate's events per topic


def _stream(stack: RunningStack, run: PlateRun, plate: str, export: Path) -> _Streamed:
    """Copy the plate into the watch folder, wait until complete, then read its events.

    CPU seconds and Triton's counters are taken just before the first file and just after the
    plate completed.
    """
    from phagoflow.stack.local import stack_status

    dest = stack.images_dir(plate)
    dest.mkdir(parents=True)
    procs = {p["name"]: int(p["pid"]) for p in stack_status(stack.settings)["processes"]}
    cpu_before = group_cpu_seconds(list(procs.values()))
    triton_url = stack.endpoints.get("triton_metrics")
    triton_before = triton_counters(triton_url)
    t_start, _ = copy_plate(export, dest, run.interval_s)
    deadline = time.monotonic() + run.timeout_s
    if not wait_complete(stack.plate_url(plate), deadline, 0.25)[0]:
        raise SystemExit(f"bench: plate {plate} not complete after {run.timeout_s:g} s")
    t_complete = time.time()
    cpu = (cpu_before, group_cpu_seconds(list(procs.values())))
    triton = (triton_before, triton_counters(triton_url))
    events = _plate_events(stack.endpoints["kafka"], plate)
    return _Streamed(procs, t_start, t_complete, cpu, triton, events)


def _result(stack: RunningStack, run: PlateRun, plate: str, got: _Streamed) -> dict[str, Any]:
    """The result document of :func:`run_bench` (without ``embedded_beside_stack``)."""
    per_method, last_well = _latency(got.events, stack.methods)
    n = run.n_fields
    stack_s = last_well - got.t_start
    return {
        "plate": plate,
        "fields": n,
        "interval_s": run.interval_s,
        "methods": stack.methods,
        "first_file_to_last_well_complete_s": round(stack_s, 2),
        "first_file_to_api_complete_s": round(got.t_complete - got.t_start, 2),
        "stack_fields_per_min": round(60 * n / stack_s, 2) if stack_s > 0 else None,
        "latency": per_method,
        **_resources(got.procs, got.cpu, got.triton, n, stack.settings),
        "finished": datetime.now().isoformat(timespec="seconds"),
    }


def run_bench(
    *,
    wells: int = 8,
    fields: int = 2,
    interval_s: float = 2.0,
    seed: int = 21,
    timeout_s: float = 1800.0,
    keep_export: Path | None = None,
    embedded: bool = False,
) -> dict[str, Any]:
    """Stream a simulated plate through the running stack; returns the result document.

    Parameters
    ----------
    wells, fields, seed : int
        The simulated plate.
    interval_s : float
        Seconds between fields (0: all at once, for throughput).
    timeout_s : float
        Seconds to wait for the plate to complete.
    keep_export : Path, optional
        Copy the simulated export there (for :func:`embedded_baseline` once the stack is down).
    embedded : bool
        Also time ``phagoflow run`` now, *beside the running stack* (not a fair comparison).
    """
    run = PlateRun(
        wells=wells, fields=fields, seed=seed, interval_s=interval_s, timeout_s=timeout_s
    )
    stack = running_stack()
    if stack is None:
        raise SystemExit("bench: no local stack is up (phagoflow stack up)")
    with simulated_plate(run, "bench") as (plate, sim, tmp):
        got = _stream(stack, run, plate, sim.export_dir)
        if keep_export is not None:
            shutil.copytree(sim.export_dir, keep_export, dirs_exist_ok=True)
        beside = (
            embedded_baseline(
                sim.export_dir, tmp / "ref", methods=stack.methods, model_dir=stack.model_dir
            )
            if embedded
            else None
        )
    result = _result(stack, run, plate, got)
    if beside is not None:
        result["embedded_beside_stack"] = beside
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phagoflow.stack.bench", description=__doc__)
    parser.add_argument("--wells", type=int, default=8)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between fields (0: throughput)"
    )
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="also time `phagoflow run` now, beside the running stack (unfair; see docstring)",
    )
    args = parser.parse_args(argv)
    result = run_bench(
        wells=args.wells,
        fields=args.fields,
        interval_s=args.interval,
        seed=args.seed,
        embedded=args.embedded,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
