"""Triton Python-backend model: the phagoflow U-Net's model.onnx run with ONNX Runtime (CPU).

Triton's Python-backend stub drops PYTHONPATH, so the folders holding numpy and onnxruntime come
from ``PHAGOFLOW_TRITON_SITE_PACKAGES``. numpy must be < 2 (with numpy 2 the backend returns empty
output tensors). See config.pbtxt for the other settings.
"""

from __future__ import annotations

import json
import os
import sys

for _folder in reversed(os.environ.get("PHAGOFLOW_TRITON_SITE_PACKAGES", "").split(os.pathsep)):
    if _folder and _folder not in sys.path:
        sys.path.insert(0, _folder)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    """input (N, 2, H, W) float32 → logits (N, 3, H, W) float32."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        param = config.get("parameters", {}).get("onnx_model", {}).get("string_value", "")
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.environ.get("PHAGOFLOW_MODEL_ONNX") or param or os.path.join(here, "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"model.onnx not found: {path!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("PHAGOFLOW_TRITON_THREADS", "1"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.path = path

    def execute(self, requests: list) -> list:  # type: ignore[type-arg]
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            try:
                x = np.asarray(x, dtype=np.float32)  # no copy when already float32
                y = self.session.run([self.output_name], {self.input_name: x})
                out = pb_utils.Tensor("logits", np.ascontiguousarray(y[0], dtype=np.float32))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # one bad request must not fail the batch
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                    )
                )
        return responses
