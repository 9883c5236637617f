"""Multimodal reranking sidecar: Qwen3-VL-Reranker (and Qwen3-VL-Embedding) behind gRPC.

Importing this package is cheap: torch and transformers load only with the model backend
(`sidecar.models`), so the client (`sidecar.client`) runs without a GPU stack.
"""

__version__ = "0.1.0"
