"""S3 object store adapter (MinIO in production, moto's server locally) with checksums and retries.

Every write returns an :class:`~phagoflow.events.ObjectRef` with the SHA-256 of the bytes and is
verified: the ETag the server returns for a single-part PUT is the MD5 of what it stored, and it
must equal the MD5 of what was sent. Reads given an expected SHA-256 check it.

Errors are split by what a service should do with them:

- :class:`ObjectMissing` and :class:`ChecksumMismatch` are permanent for that input: dead letter;
- :class:`StoreUnavailable` is transient (server down or paused): the request was retried
  ``retries`` times with exponential back-off; do not commit, retry the input later.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import urllib3
    from minio import Minio
    from minio.error import InvalidResponseError, S3Error, ServerError
except ModuleNotFoundError as _exc:  # registry, k8s, review and services need it, run does not
    raise ModuleNotFoundError(
        f"{_exc}: the object store needs the stream extra: pip install 'phagoflow[stream]'",
        name=_exc.name,
    ) from _exc

from phagoflow.events import ObjectRef
from phagoflow.services.common import ServiceSettings

__all__ = [
    "ChecksumMismatch",
    "ObjectMissing",
    "ObjectStore",
    "ObjectStoreError",
    "StoreUnavailable",
    "sha256_hex",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket"})


class ObjectStoreError(RuntimeError):
    """Base of the object-store errors."""


class ObjectMissing(ObjectStoreError):
    """The object (or its bucket) does not exist: permanent for the input that names it."""


class ChecksumMismatch(ObjectStoreError):
    """Stored or read bytes do not match the expected checksum."""


class StoreUnavailable(ObjectStoreError):
    """The store did not answer after the bounded retries: transient, retry the input later."""


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ObjectStore:
    """One bucket of an S3 server.

    Parameters
    ----------
    endpoint : str
        ``host:port``.
    access_key, secret_key : str
        Credentials.
    bucket : str
        Bucket name.
    secure : bool
        HTTPS.
    region : str
        Region name.
    retries : int
        Attempts per request (>= 1).
    backoff_s : float
        First back-off, doubled per attempt, capped at 5 s.
    timeout_s : float
        Connect and read timeout of one request.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(total=0, raise_on_status=False),
            maxsize=8,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self.bucket = bucket
        self.retries = retries
        self.backoff_s = backoff_s

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ObjectStore:
        """The store described by the ``PHAGOFLOW_S3_*`` / ``PHAGOFLOW_BUCKET`` settings."""
        return cls(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            bucket=settings.bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            retries=settings.s3_retries,
            backoff_s=settings.s3_retry_backoff_s,
            timeout_s=settings.s3_timeout_s,
        )

    # ------------------------------------------------------------------ retry core

    def _call(self, what: str, func: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                return func()
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    raise ObjectMissing(f"{what}: {exc.code} ({self.bucket})") from exc
                if attempt == self.retries or exc.code in ("AccessDenied", "InvalidAccessKeyId"):
                    raise StoreUnavailable(f"{what}: S3 error {exc.code}: {exc.message}") from exc
                err: Exception = exc
            except ChecksumMismatch:
                if attempt == self.retries:
                    raise
                err = ChecksumMismatch(what)
            except (
                urllib3.exceptions.HTTPError,
                OSError,
                ServerError,
                InvalidResponseError,
            ) as exc:
                # ServerError / InvalidResponseError: a 5xx, or a non-XML answer (moto answered
                # an HTML 500 to a PUT interrupted by an outage): transient, like a timeout
                if attempt == self.retries:
                    raise StoreUnavailable(
                        f"{what}: S3 unavailable after {self.retries} attempts: {exc}"
                    ) from exc
                err = exc
            logger.warning(
                "S3 %s failed (attempt %d/%d): %s; retrying in %.1f s",
                what,
                attempt,
                self.retries,
                err,
                delay,
            )
            time.sleep(delay)
            delay = min(max(delay * 2, 0.1), 5.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ operations

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""

        def _do() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        self._call(f"ensure bucket {self.bucket}", _do)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectRef:
        """Store ``data`` under ``key`` (overwriting) and verify what the server stored.

        Parameters
        ----------
        sha256 : str, optional
            Checksum the caller computed when it read the bytes; checked before upload.

        Raises
        ------
        ChecksumMismatch
            ``data`` does not match ``sha256``, or the server stored other bytes (after retries).
        StoreUnavailable
            The server did not answer.
        """
        digest = sha256_hex(data)
        if sha256 is not None and sha256 != digest:
            raise ChecksumMismatch(f"{key}: bytes changed since read ({sha256} != {digest})")
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()

        def _do() -> None:
            result = self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={"sha256": digest},
            )
            etag = (result.etag or "").strip('"')
            if etag != md5:
                raise ChecksumMismatch(f"put {key}: server ETag {etag} != MD5 {md5} of the bytes")

        self._call(f"put {key}", _do)
        return ObjectRef(bucket=self.bucket, key=key, sha256=digest, size_bytes=len(data))

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        """Read an object; with ``sha256`` the bytes are verified.

        Raises
        ------
        ObjectMissing
            No such object.
        ChecksumMismatch
            The stored bytes differ from ``sha256``.
        StoreUnavailable
            The server did not answer.
        """

        def _do() -> bytes:
            resp: Any = self.client.get_object(self.bucket, key)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        data = self._call(f"get {key}", _do)
        if sha256 is not None and sha256_hex(data) != sha256:
            raise ChecksumMismatch(f"get {key}: SHA-256 {sha256_hex(data)} != expected {sha256}")
        return data

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self._call(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        except ObjectMissing:
            return False
        return True

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursive), sorted."""

        def _do() -> list[str]:
            objs = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(str(o.object_name) for o in objs)

        return self._call(f"list {prefix}", _do)

    def put_json(self, key: str, doc: Any) -> ObjectRef:
        """Store a JSON document (sorted keys, UTF-8)."""
        data = json.dumps(doc, sort_keys=True, indent=1, default=str).encode()
        return self.put_bytes(key, data, content_type="application/json")

    def get_json(self, key: str) -> Any | None:
        """A JSON document, or ``None`` when the object does not exist."""
        try:
            return json.loads(self.get_bytes(key))
        except ObjectMissing:
            return None
