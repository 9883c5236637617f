"""The demo search page: one query, first-stage and reranked results side by side, per-stage times.

`sidecar.apps.web.app` is the ASGI app (Starlette; plain HTML/JS/CSS under `static/`, no build step);
`sidecar.apps.web.cli` serves it with uvicorn, either against running engines and a sidecar
(`rerank-sidecar web`, the compose `web` service) or embedded (`rerank-sidecar demo --web`: a sidecar
subprocess and a Milvus Lite index of the bundled catalogue). Neither imports torch.
"""
