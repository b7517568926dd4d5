"""Streaming stack vs embedded run: latency at a microscope's pace, throughput, memory.

Starts a private local stack (tansu, moto S3 standing in for MinIO, Triton when a model exists,
Prometheus when installed, the services) on loopback ports the OS picks, under
``bench-out/stream-stack``, and runs :func:`phagoflow.stack.bench.run_bench` twice:

1. latency: 8 wells x 2 fields copied one field every 2 s (a microscope's pace) — acquisition →
   mask and acquisition of a well's last field → its ``WellComplete``, p50/p95 (target p95 < 10 s);
2. throughput: a 96-field plate (48 wells x 2 fields) dropped at once — first file → the
   plate's last ``WellComplete`` (every well aggregated for every method: the stack's
   counterpart of the embedded run's finished report);

then reads every stack process's peak RSS (``VmHWM``, per process: Triton's backend stubs
separately; target ≤ 1 GiB each), **stops the stack**, and only then times ``phagoflow run``
(1 worker, report included) on the same 96-field export in a child process of its own, whose
peak RSS comes from ``wait4``. The ratio is embedded seconds ÷ stack seconds (target ≥ 0.8x).
Usage::

    .venv/bin/python benchmarks/bench_stream.py [--cip-workers N] [--inference-workers N]
                                                [--cip-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, machine

PORTS = [
    "KAFKA_PORT",
    "S3_PORT",
    "TRITON_GRPC_PORT",
    "TRITON_HTTP_PORT",
    "TRITON_METRICS_PORT",
    "PROMETHEUS_PORT",
    "INGEST_PORT",
    "CIP_PORT",
    "INFERENCE_PORT",
    "METRICS_PORT",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cip-workers", type=int, default=1)
    ap.add_argument("--inference-workers", type=int, default=3)
    ap.add_argument("--throughput-wells", type=int, default=48)
    ap.add_argument("--cip-only", action="store_true", help="no Triton/inference (no model)")
    args = ap.parse_args()
    stack_dir = (BENCH_DIR / "stream-stack").resolve()
    # The stack's S3 and Kafka start empty, so plates left in the watch folder by an earlier
    # run would be ingested again and compete with the measured plates.
    shutil.rmtree(stack_dir / "incoming", ignore_errors=True)
    export = stack_dir / "throughput-export"
    shutil.rmtree(export, ignore_errors=True)
    env = {f"PHAGOFLOW_{p}": "0" for p in PORTS}  # every component binds a port the OS picks
    env.update(
        PHAGOFLOW_STACK_DIR=str(stack_dir),
        PHAGOFLOW_WATCH_DIR=str(stack_dir / "incoming"),
        PHAGOFLOW_CIP_WORKERS=str(args.cip_workers),
        PHAGOFLOW_INFERENCE_WORKERS=str(args.inference_workers),
    )
    if args.cip_only:
        env["PHAGOFLOW_MODEL_DIR"] = str(stack_dir / "no-model")
    os.environ.update(env)

    from phagoflow.stack.bench import embedded_baseline, run_bench
    from phagoflow.stack.local import stack_down, stack_up

    print(f"# streaming stack benchmark — {machine()}", flush=True)
    state = stack_up(echo=lambda s: None)
    try:
        latency = run_bench(wells=8, fields=2, interval_s=2.0, seed=21)
        throughput = run_bench(
            wells=args.throughput_wells, fields=2, interval_s=0.0, seed=22, keep_export=export
        )
    finally:
        stack_down(echo=lambda s: None)
    model_dir = Path(state["model_dir"]) if state.get("model_dir") else None
    embedded = embedded_baseline(
        export, stack_dir / "embedded-out", methods=state["methods"], model_dir=model_dir
    )
    throughput["embedded"] = embedded
    stack_s = throughput["first_file_to_last_well_complete_s"]
    throughput["stack_vs_embedded"] = round(embedded["seconds"] / stack_s, 3)
    out = BENCH_DIR / "bench_stream.json"
    out.write_text(json.dumps({"latency": latency, "throughput": throughput}, indent=2))
    _print(latency, throughput, args)
    print(f"details: {out}")
    return 0


def _print(latency: dict[str, Any], throughput: dict[str, Any], args: argparse.Namespace) -> None:
    for method, lat in latency["latency"].items():
        f, w = lat["field_acquisition_to_mask_s"], lat["well_acquisition_to_result_s"]
        print(
            f"latency {method} (one field / 2 s): field acquisition → mask p50 {f['p50']} s, "
            f"p95 {f['p95']} s; well result p50 {w['p50']} s, p95 {w['p95']} s (target p95 < 10 s)"
        )
    emb, n = throughput["embedded"], throughput["fields"]
    print(
        f"throughput ({n} fields at once, methods {','.join(throughput['methods'])}, "
        f"{args.cip_workers} cip / {args.inference_workers} inference worker(s)): stack "
        f"{throughput['first_file_to_last_well_complete_s']} s first file → last WellComplete; "
        f"embedded (stack down, report included) {emb['seconds']} s = "
        f"{throughput['stack_vs_embedded']}x (target ≥ 0.8x)"
    )
    cpu = throughput["cpu_seconds_per_field"]
    print(
        "CPU s per field: "
        + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items())
        + f", embedded {emb['cpu_seconds'] / n:.3f}"
    )
    tri = throughput.get("triton") or {}
    if tri:
        print(
            f"Triton: {tri['nv_inference_request_success']:.0f} requests, "
            f"{tri['nv_inference_count']:.0f} tiles in {tri['nv_inference_exec_count']:.0f} "
            f"executions ({tri.get('tiles_per_execution')} tiles each)"
        )
    peaks = []
    for name, procs in throughput["peak_rss_mib"].items():
        peaks += [f"{name}[{p['comm']}] {p['peak_rss_mib']:.0f}" for p in procs]
    print("peak RSS MiB per process: " + ", ".join(peaks) + f"; embedded {emb['peak_rss_mib']:.0f}")


if __name__ == "__main__":
    sys.exit(main())
