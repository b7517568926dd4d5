"""Streaming benchmark against the running local stack: latency, throughput and memory.

``python -m phagoflow.stack.bench`` (needs ``phagoflow stack up``). Simulates a plate and copies
it into the watch folder one field every ``--interval`` seconds (2 s ≈ a microscope; 0 = all at
once, for throughput), waits for ``complete: true``, then reads the plate's events from Kafka:

- per field: acquisition (file time, ``FieldAcquired.acquired_at``) → ``MaskReady`` produced;
- per well: acquisition of its last field → ``WellComplete`` (the "well result" latency);
- throughput: fields ÷ (first file → last ``MaskReady``), against ``phagoflow run`` (1 worker)
  on the same export and machine;
- RSS of every stack process at the end (``phagoflow stack status``).

Prints one JSON document. Numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

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


def run_bench(
    *,
    wells: int = 8,
    fields: int = 2,
    interval_s: float = 2.0,
    seed: int = 21,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Run the benchmark; returns the result document."""
    from phagoflow import events as ev
    from phagoflow.core.simulate import simulate_plate
    from phagoflow.embedded.run import run_plate
    from phagoflow.stack.local import STATE_FILE, StackSettings, stack_status

    settings = StackSettings()
    if not stack_status(settings)["up"]:
        raise SystemExit("bench: no local stack is up (phagoflow stack up)")
    state = json.loads((settings.stack_dir / STATE_FILE).read_text())
    api = f"http://127.0.0.1:{state['metrics_port']}/api/v1/plates"
    plate = f"BENCH-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="phagoflow-bench-") as tmp:
        sim = simulate_plate(
            Path(tmp) / "sim", wells=wells, fields=fields, seed=seed, plate_id=plate
        )
        export = sim.export_dir
        dest = Path(state["watch_dir"]) / plate / "Images"
        dest.mkdir(parents=True)
        procs = {p["name"]: int(p["pid"]) for p in stack_status(settings)["processes"]}
        cpu_before = group_cpu_seconds(list(procs.values()))
        triton_url = state["endpoints"].get("triton_metrics")
        triton_before = triton_counters(triton_url)
        files = sorted(p for p in export.iterdir() if p.is_file())
        index = [p for p in files if p.name in ("Index.idx.xml", "Index.xml")]
        groups: dict[str, list[Path]] = {}
        for p in files:
            if p not in index:
                groups.setdefault(p.name.split("-")[0], []).append(p)
        t_start = time.time()
        for p in index:
            shutil.copyfile(p, dest / p.name)
        for group in groups.values():
            t_next = time.monotonic() + interval_s
            for p in group:
                part = dest / f".{p.name}.part"
                shutil.copyfile(p, part)
                part.rename(dest / p.name)
            time.sleep(max(t_next - time.monotonic(), 0.0))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{api}/{quote(plate, safe='')}", timeout=5) as r:
                    if json.loads(r.read())["complete"]:
                        break
            except (urllib.error.URLError, OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: plate {plate} not complete after {timeout_s:g} s")
            time.sleep(0.25)
        t_complete = time.time()
        cpu_after = group_cpu_seconds(list(procs.values()))
        triton_after = triton_counters(triton_url)
        events = _plate_events(state["endpoints"]["kafka"], plate)
        t0 = time.perf_counter()
        cpu0 = os.times()
        run_plate(
            export,
            Path(tmp) / "ref",
            methods=tuple(state["methods"]),
            model_dir=Path(state["model_dir"]) if state.get("model_dir") else None,
            progress=False,
        )
        embedded_s = time.perf_counter() - t0
        cpu1 = os.times()
    embedded_cpu = sum(cpu1[:4]) - sum(cpu0[:4])  # user + system, self + children

    acquired = {
        ev.field_key(e.field).name: ev.from_timestamp(e.acquired_at).timestamp()
        for e in events[ev.Topic.FIELDS_ACQUIRED.value]
    }
    per_method: dict[str, Any] = {}
    last_result = t_start
    for method in state["methods"]:
        masks = events[ev.mask_topic(method)]
        lat = []
        for m in masks:
            done = ev.from_timestamp(m.header.produced_at).timestamp()
            last_result = max(last_result, done)
            lat.append(done - acquired[ev.field_key(m.field).name])
        well_lat = []
        for w in events[ev.Topic.WELLS.value]:
            if ev.method_name(w.method) != method:
                continue
            last_field = max(t for name, t in acquired.items() if name.startswith(w.well))
            well_lat.append(ev.from_timestamp(w.completed_at).timestamp() - last_field)
        stages: dict[str, list[float]] = {}
        for m in masks:
            for stage, seconds in m.stage_seconds.items():
                stages.setdefault(stage, []).append(seconds)
        per_method[method] = {
            "field_acquisition_to_mask_s": _percentiles(lat),
            "well_acquisition_to_result_s": _percentiles(well_lat),
            "stage_seconds_mean": {k: round(float(np.mean(v)), 4) for k, v in stages.items()},
        }
    n = wells * fields
    cpu_per_field = {
        name: round((cpu_after[pid] - cpu_before[pid]) / n, 4) for name, pid in procs.items()
    }
    triton = {k: triton_after[k] - triton_before.get(k, 0.0) for k in triton_after}
    if triton.get("nv_inference_exec_count"):
        triton["tiles_per_execution"] = round(
            triton["nv_inference_count"] / triton["nv_inference_exec_count"], 2
        )
    stream_s = last_result - t_start
    rss_groups = group_rss_mib(list(procs.values()))
    status = stack_status(settings)
    return {
        "plate": plate,
        "fields": n,
        "interval_s": interval_s,
        "methods": state["methods"],
        "first_file_to_complete_s": round(t_complete - t_start, 2),
        "first_file_to_last_result_s": round(stream_s, 2),
        "stack_fields_per_min": round(60 * n / stream_s, 2) if stream_s > 0 else None,
        "embedded_seconds": round(embedded_s, 2),
        "embedded_fields_per_min": round(60 * n / embedded_s, 2),
        "stack_vs_embedded": round(embedded_s / stream_s, 3) if stream_s > 0 else None,
        "cpu_seconds_per_field": {
            **cpu_per_field,
            "stack_total": round(sum(cpu_per_field.values()), 4),
            "embedded": round(embedded_cpu / n, 4),
        },
        "latency": per_method,
        "triton": triton,
        "rss_mib": {p["name"]: p.get("rss_mib") for p in status["processes"]},
        "rss_group_mib": {name: rss_groups[pid] for name, pid in procs.items()},
        "finished": datetime.now().isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phagoflow.stack.bench", description=__doc__)
    parser.add_argument("--wells", type=int, default=8)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between fields (0: throughput)"
    )
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    result = run_bench(
        wells=args.wells, fields=args.fields, interval_s=args.interval, seed=args.seed
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
