"""The search page's ASGI app: static page, catalogue images, `/api/config`, `/api/search` (and the experiment
mode's `/api/events` and `/api/experiment`, see `sidecar.apps.web.experiment`).

`POST /api/search` takes JSON `{"engine", "mode", "text", "image" (a data: URI or null), "top_k", "show"}`,
runs `connectors.search_and_rerank` on that engine's connector with every candidate reranked, and answers
both orders (first stage and reranked) with titles, image URLs, both scores, each hit's rank change, and
the wall time of each stage (query embedding, first-stage search, rerank) plus the sidecar's own timings.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sidecar.apps.demo_data import DATA_DIR, load_catalogue

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_TOP_K = 100


@dataclass
class WebBackend:
    """What the page searches: a sidecar client and one connector per engine (all on the same catalogue)."""

    client: Any  # sidecar.client.RerankerClient
    connectors: dict[str, Any]  # engine name -> connectors.Connector
    title_field: str = "title"
    label: str = ""  # shown in the header, e.g. "embedded Milvus Lite, tiny random models"
    examples: list[dict[str, str]] = field(default_factory=list)
    experiment: Any = None  # sidecar.apps.web.experiment.WebExperiment: the page's experiment mode (None: off)


class _Timed:
    """Per-request proxy timing one method of a shared object (a connector's search, a client's RPCs)."""

    def __init__(self, target: Any, seconds: dict[str, float], names: dict[str, str]) -> None:
        self._target, self._seconds, self._names = target, seconds, names

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        stage = self._names.get(name)
        if stage is None or not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - start

        return timed


def image_url(ref: str) -> str:
    """Where the browser loads a stored image reference: catalogue paths from this app, URLs as they are."""
    if ref.startswith(("http://", "https://", "data:")):
        return ref
    return "/media/" + ref.lstrip("/")


def decode_image(data_uri: str) -> bytes:
    """Bytes of an uploaded image sent as a data: URI (or bare base64); ValueError when it is not one."""
    payload = data_uri.split(",", 1)[1] if data_uri.startswith("data:") else data_uri
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image is not valid base64") from None
    if not raw:
        raise ValueError("the image is empty")
    if len(raw) > MAX_IMAGE_BYTES:
        raise ValueError(f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    return raw


def _row(hit: Any, title_field: str, score: float | None, rank: int) -> dict[str, Any]:
    refs = list(hit.image_refs)
    return {
        "id": str(hit.id), "title": str(hit.fields.get(title_field) or hit.text.split("\n", 1)[0] or hit.id),
        "image": image_url(refs[0]) if refs else None, "score": score, "rank": rank,
        "first_stage_score": hit.first_stage_score, "first_stage_rank": hit.first_stage_rank,
        "rerank_score": hit.rerank_score, "change": hit.first_stage_rank - hit.rank,
    }  # fmt: skip


def run_search(backend: WebBackend, body: dict[str, Any]) -> dict[str, Any]:
    """One page query, synchronously (call it in a worker thread): both orders and per-stage milliseconds."""
    from connectors import search_and_rerank

    engine = str(body.get("engine") or next(iter(backend.connectors)))
    if engine not in backend.connectors:
        raise ValueError(f"unknown engine {engine!r}; this page serves {', '.join(backend.connectors)}")
    text = str(body.get("text") or "").strip()
    image = decode_image(body["image"]) if body.get("image") else None
    mode = str(body.get("mode") or ("hybrid" if text else "dense"))
    top_k, show = int(body.get("top_k") or 20), int(body.get("show") or 10)
    if not 1 <= top_k <= MAX_TOP_K or show < 1:
        raise ValueError(f"top_k must be 1..{MAX_TOP_K} and show at least 1")
    query: Any = {"text": text, "images": [image]} if image is not None and text else image if image else text
    seconds: dict[str, float] = {}
    client = _Timed(backend.client, seconds, {"embed": "embed", "rerank": "rerank"})
    connector = _Timed(backend.connectors[engine], seconds, {"search": "search"})
    start = time.perf_counter()
    if body.get("experiment"):
        if backend.experiment is None:
            raise ValueError("this page runs no experiment (start it with --experiment-db FILE)")
        served = search_and_rerank(connector, query, top_k=top_k, top_n=show, mode=mode, rerank_client=client,  # type: ignore[arg-type]
                                   experiment=backend.experiment.experiment, session_id=str(body.get("session_id") or "anonymous"))  # fmt: skip
        return {
            "engine": engine, "mode": mode, "query_id": served.query_id, "experiment": served.experiment,
            "interleaved": [{**_row(h, backend.title_field, h.rerank_score, h.rank), "arm": h.arm} for h in served],
            "timings_ms": {stage: round(s * 1000, 1) for stage, s in {**seconds, "total": time.perf_counter() - start}.items()},
        }  # fmt: skip
    hits = search_and_rerank(connector, query, top_k=top_k, top_n=None, mode=mode, rerank_client=client)  # type: ignore[arg-type]
    total = time.perf_counter() - start
    first = sorted(hits, key=lambda h: h.first_stage_rank)[:show]
    reranked = sorted(hits, key=lambda h: h.rank)[:show]
    return {
        "engine": engine, "mode": mode, "candidates": len(hits),
        "first_stage": [_row(h, backend.title_field, h.first_stage_score, h.first_stage_rank) for h in first],
        "reranked": [_row(h, backend.title_field, h.rerank_score, h.rank) for h in reranked],
        "timings_ms": {stage: round(s * 1000, 1) for stage, s in {**seconds, "total": total}.items()},
    }  # fmt: skip


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(backend: WebBackend | Callable[[], WebBackend]) -> Starlette:
    """The page's app over `backend` (or a callable returning it, resolved on first use)."""
    holder: dict[str, WebBackend] = {}

    def current() -> WebBackend:
        if "backend" not in holder:
            holder["backend"] = backend() if callable(backend) else backend
        return holder["backend"]

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def config(request: Request) -> JSONResponse:
        from connectors.base import MODES

        b = await run_in_threadpool(current)
        engines = [
            {"name": name, "modes": [m for m in MODES if m in c.supported_modes]} for name, c in b.connectors.items()
        ]
        return JSONResponse({"engines": engines, "label": b.label, "examples": b.examples,
                             "experiment": b.experiment.name if b.experiment else None})  # fmt: skip

    async def search(request: Request) -> JSONResponse:
        from connectors.errors import ConnectorError

        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            b = await run_in_threadpool(current)
            return JSONResponse(await run_in_threadpool(run_search, b, body))
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, str(exc))
        except (ConnectorError, grpc.RpcError) as exc:
            return _error(502, str(exc))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def events(request: Request) -> JSONResponse:
        from sidecar.experiments.errors import ExperimentError

        b = await run_in_threadpool(current)
        if b.experiment is None:
            return _error(404, "this page runs no experiment (start it with --experiment-db FILE)")
        try:
            body = await request.json()
            return JSONResponse({"recorded": await run_in_threadpool(b.experiment.record, body)})
        except (ValueError, ExperimentError) as exc:  # ExperimentError is a ValueError; JSON errors too
            return _error(422 if isinstance(exc, ExperimentError) else 400, str(exc))

    async def experiment_report(request: Request) -> JSONResponse:
        b = await run_in_threadpool(current)
        if b.experiment is None:
            return _error(404, "this page runs no experiment (start it with --experiment-db FILE)")
        return JSONResponse(await run_in_threadpool(b.experiment.report))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/api/config", config, methods=["GET"]),
        Route("/api/search", search, methods=["POST"]),
        Route("/api/events", events, methods=["POST"]),
        Route("/api/experiment", experiment_report, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Mount("/media/images", StaticFiles(directory=DATA_DIR / "images"), name="images"),
        Mount("/media/queries", StaticFiles(directory=DATA_DIR / "queries"), name="queries"),
    ]
    return Starlette(routes=routes)


def catalogue_examples() -> list[dict[str, str]]:
    """The demo's built-in queries as page examples: {"text"} or {"image": URL under /media}."""
    examples = []
    for q in load_catalogue().queries:
        if q.image is not None:
            examples.append({"image": image_url(str(q.image.relative_to(DATA_DIR))), "note": q.note})
        else:
            examples.append({"text": q.text})
    return examples
