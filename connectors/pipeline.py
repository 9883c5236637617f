"""`search_and_rerank()`: first stage in the engine, second stage in the sidecar.

    from sidecar.client import RerankerClient
    from connectors import FieldMapping, search_and_rerank
    from connectors.qdrant import QdrantConnector

    sidecar = RerankerClient("127.0.0.1:50051")
    products = QdrantConnector(qdrant, "products", FieldMapping(text_fields=("title", "body"), image_fields="image"))
    for hit in search_and_rerank(products, "red running shoes", top_k=100, top_n=10, mode="hybrid",
                                 rerank_client=sidecar):
        print(hit.rank, hit.id, hit.rerank_score, hit.first_stage_rank)

The query is text (str), an image (bytes, pathlib.Path, or an http(s)/data:/file:// URL string), or a
dict {"text": ..., "images": [...]}. Dense and hybrid modes embed all of it (text and images together)
with the sidecar's Embed RPC unless `query_vector` is given; BM25 uses its text; the reranker sees
all of it. Each document goes to the reranker as its mapped text plus its image references, which
the sidecar resolves (http(s) URLs, data: URIs, paths under its --media-root).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from connectors.base import Connector, Hit, SearchMode
from connectors.errors import SidecarCallError, sidecar_error
from connectors.experiment import Arm, Experiment
from sidecar.client import AsyncRerankerClient, LongDocuments, RerankerClient, to_item

log = logging.getLogger("connectors")

QueryLike = str | bytes | Path | Mapping[str, Any]
FailurePolicy = Literal["raise", "first_stage"]
_IMAGE_URL = re.compile(r"(?:https?|file)://\S+|data:image/\S+", re.IGNORECASE)
_max_documents: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


@dataclass
class RerankedHit:
    """One result of `search_and_rerank`.

    Attributes:
        id: document id.
        fields: stored fields returned by the engine.
        image_refs: image references sent to the sidecar (as stored, before `image_uri`).
        text: document text sent to the sidecar.
        first_stage_score: the engine's score; first_stage_rank: 1-based engine position.
        rerank_score: sidecar relevance in [0, 1]; rerank_logit: its unbounded logit
            (both None when not reranked).
        rank: 1-based final position (in an experiment: the served position).
        reranked: False when the sidecar failed and `on_rerank_failure="first_stage"` kept the
            engine's order.
        arm: in an experiment, the arm that served this hit; None otherwise.
        chunk_span: with `long_documents="chunk"`, the `[start, end)` span of `text` (code
            points) whose window gave the score: the passage that matched. None otherwise.
    """

    id: str | int
    fields: dict[str, Any]
    image_refs: list[str]
    text: str
    first_stage_score: float
    first_stage_rank: int
    rerank_score: float | None
    rerank_logit: float | None
    rank: int
    reranked: bool
    chunk_span: tuple[int, int] | None = None
    arm: str | None = None


@dataclass(frozen=True)
class Query:
    """A normalised query: text and images (bytes, Path, or reference strings)."""

    text: str = ""
    images: tuple[str | bytes | Path, ...] = ()

    def item(self) -> dict[str, Any]:
        """The query as a `sidecar.client` item."""
        return {"text": self.text, "images": list(self.images)}


def parse_query(query: QueryLike) -> Query:
    """Accept text, an image (bytes, Path, URL string) or a dict {text, images}."""
    if isinstance(query, Mapping):
        unknown = set(query) - {"text", "images"}
        if unknown:
            raise ValueError(f"unknown query keys {sorted(unknown)}; use text and images")
        images = query.get("images") or ()
        images = (images,) if isinstance(images, (str, bytes, Path)) else tuple(images)
        parsed = Query(text=str(query.get("text") or ""), images=images)
    elif isinstance(query, (bytes, Path)):
        parsed = Query(images=(query,))
    elif isinstance(query, str):
        parsed = Query(images=(query,)) if _IMAGE_URL.fullmatch(query.strip()) else Query(text=query)
    else:
        raise TypeError(f"cannot use {type(query).__name__} as a query; use str, bytes, Path or a dict")
    if not parsed.text.strip() and not parsed.images:
        raise ValueError("the query is empty: give text or an image")
    return parsed


def search_and_rerank(
    connector: Connector,
    query: QueryLike,
    *,
    top_k: int = 100,
    top_n: int | None = 10,
    mode: SearchMode = "dense",
    filter: Any = None,
    instruction: str | None = None,
    long_documents: LongDocuments = "truncate",
    max_tokens_per_doc: int = 0,
    chunk_overlap: int = 0,
    rerank_client: RerankerClient,
    embed_client: RerankerClient | None = None,
    query_vector: Sequence[float] | None = None,
    on_rerank_failure: FailurePolicy = "raise",
    embed_instruction: str | None = None,
    timeout: float | None = None,
    experiment: Experiment | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
) -> list[RerankedHit]:
    """Retrieve `top_k` candidates from `connector`, rerank them in the sidecar, return the best `top_n`.

    Args:
        connector: the collection to search (e.g. `QdrantConnector`, `MilvusConnector`).
        query: text, image (bytes, Path, URL string) or {"text", "images"}.
        top_k: first-stage candidates (all are reranked; requests are split at the sidecar's
            max_documents).
        top_n: results returned; None returns every candidate.
        mode: "dense" (kNN on the query embedding), "bm25" (lexical; needs query text) or
            "hybrid" (both fused by the engine; needs query text).
        filter: engine-native filter passed through (Qdrant Filter/dict, Milvus expression).
        instruction: reranker instruction (default: the model's).
        long_documents: "truncate" (the reference rule) or "chunk": long texts are scored in
            overlapping windows and each hit keeps its best window's score and `chunk_span`.
        max_tokens_per_doc: text tokens per document (or per window when chunking); 0 = what fits.
        chunk_overlap: tokens consecutive windows share when chunking (0 = an eighth of a window).
        rerank_client: `sidecar.client.RerankerClient` of the reranking sidecar.
        embed_client: client for the Embed RPC; default `rerank_client`.
        query_vector: skip Embed and use this vector for dense/hybrid.
        on_rerank_failure: "raise" (`RerankUnavailableError` / `SidecarCallError`) or
            "first_stage" (return the engine's order, `reranked=False`, and log a warning).
        embed_instruction: Embed instruction for the query (default: the model's).
        timeout: per-RPC deadline in seconds (default: the client's).
        experiment: run an online experiment (`connectors.Experiment`): A/B serves the user's arm,
            interleaving merges every arm's ranking; the result is an `ExperimentResult` with `query_id`,
            and each hit says its `arm` (its `rank` is its served position). Arms that share top_k and mode
            share one first-stage search.
        user_id / session_id: who is served: A/B assigns arms by it (one is required there); logged as the
            UBI client_id (hashed unless the experiment says otherwise).

    Raises:
        ValueError: bad arguments, or a mode the collection cannot serve.
        EngineError: the engine failed.
        EmbedUnavailableError / SidecarCallError: the query could not be embedded.
        RerankUnavailableError / SidecarCallError: reranking failed and the policy is "raise".
    """
    parsed = _prepare(connector, query, top_k, top_n, mode, on_rerank_failure)
    options = {
        "long_documents": long_documents,
        "max_tokens_per_doc": max_tokens_per_doc,
        "chunk_overlap": chunk_overlap,
    }
    call = _Call(top_k, mode, filter, instruction, rerank_client, embed_client or rerank_client, query_vector,
                 embed_instruction, timeout, on_rerank_failure, options)  # fmt: skip
    if experiment is None:
        return _rank(connector, parsed, _first_stage(connector, parsed, call), call, top_n)
    stages: dict[tuple[int, str], list[Hit]] = {}
    ranked = {}
    for arm in experiment.arms_for(_user(user_id, session_id)):
        arm_call = call.for_arm(arm)
        key = (arm_call.top_k, arm_call.mode)
        if key not in stages:
            connector.check_mode(arm_call.mode)
            stages[key] = _first_stage(connector, parsed, arm_call)
        ranked[arm.name] = _rank(connector, parsed, stages[key], arm_call, None)
    return experiment.serve(ranked, top_n=top_n, user_query=parsed.text, user_id=_user(user_id, session_id))


def _first_stage(connector: Connector, parsed: Query, call: _Call) -> list[Hit]:
    vector = call.query_vector
    if call.mode != "bm25" and vector is None:
        client = call.embed_client
        try:
            response = client.embed([parsed.item()], **_embed_args(connector, call.embed_instruction, call.timeout))
        except grpc.RpcError as exc:
            raise sidecar_error(exc, client.target, "embed") from exc
        vector = _one_vector(response, client.target)
    return connector.search(parsed.text or None, vector, call.top_k, call.mode, call.filter)


def _rank(connector: Connector, parsed: Query, hits: list[Hit], call: _Call, top_n: int | None) -> list[RerankedHit]:
    if not hits:
        return []
    if not call.rerank:
        return _first_stage_order(hits, top_n)
    client = call.rerank_client
    documents, query_item = _documents(connector, hits), to_item(parsed.item())  # image files read once
    try:
        limit = _max_documents.get(client) or _remember_limit(client, client.model_info(call.timeout))
        scored = []
        for start in range(0, len(documents), limit):
            batch = documents[start : start + limit]
            response = client.rerank(
                query_item, batch, instruction=call.instruction, timeout=call.timeout, **call.options
            )
            scored += _scored(response, start)
    except grpc.RpcError as exc:
        error = sidecar_error(exc, client.target, "rerank")
        if call.on_rerank_failure == "raise":
            raise error from exc
        return _fallback(hits, top_n, error)
    return _combine(hits, scored, top_n)


async def asearch_and_rerank(
    connector: Connector,
    query: QueryLike,
    *,
    top_k: int = 100,
    top_n: int | None = 10,
    mode: SearchMode = "dense",
    filter: Any = None,
    instruction: str | None = None,
    long_documents: LongDocuments = "truncate",
    max_tokens_per_doc: int = 0,
    chunk_overlap: int = 0,
    rerank_client: AsyncRerankerClient,
    embed_client: AsyncRerankerClient | None = None,
    query_vector: Sequence[float] | None = None,
    on_rerank_failure: FailurePolicy = "raise",
    embed_instruction: str | None = None,
    timeout: float | None = None,
    experiment: Experiment | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
) -> list[RerankedHit]:
    """`search_and_rerank` for asyncio, with `sidecar.client.AsyncRerankerClient` (same arguments).

    The engine search runs through `connector.asearch` (a worker thread unless the connector
    has a native async client).
    """
    parsed = _prepare(connector, query, top_k, top_n, mode, on_rerank_failure)
    options = {
        "long_documents": long_documents,
        "max_tokens_per_doc": max_tokens_per_doc,
        "chunk_overlap": chunk_overlap,
    }
    call = _Call(top_k, mode, filter, instruction, rerank_client, embed_client or rerank_client, query_vector,
                 embed_instruction, timeout, on_rerank_failure, options)  # fmt: skip
    if experiment is None:
        return await _arank(connector, parsed, await _afirst_stage(connector, parsed, call), call, top_n)
    stages: dict[tuple[int, str], list[Hit]] = {}
    ranked = {}
    for arm in experiment.arms_for(_user(user_id, session_id)):
        arm_call = call.for_arm(arm)
        key = (arm_call.top_k, arm_call.mode)
        if key not in stages:
            connector.check_mode(arm_call.mode)
            stages[key] = await _afirst_stage(connector, parsed, arm_call)
        ranked[arm.name] = await _arank(connector, parsed, stages[key], arm_call, None)
    return experiment.serve(ranked, top_n=top_n, user_query=parsed.text, user_id=_user(user_id, session_id))


async def _afirst_stage(connector: Connector, parsed: Query, call: _Call) -> list[Hit]:
    vector = call.query_vector
    if call.mode != "bm25" and vector is None:
        client = call.embed_client
        try:
            args = _embed_args(connector, call.embed_instruction, call.timeout)
            response = await client.embed([parsed.item()], **args)
        except grpc.RpcError as exc:
            raise sidecar_error(exc, client.target, "embed") from exc
        vector = _one_vector(response, client.target)
    return await connector.asearch(parsed.text or None, vector, call.top_k, call.mode, call.filter)


async def _arank(
    connector: Connector, parsed: Query, hits: list[Hit], call: _Call, top_n: int | None
) -> list[RerankedHit]:
    if not hits:
        return []
    if not call.rerank:
        return _first_stage_order(hits, top_n)
    client = call.rerank_client
    documents, query_item = _documents(connector, hits), to_item(parsed.item())  # image files read once
    try:
        limit = _max_documents.get(client) or _remember_limit(client, await client.model_info(call.timeout))
        scored = []
        for start in range(0, len(documents), limit):
            batch = documents[start : start + limit]
            response = await client.rerank(
                query_item, batch, instruction=call.instruction, timeout=call.timeout, **call.options
            )
            scored += _scored(response, start)
    except grpc.RpcError as exc:
        error = sidecar_error(exc, client.target, "rerank")
        if call.on_rerank_failure == "raise":
            raise error from exc
        return _fallback(hits, top_n, error)
    return _combine(hits, scored, top_n)


@dataclass(frozen=True)
class _Call:
    """One call's settings for its first stage and rerank; an experiment arm overrides some of them."""

    top_k: int
    mode: str
    filter: Any
    instruction: str | None
    rerank_client: Any
    embed_client: Any
    query_vector: Sequence[float] | None
    embed_instruction: str | None
    timeout: float | None
    on_rerank_failure: str
    options: dict[str, Any]
    rerank: bool = True

    def for_arm(self, arm: Arm) -> _Call:
        return dataclasses.replace(
            self,
            rerank=arm.rerank,
            rerank_client=arm.rerank_client or self.rerank_client,
            instruction=arm.instruction if arm.instruction is not None else self.instruction,
            top_k=arm.top_k or self.top_k,
            mode=arm.mode or self.mode,
        )


def _user(user_id: str | None, session_id: str | None) -> str | None:
    """The id an experiment assigns arms by and logs: the user id, else the session id."""
    if (
        user_id is not None
        and not isinstance(user_id, str)
        or session_id is not None
        and not isinstance(session_id, str)
    ):
        raise TypeError("user_id and session_id must be strings")
    return user_id or session_id


def _first_stage_order(hits: list[Hit], top_n: int | None) -> list[RerankedHit]:
    kept = hits[:top_n] if top_n else hits
    return [_result(h, position, None, None) for position, h in enumerate(kept, start=1)]


def _prepare(connector: Connector, query: QueryLike, top_k: int, top_n: int | None, mode: str, policy: str) -> Query:
    """Check everything that can be checked before any network call."""
    connector.check_mode(mode)
    if policy not in ("raise", "first_stage"):
        raise ValueError(f"on_rerank_failure must be 'raise' or 'first_stage'; got {policy!r}")
    if top_k < 1 or (top_n is not None and top_n < 1):
        raise ValueError(f"top_k and top_n must be at least 1; got top_k={top_k}, top_n={top_n}")
    parsed = parse_query(query)
    if mode in ("bm25", "hybrid") and not parsed.text.strip():
        raise ValueError(f"mode {mode!r} needs query text; an image-only query can use mode 'dense'")
    return parsed


def _embed_args(connector: Connector, instruction: str | None, timeout: float | None) -> dict[str, Any]:
    return {"instruction": instruction, "dimensions": connector.vector_size or 0, "timeout": timeout}


def _one_vector(response: Any, target: str) -> list[float]:
    if len(response.embeddings) != 1 or not response.embeddings[0].values:
        raise SidecarCallError(target, "embed", None, f"expected one embedding, got {len(response.embeddings)}")
    return list(response.embeddings[0].values)


def _remember_limit(client: Any, info: Any) -> int:
    limit = int(info.max_documents) or 1000
    _max_documents[client] = limit
    return limit


def _documents(connector: Connector, hits: list[Hit]) -> list[dict[str, Any]]:
    mapping = connector.mapping
    return [{"id": str(h.id), "text": h.text, "images": mapping.image_uris(h.image_refs)} for h in hits]


Scored = tuple[int, float, float, "tuple[int, int] | None"]  # hit index, score, logit, chunk span


def _scored(response: Any, start: int) -> list[Scored]:
    """One request's results, with hit indexes counted from `start` (the request's first hit)."""
    return [
        (start + r.index, r.score, r.logit, (r.chunk.start, r.chunk.end) if r.HasField("chunk") else None)
        for r in response.results
    ]


def _combine(hits: list[Hit], scored: list[Scored], top_n: int | None) -> list[RerankedHit]:
    """Order by logit, best first; ties keep first-stage order (as the sidecar orders one request)."""
    scored.sort(key=lambda s: (-s[2], s[0]))
    results = []
    for position, (index, score, logit, span) in enumerate(scored[:top_n] if top_n else scored, start=1):
        results.append(_result(hits[index], position, score, logit, span))
    return results


def _fallback(hits: list[Hit], top_n: int | None, error: SidecarCallError) -> list[RerankedHit]:
    log.warning("returning first-stage order without reranking: %s", error)
    return _first_stage_order(hits, top_n)


def _result(
    hit: Hit, rank: int, score: float | None, logit: float | None, span: tuple[int, int] | None = None
) -> RerankedHit:
    return RerankedHit(
        id=hit.id,
        fields=hit.fields,
        image_refs=hit.image_refs,
        text=hit.text,
        first_stage_score=hit.score,
        first_stage_rank=hit.rank,
        rerank_score=None if score is None else float(score),
        rerank_logit=None if logit is None else float(logit),
        rank=rank,
        reranked=score is not None,
        chunk_span=span,
    )
