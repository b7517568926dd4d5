"""Every ``config.pbtxt`` parses with Triton's own protobuf and matches the exported ONNX."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(
    [*ROOT.glob("model_repository/*/config.pbtxt"), *ROOT.glob("deploy/**/*.pbtxt")],
    key=str,
)
BUILD_TRT = ROOT / "deploy" / "triton" / "build-trt-plan.sh"
_TYPES: dict[int, int] = {
    int(onnx.TensorProto.FLOAT): mc.TYPE_FP32,
    int(onnx.TensorProto.FLOAT16): mc.TYPE_FP16,
}


def _parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _onnx_io(path: Path) -> dict[str, tuple[int, list[int | str]]]:
    model = onnx.load(str(path))
    out: dict[str, tuple[int, list[int | str]]] = {}
    for v in [*model.graph.input, *model.graph.output]:
        t = v.type.tensor_type
        dims: list[int | str] = [
            d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim
        ]
        out[v.name] = (t.elem_type, dims)
    return out


def test_configs_found() -> None:
    names = {p.parent.name for p in CONFIGS}
    assert {"autophagy_unet", "autophagy_unet_trt", "autophagy_unet_cpu"} <= names, names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_matches_onnx(path: Path, model_folder: Path) -> None:
    config = _parse(path)
    if path.parent.parent.name == "model_repository":
        assert config.name == path.parent.name, "Triton requires name == folder name"
    assert config.max_batch_size > 0
    io = _onnx_io(model_folder / "model.onnx")
    tensors = [*config.input, *config.output]
    assert {t.name for t in tensors} == set(io), f"{path}: tensors differ from the ONNX {set(io)}"
    for t in tensors:
        elem, onnx_dims = io[t.name]
        assert t.data_type == _TYPES[elem], f"{path}: {t.name} type"
        assert isinstance(onnx_dims[0], str), "the ONNX batch axis must be dynamic"
        assert len(t.dims) == len(onnx_dims) - 1, f"{path}: {t.name} dims exclude the batch axis"
        for got, want in zip(t.dims, onnx_dims[1:], strict=True):
            if isinstance(want, int):
                assert got == want, f"{path}: {t.name} dims {list(t.dims)} vs ONNX {onnx_dims}"
            else:  # dynamic in the graph: -1 or a tile size the U-Net accepts (multiple of 8)
                assert got == -1 or (got > 0 and got % 8 == 0), f"{path}: {t.name} {got}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_onnx_runs_at_config_shape(path: Path, model_folder: Path) -> None:
    """The ONNX graph accepts the config's input shape and returns the config's output shape."""
    config = _parse(path)
    size = 64  # for -1 dims; small keeps the test fast
    in_dims = [2, *(d if d > 0 else size for d in config.input[0].dims)]
    sess = ort.InferenceSession(
        str(model_folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.zeros(in_dims, np.float32)
    (logits,) = sess.run([config.output[0].name], {config.input[0].name: x})
    want = [2, *(d if d > 0 else size for d in config.output[0].dims)]
    assert list(logits.shape) == want


def test_gpu_config() -> None:
    gpu = _parse(ROOT / "model_repository/autophagy_unet/config.pbtxt")
    assert gpu.backend == "onnxruntime"
    assert gpu.HasField("dynamic_batching")
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (acc,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert gpu.model_warmup, "readiness should wait for a warm engine"
    trt = _parse(ROOT / "model_repository/autophagy_unet_trt/config.pbtxt")
    assert trt.platform == "tensorrt_plan"
    assert [g.kind for g in trt.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert list(trt.input[0].dims) == list(gpu.input[0].dims)
    cpu = _parse(ROOT / "model_repository/autophagy_unet_cpu/config.pbtxt")
    assert [t.name for t in cpu.input] == [t.name for t in gpu.input]


def test_typo_fails_to_parse(tmp_path: Path) -> None:
    text = (ROOT / "model_repository/autophagy_unet/config.pbtxt").read_text()
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text.replace("max_batch_size", "max_batch_sise"), mc.ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text.replace("KIND_GPU", "KIND_GPUS"), mc.ModelConfig())


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_trt_plan_script_caches_per_gpu(tmp_path: Path, model_folder: Path) -> None:
    """The init-container script calls trtexec with the profile and reuses the cached plan.

    trtexec and nvidia-smi are stand-ins (no GPU or TensorRT here) that record their arguments.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    _stub(
        bin_dir / "trtexec",
        f'if [[ "$1" == --help ]]; then echo "[TensorRT v100500]"; exit 0; fi\n'
        f'echo "$@" >> {calls}\n'
        'for a in "$@"; do case "$a" in\n'
        '  --saveEngine=*) echo plan > "${a#--saveEngine=}";;\n'
        "esac; done\n",
    )
    _stub(bin_dir / "nvidia-smi", 'echo "${FAKE_GPU:-NVIDIA H100 80GB HBM3}"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cache = tmp_path / "cache"

    def build(out: Path, gpu: str) -> str:
        r = subprocess.run(
            [str(BUILD_TRT), str(model_folder / "model.onnx"), str(out), str(cache)],
            env={**env, "FAKE_GPU": gpu},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        assert (out / "model.plan").read_text() == "plan\n"
        return r.stdout

    assert "building" in build(tmp_path / "r1/autophagy_unet_trt/1", "NVIDIA H100 80GB HBM3")
    assert "cache hit" in build(tmp_path / "r2/autophagy_unet_trt/1", "NVIDIA H100 80GB HBM3")
    assert "building" in build(tmp_path / "r3/autophagy_unet_trt/1", "NVIDIA L4")
    lines = calls.read_text().splitlines()
    assert len(lines) == 2, lines
    assert "--fp16" in lines[0] and "--maxShapes=input:64x2x256x256" in lines[0]
    assert sorted(p.name for p in cache.iterdir()) == ["NVIDIA_H100_80GB_HBM3", "NVIDIA_L4"]


def test_build_trt_plan_script_fails_clearly(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BUILD_TRT), str(tmp_path / "missing.onnx"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "no ONNX model" in r.stderr
