"""An ASGI app served for real: uvicorn in a thread on a free loopback port (the tests' HTTP server)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn

from reidx.service.server import bind


@contextlib.contextmanager
def serving(app, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
