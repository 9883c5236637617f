"""Haystack: `SidecarRanker`, a ranker component that reranks with the sidecar, images included.

    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from connectors.frameworks.haystack import SidecarRanker

    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component("ranker", SidecarRanker(target="127.0.0.1:50051", top_k=5))
    pipeline.connect("retriever.documents", "ranker.documents")
    result = pipeline.run({"retriever": {"query": q}, "ranker": {"query": q}})

A document is scored on its `content` plus its images: the reference(s) under `meta[image_key]`
(an http(s) URL, a `data:` URI or a path under the sidecar's `--media-root`; bytes or a `Path`
are sent inline) and its `blob` when that is an image. Documents come back as copies with
`score` set, best first; `run_async` uses the asyncio client.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from connectors.frameworks.items import resolve_client, sidecar_item

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("connectors.frameworks.haystack needs Haystack: pip install 'rerank-sidecar[haystack]'") from exc


@component
class SidecarRanker:
    """Rerank Haystack documents (text and images) with the sidecar; keep the best `top_k`."""

    def __init__(
        self,
        *,
        target: str = "127.0.0.1:50051",
        top_k: int = 10,
        image_key: str | None = "image",
        instruction: str | None = None,
        timeout: float | None = None,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        """
        :param target: the sidecar's gRPC address (used when no client is given).
        :param top_k: documents kept (Haystack rankers' default: 10).
        :param image_key: `meta` key holding a document's image reference(s); None: text and blob only.
        :param instruction: the reranker's task instruction (default: the model's).
        :param timeout: seconds per call (default: the client's).
        :param client: a `sidecar.client.RerankerClient` (TLS, keys, replicas); else one to `target`.
        :param async_client: a `sidecar.client.AsyncRerankerClient` for `run_async`.
        """
        if top_k <= 0:
            raise ValueError(f"top_k must be > 0, but got {top_k}")
        self.target, self.top_k, self.image_key = target, top_k, image_key
        self.instruction, self.timeout = instruction, timeout
        self._sync, self._async = client, async_client

    def warm_up(self) -> None:
        """Open the connection to the sidecar once (Haystack calls this before the first run)."""
        self._sync = self._sync or resolve_client(None, self.target, asynchronous=False)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            target=self.target,
            top_k=self.top_k,
            image_key=self.image_key,
            instruction=self.instruction,
            timeout=self.timeout,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SidecarRanker:
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The best `top_k` documents for `query`, best first, each with `score` set."""
        if not documents:
            return {"documents": []}
        self.warm_up()
        response = self._sync.rerank(query, self._items(documents), **self._options(top_k))
        return {"documents": [replace(documents[r.index], score=r.score) for r in response.results]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """`run` over the asyncio client."""
        if not documents:
            return {"documents": []}
        self._async = self._async or resolve_client(None, self.target, asynchronous=True)
        response = await self._async.rerank(query, self._items(documents), **self._options(top_k))
        return {"documents": [replace(documents[r.index], score=r.score) for r in response.results]}

    def _items(self, documents: list[Document]) -> list[dict]:
        return [
            sidecar_item(doc.content or "", doc.meta, self.image_key, f"documents[{i}].meta", extra=_blob_image(doc))
            for i, doc in enumerate(documents)
        ]

    def _options(self, top_k: int | None) -> dict[str, Any]:
        top_k = self.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ValueError(f"top_k must be > 0, but got {top_k}")
        return {"top_n": top_k, "instruction": self.instruction, "timeout": self.timeout}


def _blob_image(document: Document) -> list[bytes]:
    """A document's blob, when it is an image."""
    blob = document.blob
    if blob is not None and (blob.mime_type or "").startswith("image/"):
        return [blob.data]
    return []
