"""A model promotion in the middle of a plate: inference follows Triton to the new version.

Real Triton serving two versions of the CPU model from one repository; version 1 serves, the
first CDL masks arrive, version 2 is promoted (``version_policy`` rewritten, Triton reloads and
unloads version 1) while fields are in flight, then the rest of the plate lands. Every field
must get exactly one CDL mask, named by the version that produced it and equal to the embedded
run with that version's model (and its card's normalisation, read from the registry); the
inference service is never restarted.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from svc_testing import LocalStack, copy_into, harmony_files, ingest_service, scan_until
from test_service_cip import _published

from phagoflow import events as ev
from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.simulate import SimulatedPlate, simulate_plate
from phagoflow.core.unet import UNet, UNetConfig
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.registry.store import ModelRegistry
from phagoflow.services.inference import InferenceService, InferenceSettings
from phagoflow.stack import TritonServer
from triton_repo import MODEL, serve_version, versioned_repository, wait_unloaded

pytestmark = pytest.mark.slow


def _model(path: Path, seed: int, favour: int | None, norm: NormalisationConfig) -> Path:
    torch.manual_seed(seed)
    config = UNetConfig(base_channels=4)
    unet = UNet(config).eval()
    if favour is not None:  # tilt the head so the two versions' masks clearly differ
        assert unet.head.bias is not None
        with torch.no_grad():
            unet.head.bias[favour] += 2.0
    save_model_dir(path, unet, config, norm, name=f"v-{seed}")
    return path


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("versions")
    # version 2 also normalises differently: inference must take its card from the registry
    other = NormalisationConfig(low_percentile=5.0, high_percentile=95.0)
    return {
        1: _model(root / "v1", 0, None, NormalisationConfig()),
        2: _model(root / "v2", 1, 1, other),
    }


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlate:
    return simulate_plate(tmp_path_factory.mktemp("sim6"), wells=3, fields=2, seed=5)


@pytest.fixture(scope="module")
def references(
    plate: SimulatedPlate, versions: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RunResult]:
    """``phagoflow run --method cdl`` with each version's model: the masks it must produce."""
    return {
        str(v): run_plate(
            plate.export_dir,
            tmp_path_factory.mktemp(f"ref{v}"),
            methods=("cdl",),
            model_dir=d,
            progress=False,
        )
        for v, d in versions.items()
    }


@pytest.fixture
def triton(versions: dict[int, Path], tmp_path: Path) -> Iterator[tuple[TritonServer, Path]]:
    repo = versioned_repository(tmp_path / "repo", versions, serving=1)
    with TritonServer(repo, log_path=tmp_path / "triton.log", startup_timeout_s=90) as server:
        yield server, repo


def _ingest(stack: LocalStack, plate: SimulatedPlate, names: list[str], total: int) -> None:
    index, fields = harmony_files(plate.export_dir)
    watch = stack.tmp / "incoming"
    copy_into([index, *(f for n in names for f in fields[n])], watch / "p" / "Images")
    svc = ingest_service(stack, watch, ingest_settle_s=0.0)
    try:
        scan_until(svc, lambda: _published(stack, plate.plate_id) >= total, timeout_s=30)
    finally:
        svc.close()


def test_promotion_mid_plate_every_field_gets_a_mask_of_its_version(
    local_stack: LocalStack,
    plate: SimulatedPlate,
    versions: dict[int, Path],
    references: dict[str, RunResult],
    triton: tuple[TritonServer, Path],
) -> None:
    server, repo = triton
    names = sorted(harmony_files(plate.export_dir)[1])
    first, second = names[:3], names[3:]
    registry = ModelRegistry(local_stack.store(), model=MODEL)
    assert [registry.push(versions[v]).version for v in (1, 2)] == [1, 2]
    _ingest(local_stack, plate, first, len(first))
    settings = local_stack.settings(
        InferenceSettings, triton_url=server.url, triton_model=MODEL, model_dir=versions[1]
    )
    svc = local_stack.start(InferenceService(settings, http_port=0))
    thread = next(t for s, t in local_stack.services if s is svc)
    topic = ev.Topic.MASKS_CDL.value
    local_stack.read(topic, min_count=1, timeout_s=60)  # version 1 serves the first fields
    promote = threading.Thread(target=serve_version, args=(repo, 2, server.http_url))
    promote.start()  # while the other first fields are in flight
    promote.join(60)
    wait_unloaded(svc.backend.client, "1")  # type: ignore[union-attr]
    _ingest(local_stack, plate, second, len(names))
    records = local_stack.read(topic, min_count=len(names), timeout_s=90)

    got = {}
    for r in records:
        assert isinstance(r.event, ev.MaskReady)
        name = ev.field_key(r.event.field).name
        assert name not in got, f"{name} got two CDL masks"
        got[name] = r.event
    assert sorted(got) == names  # every field, once
    by_version = {v: [n for n, e in got.items() if e.model_version == v] for v in ("1", "2")}
    assert set(e.model_version for e in got.values()) <= {"1", "2"}
    assert by_version["1"], "no field was served by version 1 before the promotion"
    assert set(second) <= set(by_version["2"])  # after the promotion: the new version only
    store = local_stack.store()
    for name, event in got.items():
        ref = references[event.model_version]
        assert f"/cdl/{event.model_version}/" in event.mask.key  # keyed by its version
        expected = {o.name: o.counts for o in ref.outcomes}[name]
        assert ev.field_counts_from_mask_ready(event) == expected
        mask = tifffile.imread(io.BytesIO(store.get_bytes(event.mask.key)))
        ref_mask = tifffile.imread(ref.out_dir / "masks" / "cdl" / f"{name}.tiff")
        np.testing.assert_array_equal(mask, ref_mask)  # one model per mask, never mixed
    assert svc.segmenter is not None and svc.segmenter.card.normalisation.low_percentile == 5.0
    # followed, not restarted: the same service thread, one switch, ready
    assert thread.is_alive() and svc.readiness()[0]
    assert svc.backend is not None and svc.backend.version == "2" and svc.backend.switches == 1
    assert svc.registry.get_sample_value("phagoflow_model_version_switches_total") == 1
