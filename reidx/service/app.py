"""The search API over one opened gallery and its model: uploaded crops in, ``reidx search --json`` out.

Uploads are decoded by :mod:`reidx.images` (formats, EXIF, modes, the ``REIDX_MAX_PIXELS`` limit) outside
the model lock; the embedding and the index search of one request run under it, so concurrent requests
are answered one at a time by the one model and index, each with its own result. Every error is one line
of JSON, ``{"error": ..., "fix": ...}``, with a 4xx status for the client's mistakes (every numeric field
checked: finite, and integers within int64), and the connection stays open after any of them, a 500
included. Gallery images are handed out only from the image roots (:mod:`reidx.service.files`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePath
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException

from reidx import __version__
from reidx.checkpoint import LoadedModel
from reidx.errors import ReidxError, one_line
from reidx.evaluation.embed import embed_images
from reidx.evaluation.embedders import Embedder, as_embedder
from reidx.gallery import Gallery, GalleryFilter
from reidx.gallery.directory import HEADER_NAME
from reidx.images import image_from_bytes
from reidx.retrieval.search import SearchRequest, rank_vectors
from reidx.service.files import GalleryFiles, Unavailable

#: Hits one query may ask for.
MAX_TOP_K = 1000
#: A pid or camid field: an integer the metadata's int64 columns can hold.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


@dataclass(frozen=True)
class Limits:
    """What one request may send: its body in bytes and its number of images."""

    body_bytes: int = 20 * 2**20
    images: int = 64


def error(status: int, message: str, fix: str) -> JSONResponse:
    """The one-line JSON error every failure is answered with."""
    return JSONResponse({"error": message, "fix": fix}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before anything parses it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self.too_large()(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > self.limit:
                await self.too_large()(scope, receive, send)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def too_large(self) -> JSONResponse:
        return error(
            413,
            f"the request body is over the server's limit of {self.limit:,} bytes",
            "send fewer or smaller images (person crops are a few kB each)",
        )


class KeepServing:
    """ASGI middleware: an unexpected exception is answered with a one-line 500 and the connection kept open
    (Starlette's last-resort handler answers too, but then re-raises, and the server drops the connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:  # part of an answer went out: nothing consistent can follow on this connection
                raise
            reason = one_line(exc)
            fix = "the server keeps running; report this with the request"
            await error(500, f"internal error: {reason}", fix)(scope, receive, send)


def first_problem(exc: RequestValidationError) -> str:
    """The first validation problem as ``field: reason``."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
    return f"{field}: {first['msg']}" if field else str(first["msg"])


def create_app(
    gallery: Gallery,
    model: LoadedModel | Embedder,
    min_score: float | None = None,
    limits: Limits = Limits(),
    image_roots: Sequence[str | Path] = (),
) -> FastAPI:
    """The FastAPI app answering searches of ``gallery`` with ``model``, the model that embedded it: a loaded
    checkpoint, or an embedder (its checkpoint in torch, or its ``reidx export`` file in onnxruntime).
    Gallery images come only from ``image_roots`` when given, else from the roots the index header records."""
    model = as_embedder(model, gallery.header.mode)
    app = FastAPI(title="reidx serve", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=limits.body_bytes)
    app.add_middleware(KeepServing)
    if image_roots:
        files = GalleryFiles(image_roots, "--image-root")
    else:
        files = GalleryFiles(gallery.header.image_roots, str(gallery.directory / HEADER_NAME))
    page = resources.files("reidx.service").joinpath("page.html").read_text(encoding="utf-8")
    lock = threading.Lock()
    default_min_score = min_score  # the endpoint's own min_score field shadows it
    paths = gallery.columns["path"]
    # the gallery does not change while it is served: its counts are taken once, not per /health request
    identities = len(np.unique(gallery.columns["pid"]))
    cameras = [int(camid) for camid in np.unique(gallery.columns["camid"])]
    answered = {"searches": 0, "queries": 0}

    @app.exception_handler(ReidxError)
    async def user_error(request: Request, exc: ReidxError) -> JSONResponse:
        return error(400, exc.message, exc.fix or "check the request")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, first_problem(exc), "see the fields of POST /search in GET /openapi.json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), "see GET /openapi.json for the routes")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    def health() -> dict:
        """The model, the index and their counts."""
        return {
            "status": "ok",
            "reidx_version": __version__,
            "model": {
                "name": model.model_name,
                "checkpoint": str(model.source),
                "sha256": model.checkpoint_sha256,
                "mode": gallery.header.mode,
                "input_size": list(gallery.header.input_size),
                "runtime": model.runtime,
                "device": model.device,
            },
            "index": {
                "directory": str(gallery.directory),
                "type": gallery.header.index_type,
                "backend": gallery.record.backend,
                "dim": gallery.header.dim,
                "on_gpu": gallery.on_gpu,
                "image_roots": [str(root) for root in files.roots],
            },
            "counts": {
                "entries": len(gallery),
                "identities": identities,
                "cameras": cameras,
                **answered,
            },
            "min_score": min_score,
            "limits": {"body_bytes": limits.body_bytes, "images": limits.images, "top_k": MAX_TOP_K},
        }

    @app.post("/search")
    def search(
        images: Annotated[list[UploadFile], File(description="Query crops (JPEG, PNG, BMP, ...), any size.")],
        top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K, description="Results per query.")] = 10,
        min_score: Annotated[
            float | None,
            Form(
                allow_inf_nan=False,
                description="Cosine similarity under which 'not in gallery' (default: the server's; refused with "
                "rerank, whose scores are distances; the server's default does not apply to re-ranked results).",
            ),
        ] = None,
        camera: Annotated[list[Int64] | None, Form(description="Only gallery entries of these camids.")] = None,
        pid: Annotated[list[Int64] | None, Form(description="Only gallery entries of these pids.")] = None,
        other_cameras: Annotated[bool, Form(description="Only other cameras than the query's.")] = False,
        query_camera: Annotated[Int64 | None, Form(description="The queries' camid (default: names).")] = None,
        nprobe: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="ivfpq lists visited per query.")] = None,
        rerank: Annotated[bool, Form(description="Exact k-reciprocal re-ranking (scores: distances).")] = False,
        k1: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="rerank: k1 (the stored graph's).")] = None,
        k2: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="rerank: k2 (the stored graph's).")] = None,
        lam: Annotated[float, Form(alias="lambda", ge=0, le=1, description="rerank: lambda.")] = 0.3,
        query_expansion: Annotated[
            int, Form(ge=0, le=MAX_TOP_K, description="Average query expansion: K nearest (0: off).")
        ] = 0,
    ) -> JSONResponse:
        """Rank the gallery for each uploaded image: the same JSON as ``reidx search --json``."""
        if len(images) > limits.images:
            return error(413, f"{len(images)} images in one request, over the limit of {limits.images}", "split it")
        names = [PurePath(upload.filename or f"upload-{i}").name for i, upload in enumerate(images)]
        decoded = [image_from_bytes(upload.file.read(), name) for upload, name in zip(images, names, strict=True)]
        filters = GalleryFilter.of(camera, pid, other_cameras)
        request = SearchRequest(top_k, nprobe, filters, None, query_camera, rerank, k1, k2, lam, query_expansion)
        threshold = min_score if min_score is not None or rerank else default_min_score
        with lock:
            vectors = embed_images(model, decoded, gallery.header.mode)
            results = rank_vectors(gallery, vectors, names, request)
            answered["searches"] += 1
            answered["queries"] += len(results)
        return JSONResponse([result.judged(threshold).to_dict() for result in results])

    @app.get("/gallery/{entry}/image", response_model=None)
    def gallery_image(entry: int) -> Response:
        """The crop of gallery entry ``entry`` (a row of the index metadata, the ``index_id`` of a hit), when it
        is an image file inside the image roots; any other entry is one JSON line (403, or 404 when gone)."""
        if not 0 <= entry < len(paths):
            raise HTTPException(404, f"no gallery entry {entry} (the index has {len(paths)}: 0..{len(paths) - 1})")
        try:
            image = files.read(entry, str(paths[entry]))
        except Unavailable as refused:
            return error(refused.status, refused.message, refused.fix)
        return Response(image.data, media_type=image.media_type)

    return app
