"""Start ``reidx serve``: check the address (loopback unless ``--public``), bind it, load once, run uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from reidx.console import err_console
from reidx.device import Devices
from reidx.errors import ReidxError
from reidx.options import option


@dataclass(frozen=True)
class ServeOptions:
    """Where ``reidx serve`` listens and which gallery images it hands out."""

    host: str = option("127.0.0.1", "Address to listen on (loopback unless --public).")
    port: int = option(8000, "TCP port (0: any free one).", minimum=0, maximum=65535)
    public: bool = option(False, "Allow a --host beyond this machine (e.g. 0.0.0.0).")
    image_roots: tuple[Path, ...] = option(
        (),
        "Serve gallery images only from this folder (default: those embed recorded); repeatable.",
        flag="--image-root",
        metavar="DIR",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, public: bool) -> None:
    """Refuse to listen beyond this machine unless ``public`` was asked for."""
    if not public and not is_loopback(host):
        raise ReidxError(
            f"--host {host} would serve the gallery beyond this machine",
            "add --public (behind a reverse proxy with TLS and authentication), or keep --host 127.0.0.1",
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); a taken port is one ReidxError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose proto says TCP, and without
    # it each keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ReidxError(f"cannot listen on {host}:{port}: {exc.strerror}", "pass another --port or --host") from None
    sock.listen(128)
    return sock


def serve(
    gallery_dir: Path,
    model_file: Path | None,
    devices: Devices,
    options: ServeOptions = ServeOptions(),
    min_score: float | None = None,
) -> None:
    """Bind the address, load the index and its model once, and answer requests until interrupted (``min_score``:
    the default threshold of a search); gallery images only from ``options.image_roots`` when given, else from the
    folders the index header records."""
    host, image_roots = options.host, options.image_roots
    check_host(host, options.public)
    for root in image_roots:
        if not root.is_dir():
            raise ReidxError(f"--image-root {root} is not a folder", "name the folder that holds the gallery images")
    sock = bind(host, options.port)
    import uvicorn  # after the address checks, which need neither uvicorn nor torch

    from reidx.gallery.directory import HEADER_NAME
    from reidx.retrieval.search import open_gallery
    from reidx.service.app import create_app

    gallery, embedder = open_gallery(gallery_dir, model_file, devices)
    app = create_app(gallery, embedder, min_score, image_roots=image_roots)
    if not image_roots and not gallery.header.image_roots:
        err_console.print(
            f"note: {gallery.directory / HEADER_NAME} records no image folders (an index of an older reidx), so "
            "gallery images are not served; re-embed it with this reidx or pass --image-root DIR",
            highlight=False,
            soft_wrap=True,
        )
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"serving {len(gallery)} gallery entries of {gallery_dir} ({embedder.model_name}, {embedder.runtime}) at "
        f"http://{shown}:{sock.getsockname()[1]}/  (Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
