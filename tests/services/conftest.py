"""Fixtures for the streaming-service tests: a broker per test, a bucket per test, a plate.

Everything is real: tansu speaks the Kafka protocol, moto's server speaks S3. Services run in
threads of the test process (``Service.run_in_thread``) or are driven step by step. Helpers are
in ``svc_testing.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_testing import LocalStack

from phagoflow.core.simulate import SimulatedPlate, simulate_plate
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.stack import MotoS3Server, TansuBroker


@pytest.fixture
def local_stack(
    fresh_broker: TansuBroker, s3_server: MotoS3Server, unique: str, tmp_path: Path
) -> Iterator[LocalStack]:
    stack = LocalStack(fresh_broker, s3_server, f"pf-{unique}", tmp_path)
    s3_server.ensure_buckets([stack.bucket])
    try:
        yield stack
    finally:
        for svc, _ in stack.services:
            svc.stop()
        for _, thread in stack.services:
            thread.join(30)


@pytest.fixture(scope="session")
def sim_plate(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlate:
    """A simulated Harmony V5 plate, 2 wells x 2 fields (read-only: copy it before use)."""
    return simulate_plate(tmp_path_factory.mktemp("sim"), wells=2, fields=2, seed=7)


@pytest.fixture(scope="session")
def reference(sim_plate: SimulatedPlate, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """``phagoflow run`` (the embedded runner, CIP) on the session plate: the reference numbers."""
    return run_plate(sim_plate.export_dir, tmp_path_factory.mktemp("ref"), progress=False)


@pytest.fixture(scope="session")
def plate6(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlate:
    """A simulated plate of 3 wells x 2 fields, for faults injected mid-plate (read-only)."""
    return simulate_plate(tmp_path_factory.mktemp("sim6"), wells=3, fields=2, seed=9)


@pytest.fixture(scope="session")
def reference6(plate6: SimulatedPlate, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """``phagoflow run`` (CIP) on ``plate6``: the undisturbed numbers."""
    return run_plate(plate6.export_dir, tmp_path_factory.mktemp("ref6"), progress=False)
