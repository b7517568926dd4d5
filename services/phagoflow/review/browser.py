"""Helpers to drive the review app from a real browser (browser test and screenshot script).

:func:`live_server` runs an app with uvicorn in a background thread on a loopback socket bound to
port 0 (the OS picks the port; nothing probes for a free one);
:data:`CHROMIUM_ARGS` and :func:`chromium_path` are the Playwright launch settings used with the
system Chromium (``apt-get install -y chromium``; never ``playwright install``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["CHROMIUM_ARGS", "chromium_path", "live_server"]

#: Flags for a headless Chromium in a container (no sandbox, no GPU, no background traffic).
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def chromium_path() -> str:
    """The Chromium executable: ``$PHAGOFLOW_CHROMIUM`` or ``/usr/bin/chromium``."""
    return os.environ.get("PHAGOFLOW_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def live_server(app: Any, *, timeout: float = 15.0) -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1`` in a thread; yield the base URL.

    The listening socket is bound to port 0 here and handed to uvicorn, so the port is the one
    the OS gave and no other program can take it in between.

    Raises
    ------
    RuntimeError
        The server did not start within ``timeout`` seconds.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="review-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"review server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
