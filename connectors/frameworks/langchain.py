"""LangChain: `SidecarRerank`, a document compressor that reranks with the sidecar, images included.

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from connectors.frameworks.langchain import SidecarRerank

    rerank = SidecarRerank(target="127.0.0.1:50051", top_n=5, image_key="image")
    retriever = ContextualCompressionRetriever(base_compressor=rerank, base_retriever=store.as_retriever(k=50))
    docs = retriever.invoke("red trail shoes")   # best 5, each with metadata["relevance_score"]

A document is scored on its `page_content` plus the images under `metadata[image_key]` (one
reference or a list: an http(s) URL, a `data:` URI or a path under the sidecar's `--media-root`;
bytes or a `Path` are sent inline). Documents come back as copies with their metadata and
`relevance_score` (as LangChain's CohereRerank puts it), best first. `acompress_documents` uses the
asyncio client. Pass `client` / `async_client` (`sidecar.client`) for TLS, keys or several replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from connectors.frameworks.items import resolve_client, sidecar_item

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "connectors.frameworks.langchain needs LangChain: pip install 'rerank-sidecar[langchain]'"
    ) from exc


class SidecarRerank(BaseDocumentCompressor):
    """Rerank LangChain documents (text and images) with the sidecar; keep the best `top_n`."""

    target: str = "127.0.0.1:50051"  # the sidecar's gRPC address (used when no client is given)
    top_n: int | None = 3  # documents kept; None keeps all (LangChain's CohereRerank default: 3)
    image_key: str | None = "image"  # metadata key holding a document's image reference(s)
    score_key: str = "relevance_score"  # metadata key the score is written to
    instruction: str | None = None  # the reranker's task instruction (default: the model's)
    timeout: float | None = None  # seconds per call (default: the client's)
    client: Any = None  # a sidecar.client.RerankerClient
    async_client: Any = None  # a sidecar.client.AsyncRerankerClient

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _sync: Any = PrivateAttr(default=None)
    _async: Any = PrivateAttr(default=None)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best `top_n` documents for `query`, best first, each with its score in its metadata."""
        if not documents:
            return []
        response = self._client(asynchronous=False).rerank(query, self._items(documents), **self._options())
        return self._ranked(documents, response)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """`compress_documents` over the asyncio client."""
        if not documents:
            return []
        response = await self._client(asynchronous=True).rerank(query, self._items(documents), **self._options())
        return self._ranked(documents, response)

    def _client(self, asynchronous: bool) -> Any:
        """The given client, or one opened to `target` on first use."""
        if asynchronous:
            self._async = self._async or resolve_client(self.async_client, self.target, asynchronous=True)
            return self._async
        self._sync = self._sync or resolve_client(self.client, self.target, asynchronous=False)
        return self._sync

    def _items(self, documents: Sequence[Document]) -> list[dict]:
        return [
            sidecar_item(doc.page_content, doc.metadata, self.image_key, f"documents[{i}].metadata")
            for i, doc in enumerate(documents)
        ]

    def _options(self) -> dict[str, Any]:
        return {"top_n": self.top_n or 0, "instruction": self.instruction, "timeout": self.timeout}

    def _ranked(self, documents: Sequence[Document], response) -> list[Document]:
        ranked = []
        for result in response.results:
            source = documents[result.index]
            metadata = {**deepcopy(source.metadata), self.score_key: result.score}
            ranked.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
        return ranked
