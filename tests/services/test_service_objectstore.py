"""The object store's retry rules against a real HTTP server that answers an HTML 500.

moto answered exactly this to a PUT interrupted by an S3 outage (found by
``test_s3_stalled_mid_upload_no_loss``); it crashed the ingest service until a non-XML 5xx was
treated as transient like a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phagoflow.services.objectstore import ObjectStore, StoreUnavailable


class _Html500(BaseHTTPRequestHandler):
    calls = 0

    def _answer(self) -> None:
        type(self).calls += 1
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = b"<!doctype html><title>500 Internal Server Error</title>"
        self.send_response(500)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def html500() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html500)  # port 0: the OS picks
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_html_500_is_retried_then_reported_unavailable(html500: str) -> None:
    _Html500.calls = 0
    store = ObjectStore(html500, "x", "y", bucket="phagoflow", retries=3, backoff_s=0.01)
    with pytest.raises(StoreUnavailable, match="S3 unavailable after 3 attempts"):
        store.put_bytes("raw/P/r01c01/r01c01f01p01/dsred.tiff", b"pixels")
    assert _Html500.calls >= 3  # every attempt reached the server
