"""moto's S3 server with the minio client: buckets, put/get, outage by pause."""

from __future__ import annotations

import hashlib
import io
import urllib.request

import pytest

from phagoflow.stack import MotoS3Server


def test_put_get_object_with_minio(s3_server: MotoS3Server, unique: str) -> None:
    bucket = f"phagoflow-{unique}"
    assert s3_server.ensure_buckets([bucket]) == [bucket]
    assert s3_server.ensure_buckets([bucket]) == []  # idempotent
    client = s3_server.minio_client()
    data = bytes(range(256)) * 1000
    key = "raw/P1/r01c02/r01c02f03p01/dsred.tiff"
    client.put_object(bucket, key, io.BytesIO(data), len(data))
    resp = client.get_object(bucket, key)
    try:
        got = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert [o.object_name for o in client.list_objects(bucket, prefix="raw/", recursive=True)] == [
        key
    ]
    assert s3_server.url == f"http://127.0.0.1:{s3_server.port}"


def test_pause_makes_s3_unavailable_and_resume_keeps_objects(
    s3_server: MotoS3Server, unique: str
) -> None:
    bucket = f"outage-{unique}"
    s3_server.ensure_buckets([bucket])
    client = s3_server.minio_client()
    client.put_object(bucket, "k", io.BytesIO(b"kept"), 4)
    s3_server.pause()
    try:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{s3_server.url}/{bucket}/k", timeout=0.5)
    finally:
        s3_server.resume()
    s3_server.wait_ready(5)
    resp = client.get_object(bucket, "k")
    try:
        assert resp.read() == b"kept"
    finally:
        resp.close()
        resp.release_conn()
