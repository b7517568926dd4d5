#!/usr/bin/env bash
# Build the TensorRT plan of the serving U-Net on the GPU node (init container of the Triton pod).
#
# TensorRT engines are specific to the GPU model and the TensorRT version, so the plan is built
# where it runs, from the registry's model.onnx, and cached per GPU type: the cache key is
# <gpu name>/<tensorrt version>/<sha256 of model.onnx>, so a pod restarted on the same GPU type
# reuses the plan and a new model or another GPU builds a new one.
#
# Usage: build-trt-plan.sh MODEL_ONNX OUT_VERSION_DIR [CACHE_DIR]
#   MODEL_ONNX       the serving version's model.onnx (downloaded by the previous init container)
#   OUT_VERSION_DIR  <repository>/autophagy_unet_trt/<N>; model.plan is written there
#   CACHE_DIR        plan cache (a PVC); default $TRT_PLAN_CACHE or /trt-cache
# Environment: TRT_MAX_BATCH (64), TRT_OPT_BATCH (12, one field of 680 x 512), TRT_TILE (256),
#   TRT_PRECISION (fp16 | fp32; default fp16), TRTEXEC (default: trtexec on PATH, else the
#   Triton image's /usr/src/tensorrt/bin/trtexec).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 MODEL_ONNX OUT_VERSION_DIR [CACHE_DIR]" >&2
    exit 2
fi
onnx="$1"
out_dir="$2"
cache_root="${3:-${TRT_PLAN_CACHE:-/trt-cache}}"
max_batch="${TRT_MAX_BATCH:-64}"
opt_batch="${TRT_OPT_BATCH:-12}"
tile="${TRT_TILE:-256}"
precision="${TRT_PRECISION:-fp16}"

[[ -f "${onnx}" ]] || { echo "build-trt-plan: no ONNX model at ${onnx}" >&2; exit 1; }
trtexec="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
[[ -x "${trtexec}" ]] || { echo "build-trt-plan: trtexec not found (${trtexec})" >&2; exit 1; }

gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr -d '\n' | tr -c 'A-Za-z0-9._-' '_')"
[[ -n "${gpu}" ]] || { echo "build-trt-plan: no GPU visible (nvidia-smi)" >&2; exit 1; }
trt_version="$("${trtexec}" --help 2>&1 | sed -n 's/.*TensorRT version: *\([0-9.]*\).*/\1/p;s/.*\[TensorRT v\([0-9]*\)\].*/\1/p' | head -n1)"
trt_version="${trt_version:-unknown}"
sha="$(sha256sum "${onnx}" | cut -c1-16)"
key="${gpu}/trt-${trt_version}/${sha}-${precision}-b${max_batch}-t${tile}"
cached="${cache_root}/${key}/model.plan"

mkdir -p "${out_dir}"
if [[ -s "${cached}" ]]; then
    echo "build-trt-plan: cache hit ${key}"
else
    echo "build-trt-plan: building ${key}"
    mkdir -p "$(dirname "${cached}")"
    flags=()
    [[ "${precision}" == "fp16" ]] && flags+=(--fp16)
    "${trtexec}" \
        --onnx="${onnx}" \
        --saveEngine="${cached}.tmp" \
        --minShapes="input:1x2x${tile}x${tile}" \
        --optShapes="input:${opt_batch}x2x${tile}x${tile}" \
        --maxShapes="input:${max_batch}x2x${tile}x${tile}" \
        --skipInference \
        "${flags[@]}"
    mv "${cached}.tmp" "${cached}"  # atomic: a killed build never leaves a half plan in the cache
fi
cp "${cached}" "${out_dir}/model.plan"
echo "build-trt-plan: ${out_dir}/model.plan"
