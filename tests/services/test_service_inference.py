"""inference service with a real Triton (nvidia-pytriton's tritonserver, Python backend + ONNX
Runtime) serving model_repository/autophagy_unet_cpu: same CDL masks as `phagoflow run`."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from svc_testing import LocalStack, PlateRun, harmony_files, wait_for
from test_service_cip import _ingest_all

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.services.inference import InferenceService, InferenceSettings
from phagoflow.stack import TritonServer
from unet_testing import random_unet_dir

REPO = Path(__file__).resolve().parents[2] / "model_repository"
MODEL = "autophagy_unet_cpu"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init U-Net folder: exercises the CDL path, not its quality."""
    return random_unet_dir(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def triton(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(
        REPO,
        model_env={"PHAGOFLOW_MODEL_ONNX": str(model_dir / "model.onnx")},
        log_path=tmp_path_factory.mktemp("triton") / "triton.log",
        startup_timeout_s=90,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def cdl_reference(
    sim_plate: SimulatedPlate, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> RunResult:
    return run_plate(
        sim_plate.export_dir,
        tmp_path_factory.mktemp("cdlref"),
        methods=("cdl",),
        model_dir=model_dir,
        progress=False,
    )


def _inference(stack: LocalStack, triton: TritonServer, model_dir: Path, **kw: object) -> Any:
    settings = stack.settings(
        InferenceSettings,
        triton_url=triton.url,
        triton_model=MODEL,
        model_dir=model_dir,
        **kw,
    )
    return InferenceService(settings, http_port=0)


def test_cdl_through_triton_equals_embedded_run(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    triton: TritonServer,
    model_dir: Path,
    cdl_reference: RunResult,
) -> None:
    n = _ingest_all(local_stack, sim_plate)
    svc = local_stack.start(_inference(local_stack, triton, model_dir))
    records = local_stack.read(ev.Topic.MASKS_CDL.value, min_count=n, timeout_s=90)
    assert len(records) == n
    by_name = {o.name: o for o in cdl_reference.outcomes}
    store = local_stack.store()
    for rec in records:
        event = rec.event
        assert isinstance(event, ev.MaskReady)
        assert event.method == ev.Method.METHOD_CDL
        assert (event.model_name, event.model_version) == (MODEL, "1")  # as Triton reports it
        counts = ev.field_counts_from_mask_ready(event)
        ref = by_name[counts.key.name]
        assert counts == ref.counts
        mask = tifffile.imread(io.BytesIO(store.get_bytes(event.mask.key)))
        ref_mask = tifffile.imread(
            cdl_reference.out_dir / "masks" / "cdl" / f"{counts.key.name}.tiff"
        )
        np.testing.assert_array_equal(mask, ref_mask)
    assert svc.backend is not None and svc.backend.requests >= n


@pytest.mark.slow
def test_triton_stalled_with_requests_in_flight(
    local_stack: LocalStack,
    plate6: SimulatedPlate,
    triton: TritonServer,
    model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Triton frozen (SIGSTOP) right after the first CDL mask, while the next field's requests
    are in flight, for 30 s: CIP keeps flowing, inference postpones (timeouts, retries, not
    ready), recovers after SIGCONT, and the plate's counts equal the undisturbed run."""
    reference = run_plate(
        plate6.export_dir,
        tmp_path_factory.mktemp("ref6cdl"),
        methods=("cip", "cdl"),
        model_dir=model_dir,
        progress=False,
    )
    run = PlateRun(local_stack, plate6, methods=("cip", "cdl"))
    run.start_pipeline()
    inference = local_stack.start(
        _inference(
            local_stack,
            triton,
            model_dir,
            triton_timeout_s=1.0,
            triton_retries=2,
            triton_ready_timeout_s=2.0,
        )
    )
    local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    n = len(harmony_files(plate6.export_dir)[1])
    run.feed()
    cdl = {"method": "cdl"}
    wait_for(
        lambda: (
            (inference.registry.get_sample_value("phagoflow_fields_processed_total", cdl) or 0) >= 1
        ),
        timeout_s=90,
        every_s=0.01,
    )
    triton.pause()  # the next field's tiles are on their way to Triton
    paused_at = time.monotonic()
    try:
        wait_for(lambda: run.done("cip") == n, timeout_s=25)  # CIP is not held up by Triton
        stalled = run.done("cdl")
        assert stalled < n
        time.sleep(max(0.0, 30.0 - (time.monotonic() - paused_at)))  # the 30 s
        assert inference.readiness()[0] is False
        assert run.done("cdl") == stalled  # nothing from a frozen Triton
    finally:
        triton.resume()
    run.check(reference)  # every field once, CIP and CDL equal `phagoflow run`, no dead letter
    retries = inference.registry.get_sample_value(
        "phagoflow_records_total",
        {"service": "inference", "topic": ev.Topic.FIELDS_ACQUIRED.value, "outcome": "retry"},
    )
    assert (retries or 0) >= 1
    assert (inference.registry.get_sample_value("phagoflow_triton_unavailable_total") or 0) >= 1
    wait_for(lambda: inference.readiness()[0])
