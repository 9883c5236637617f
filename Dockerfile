# syntax=docker/dockerfile:1
# rerank-sidecar images.
#
#   docker build --target server -t rerank-sidecar:gpu .                       # CUDA runtime base, bf16 on GPU
#   docker build --target server --build-arg VARIANT=cpu -t rerank-sidecar:cpu .   # CPU-only torch
#   docker build --target client -t rerank-sidecar:client .                    # loader + web page, no torch
#
# Behind a package mirror: --build-arg TORCH_INDEX_URL=<index> (and PIP_INDEX_URL as usual). Another base:
# --build-arg PYTHON_IMAGE=... / CUDA_IMAGE=... (Debian or Ubuntu with python3 3.11+ and python3-venv).
# With podman or buildah, add --format docker: the OCI image format has no HEALTHCHECK.
#
# The server stage runs `rerank-sidecar serve` as an unprivileged user, binding 0.0.0.0 inside the container
# (publish the ports on 127.0.0.1, as docker-compose.yml does). Model weights go to HF_HOME=/models: mount a
# volume there so they are downloaded once. The health check asks the HTTP face's /ready (503 until the
# models are loaded and warmed up). The source is installed editable from /opt/rerank-sidecar, so the
# bundled catalogue (sidecar/apps/demo_data), the page's static files and opensearch-plugin-config/ are on disk.

ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- bases: Python 3.12 in /opt/venv, and where the matching torch wheels live ------------------------------
FROM ${CUDA_IMAGE} AS base-gpu
ENV DEBIAN_FRONTEND=noninteractive
# gcc and the Python headers: Triton builds its kernel launchers with them when the decoder layers are
# compiled (--compile-layers, on by default on CUDA); without them the sidecar falls back to eager layers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL}

FROM ${PYTHON_IMAGE} AS base-cpu
RUN python -m venv /opt/venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL}

# --- the project's files, one list for both targets ------------------------------------------------------
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY proto /src/proto
COPY connectors /src/connectors
COPY sidecar /src/sidecar
COPY opensearch-plugin-config /src/opensearch-plugin-config

# --- client: `load-catalogue`, `web`, `opensearch-setup` (connectors + page; never imports torch) ------------
FROM ${PYTHON_IMAGE} AS client
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && useradd --uid 10001 --create-home --shell /usr/sbin/nologin sidecar
WORKDIR /opt/rerank-sidecar
COPY --from=source /src/ ./
RUN pip install -e ".[connectors]" "starlette>=0.40,<2" "uvicorn>=0.30,<1"
USER sidecar
WORKDIR /home/sidecar
HEALTHCHECK NONE
ENTRYPOINT ["rerank-sidecar"]
CMD ["--help"]

# --- server: the sidecar (default target) -------------------------------------------------------------------
FROM base-${VARIANT} AS server
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models
# torch first, from the index matching the base (CUDA 12.8 or CPU), so this large layer stays cached.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch>=2.5" "torchvision>=0.20"
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin sidecar \
    && mkdir -p /models && chown sidecar:sidecar /models
WORKDIR /opt/rerank-sidecar
COPY --from=source /src/ ./
RUN pip install -e ".[server,connectors]"
USER sidecar
WORKDIR /home/sidecar
VOLUME ["/models"]
EXPOSE 50051 8080
HEALTHCHECK --interval=15s --timeout=10s --start-period=1800s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=5)"]
ENTRYPOINT ["rerank-sidecar"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051", "--http-port", "8080", "--model", "Qwen/Qwen3-VL-Reranker-2B"]
