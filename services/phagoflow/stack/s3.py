"""A local S3 server for development and tests: moto's server, run as its own process.

No MinIO server can be installed on the development and CI machines, so the local stack uses
``moto[server]``, a real S3 HTTP server that the ``minio`` client works against (buckets,
put/get, list, multipart). Production and the Helm chart use real MinIO. moto keeps objects in
memory: :meth:`MotoS3Server.restart` loses them; :meth:`~ManagedProcess.pause` /
:meth:`~ManagedProcess.resume` keep them and are the way to simulate "S3 unavailable for a few
seconds".
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, ClassVar

from phagoflow.stack.process import ManagedProcess

__all__ = ["MotoS3Server"]


class MotoS3Server(ManagedProcess):
    """moto's S3 server (``python -m moto.server``) on loopback.

    Parameters
    ----------
    access_key, secret_key : str
        Credentials clients use; moto accepts any, they exist so that clients sign requests.
    region : str
        Region reported to clients.
    **kwargs
        :class:`~phagoflow.stack.process.ManagedProcess` options (``host``, ``port``,
        ``log_path``, ``startup_timeout_s``, ``attached``, ``env``).
    """

    name: ClassVar[str] = "s3"
    # moto reads these; inherited values would point it at another account or real AWS.
    scrub_env: ClassVar[tuple[str, ...]] = ("AWS_ENDPOINT_URL", "MOTO_CALL_RESET_API")

    def __init__(
        self,
        *,
        access_key: str = "phagoflow",
        secret_key: str = "phagoflow-secret",
        region: str = "us-east-1",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region

    #: ``host:port``, the endpoint form the ``minio`` client takes (:attr:`url` is
    #: ``http://127.0.0.1:PORT``).
    endpoint = ManagedProcess.address

    def command(self) -> list[str]:
        """``python -m moto.server -H HOST -p PORT`` with this interpreter (PORT may be 0)."""
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.bind_port)]

    def is_ready(self) -> bool:
        """moto's management API answers HTTP."""
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return True  # an HTTP answer of any kind: the server is up
        except OSError:
            return False

    def minio_client(self) -> Any:
        """A ``minio.Minio`` client for this server (plain HTTP)."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            secure=False,
        )

    def ensure_buckets(self, names: Iterable[str]) -> list[str]:
        """Create the buckets that do not exist yet; returns those created."""
        client = self.minio_client()
        created = []
        for name in names:
            if not client.bucket_exists(name):
                client.make_bucket(name)
                created.append(name)
        return created
