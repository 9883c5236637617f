"""LlamaIndex: `SidecarRerank`, a node postprocessor that reranks with the sidecar, images included.

    from connectors.frameworks.llamaindex import SidecarRerank

    rerank = SidecarRerank(target="127.0.0.1:50051", top_n=5)
    engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[rerank])

A node is scored on its content (`metadata_mode`, default none: the text alone) plus its images:
an `ImageNode`'s `image_url` / `image_path` / base64 `image`, and the reference(s) under
`metadata[image_key]` (an http(s) URL, a `data:` URI or a path under the sidecar's
`--media-root`; bytes or a `Path` are sent inline). A `QueryBundle` with an `image_path` is an
image query. Nodes come back as `NodeWithScore` with the sidecar's score, best first;
`apostprocess_nodes` uses the asyncio client.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from connectors.frameworks.items import ImageRef, resolve_client, sidecar_item

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "connectors.frameworks.llamaindex needs LlamaIndex: pip install 'rerank-sidecar[llamaindex]'"
    ) from exc


class SidecarRerank(BaseNodePostprocessor):
    """Rerank LlamaIndex nodes (text and images) with the sidecar; keep the best `top_n`."""

    target: str = Field(default="127.0.0.1:50051", description="the sidecar's gRPC address")
    top_n: int = Field(default=2, description="nodes kept (LlamaIndex's CohereRerank default: 2)")
    image_key: str | None = Field(default="image", description="metadata key holding image reference(s)")
    metadata_mode: MetadataMode = Field(default=MetadataMode.NONE, description="node content scored as text")
    instruction: str | None = Field(default=None, description="the reranker's task instruction")
    timeout: float | None = Field(default=None, description="seconds per call (default: the client's)")
    _sync: Any = PrivateAttr(default=None)
    _async: Any = PrivateAttr(default=None)

    def __init__(self, *, client: Any = None, async_client: Any = None, **fields: Any) -> None:
        """`client` / `async_client`: `sidecar.client` clients (TLS, keys, replicas); else one to `target`."""
        super().__init__(**fields)
        self._sync, self._async = client, async_client

    @classmethod
    def class_name(cls) -> str:
        return "SidecarRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        response = self._client(asynchronous=False).rerank(
            self._query(query_bundle), self._items(nodes), **self._options()
        )
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in response.results]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        client = self._client(asynchronous=True)
        response = await client.rerank(self._query(query_bundle), self._items(nodes), **self._options())
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in response.results]

    def _client(self, asynchronous: bool) -> Any:
        """The given client, or one opened to `target` on first use."""
        if asynchronous:
            self._async = self._async or resolve_client(None, self.target, asynchronous=True)
            return self._async
        self._sync = self._sync or resolve_client(None, self.target, asynchronous=False)
        return self._sync

    def _query(self, query_bundle: QueryBundle | None) -> dict:
        if query_bundle is None:
            raise ValueError("SidecarRerank needs a query: pass query_str or query_bundle")
        images = [Path(query_bundle.image_path)] if query_bundle.image_path else []
        return {"text": query_bundle.query_str, "images": images}

    def _items(self, nodes: list[NodeWithScore]) -> list[dict]:
        return [
            sidecar_item(
                scored.node.get_content(metadata_mode=self.metadata_mode),
                scored.node.metadata,
                self.image_key,
                f"nodes[{i}].metadata",
                extra=_node_images(scored.node),
            )
            for i, scored in enumerate(nodes)
        ]

    def _options(self) -> dict[str, Any]:
        return {"top_n": self.top_n, "instruction": self.instruction, "timeout": self.timeout}


def _node_images(node: Any) -> list[ImageRef]:
    """An `ImageNode`'s own image: its URL (resolved by the sidecar), its file, or its base64 bytes."""
    if not isinstance(node, ImageNode):
        return []
    if node.image_url:
        return [node.image_url]
    if node.image_path:
        return [Path(node.image_path)]
    if node.image:
        return [base64.b64decode(node.image)]
    return []
