"""Streaming stack vs embedded run: latency at a microscope's pace, throughput, memory.

Starts a private local stack (tansu, moto S3 standing in for MinIO, Triton when a model exists,
Prometheus when installed, the four services) on loopback ports the OS picks, under
``bench-out/stream-stack``, runs :func:`phagoflow.stack.bench.run_bench` twice and stops it:

1. latency: 8 wells x 2 fields copied one field every 2 s (a microscope's pace) — acquisition →
   mask and acquisition of a well's last field → its ``WellComplete``, p50/p95 (target p95 < 10 s);
2. throughput: a 96-field plate (48 wells x 2 fields) dropped at once — fields/min from the first
   file to the last result, against ``phagoflow run`` (1 worker) on the same export and machine
   (target ≥ 0.8x);

and prints the RSS of every stack process (target ≤ 1 GiB each). Usage::

    .venv/bin/python benchmarks/bench_stream.py [--cip-workers N] [--inference-workers N]
                                                [--cip-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

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

    from phagoflow.stack.bench import run_bench
    from phagoflow.stack.local import stack_down, stack_up

    print(f"# streaming stack benchmark — {machine()}", flush=True)
    stack_up(echo=lambda s: None)
    try:
        latency = run_bench(wells=8, fields=2, interval_s=2.0, seed=21)
        throughput = run_bench(wells=args.throughput_wells, fields=2, interval_s=0.0, seed=22)
    finally:
        stack_down(echo=lambda s: None)
    out = BENCH_DIR / "bench_stream.json"
    out.write_text(json.dumps({"latency": latency, "throughput": throughput}, indent=2))
    for method, lat in latency["latency"].items():
        f, w = lat["field_acquisition_to_mask_s"], lat["well_acquisition_to_result_s"]
        print(
            f"latency {method} (one field / 2 s): field acquisition → mask p50 {f['p50']} s, "
            f"p95 {f['p95']} s; well result p50 {w['p50']} s, p95 {w['p95']} s (target p95 < 10 s)"
        )
    print(
        f"throughput ({throughput['fields']} fields at once, methods "
        f"{','.join(throughput['methods'])}, {args.cip_workers} cip / "
        f"{args.inference_workers} inference worker(s)): "
        f"{throughput['stack_fields_per_min']} fields/min vs embedded "
        f"{throughput['embedded_fields_per_min']} fields/min = "
        f"{throughput['stack_vs_embedded']}x (target ≥ 0.8x)"
    )
    cpu = throughput["cpu_seconds_per_field"]
    print("CPU s per field: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
    tri = throughput.get("triton") or {}
    if tri:
        print(
            f"Triton: {tri['nv_inference_request_success']:.0f} requests, "
            f"{tri['nv_inference_count']:.0f} tiles in {tri['nv_inference_exec_count']:.0f} "
            f"executions ({tri.get('tiles_per_execution')} tiles each)"
        )
    rss = throughput["rss_group_mib"]  # with child processes (Triton's backend stubs)
    print("RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items() if v is not None))
    print(f"details: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
