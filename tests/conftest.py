"""Fixtures shared by test packages: real local servers (tansu, moto's S3 server) and names.

The servers are *attached*: they are stopped at the end of the session (or test), and die with
the pytest process even if it is killed. Each runs on a free loopback port; its log is kept
under pytest's temporary directory (quoted in any startup error).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from phagoflow import events as ev
from phagoflow.stack import MotoS3Server, TansuBroker


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A tansu broker shared by the session (in-memory: use unique topic or group names)."""
    broker = TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    with broker:
        yield broker


@pytest.fixture
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A tansu broker of its own (starts in ~0.03 s) with the pipeline topics created.

    The pipeline topic names are fixed, so tests that run services need a broker each.
    """
    broker = TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    with broker:
        ev.create_topics(broker.bootstrap_servers, partitions=3)
        yield broker


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """moto's S3 server shared by the session (use unique bucket names)."""
    server = MotoS3Server(log_path=tmp_path_factory.mktemp("s3") / "s3.log")
    with server:
        yield server


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and bucket names (lower case, S3-safe)."""
    return uuid.uuid4().hex[:10]
