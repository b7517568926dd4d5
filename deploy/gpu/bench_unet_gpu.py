"""U-Net throughput on a GPU: inference (fields/s by batch, FP32/FP16, torch and ONNX Runtime)
and training (patches/s), printed as a table and written as JSON.

A field is 680 x 512 px = 12 tiles of 256 x 256 (32-px border, as the inference service cuts
it), so fields/s = tiles/s / 12. Batches count tiles (Triton's max_batch_size is in tiles).
Weights are random (same architecture as the packaged model: base 8, depth 3): the speed of a
trained model is the same. Run on the GPU machine:

    python deploy/gpu/bench_unet_gpu.py --model-dir var/gpu-bench/model --out $OUT/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

TILES_PER_FIELD = 12


def _time(fn: Any, sync: Any, *, min_s: float = 0.6, min_iters: int = 5) -> float:
    """Seconds per call after warm-up (median-free: total / iterations)."""
    for _ in range(3):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def bench_torch(
    model: Any,
    batches: list[int],
    dtype: str,
    tile: int,
    *,
    channels_last: bool = False,
    compile_mode: str | None = None,
) -> list[dict[str, Any]]:
    import torch

    dev = torch.device("cuda")
    m = model.to(dev).eval()
    dt = torch.float16 if dtype == "fp16" else torch.float32
    m = m.to(dt)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(memory_format=fmt)
    engine = "torch" + ("+channels_last" if channels_last else "")
    if compile_mode:
        m = torch.compile(m, mode=compile_mode, dynamic=False)
        engine += f"+compile({compile_mode})"
    rows = []
    for b in batches:
        x = torch.randn(b, 2, tile, tile, device=dev, dtype=dt).to(memory_format=fmt)

        def run(x: Any = x) -> None:
            with torch.inference_mode():
                m(x)

        s = _time(run, torch.cuda.synchronize)
        rows.append(
            {
                "engine": engine,
                "dtype": dtype,
                "batch_tiles": b,
                "s_per_batch": s,
                "tiles_per_s": b / s,
                "fields_per_s": b / s / TILES_PER_FIELD,
            }
        )
    return rows


def bench_ort(onnx: Path, batches: list[int], provider: str, tile: int) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort

    opts: dict[str, Any] = {}
    if provider == "TensorrtExecutionProvider":
        opts = {"trt_fp16_enable": True}
    sess = ort.InferenceSession(str(onnx), providers=[(provider, opts), "CPUExecutionProvider"])
    used = sess.get_providers()[0]
    rows = []
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, 2, tile, tile)).astype(np.float32)
        # I/O binding keeps input and output on the GPU, as Triton's CUDA shared memory would not;
        # this measures the graph, plus one host-device copy of the input per call
        s = _time(lambda x=x: sess.run(["logits"], {"input": x}), lambda: None)
        rows.append(
            {
                "engine": f"onnxruntime/{used}",
                "dtype": "fp32" if "Tensorrt" not in used else "fp16",
                "batch_tiles": b,
                "s_per_batch": s,
                "tiles_per_s": b / s,
                "fields_per_s": b / s / TILES_PER_FIELD,
            }
        )
    return rows


def bench_training(
    model_cls: Any, cfg: Any, batches: list[int], amp: bool, tile: int
) -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = model_cls(cfg).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=2e-3, momentum=0.95, weight_decay=1e-3)
    try:
        from phagoflow.core.losses import GeneralisedDiceLoss

        loss_fn: Any = GeneralisedDiceLoss()
        loss_name = "generalised Dice (phagoflow.core.losses)"
    except Exception:
        loss_fn = torch.nn.CrossEntropyLoss()
        loss_name = "cross-entropy (fallback)"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rows = []
    for b in batches:
        x = torch.randn(b, 2, tile, tile, device=dev)
        y = torch.randint(0, 3, (b, tile, tile), device=dev)

        def step(x: Any = x, y: Any = y) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                out = model(x)
            loss = loss_fn(out.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        s = _time(step, torch.cuda.synchronize, min_s=1.0)
        rows.append(
            {
                "engine": "torch-train",
                "dtype": "amp-fp16" if amp else "fp32",
                "batch_tiles": b,
                "s_per_batch": s,
                "tiles_per_s": b / s,
                "loss": loss_name,
                "epoch_s_512_patches": 512 / (b / s),
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batches", default="1,2,4,8,16,32,64,128,256,512")
    p.add_argument(
        "--only-variants",
        action="store_true",
        help="only the channels_last / torch.compile FP16 variants at --batches",
    )
    args = p.parse_args()
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "services"))
    info: dict[str, Any] = {"python": platform.python_version()}
    import torch

    info.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gpu=torch.cuda.get_device_name(0),
        cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
    )
    torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in args.batches.split(",")]
    rows: list[dict[str, Any]] = []
    try:
        import pydantic  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(root / "var" / "gpu-bench" / "site"))
    from phagoflow.core.unet import UNet, UNetConfig

    card = json.loads((args.model_dir / "card.json").read_text())
    cfg = UNetConfig(**card["architecture"])
    state = torch.load(args.model_dir / "model.pt", weights_only=True, map_location="cpu")
    info["architecture"] = card["architecture"]
    if args.only_variants:
        for cl, mode in (
            (True, None),
            (True, "default"),
            (True, "reduce-overhead"),
        ):
            model = UNet(cfg)
            model.load_state_dict(state)
            try:
                rows += bench_torch(
                    model, batches, "fp16", args.tile, channels_last=cl, compile_mode=mode
                )
            except Exception as exc:
                info[f"error_{mode}"] = repr(exc)[:500]
        return _report(args.out, info, rows)
    for dtype in ("fp32", "fp16"):
        model = UNet(cfg)
        model.load_state_dict(state)
        rows += bench_torch(model, batches, dtype, args.tile)
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
        for prov in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if prov in ort.get_available_providers():
                try:
                    rows += bench_ort(
                        args.model_dir / "model.onnx",
                        [b for b in batches if b <= 256],
                        prov,
                        args.tile,
                    )
                except Exception as exc:
                    info[f"error_{prov}"] = repr(exc)[:500]
    except ImportError as exc:
        info["onnxruntime"] = f"missing: {exc}"
    for amp in (False, True):
        rows += bench_training(UNet, cfg, [4, 16, 64], amp, args.tile)
    return _report(args.out, info, rows)


def _report(out: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print(json.dumps(info))
    print(f"{'engine':<38} {'dtype':<9} {'batch':>6} {'tiles/s':>10} {'fields/s':>10}")
    for r in rows:
        print(
            f"{r['engine']:<38} {r['dtype']:<9} {r['batch_tiles']:>6} {r['tiles_per_s']:>10.0f} "
            f"{r.get('fields_per_s', float('nan')):>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
