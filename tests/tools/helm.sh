#!/usr/bin/env bash
# Build a real `helm` from the Go module proxy once, cached outside the clone, and print its path.
# The chart tests (tests/deploy/) lint and render deploy/helm/rerank-sidecar with it.
#   bash tests/tools/helm.sh            # ~1.5 min on 2 cores the first time, instant after
# Environment: RERANK_TOOLS_CACHE (default ~/.cache/rerank-sidecar/tools), HELM_VERSION (default v3.22.0).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${RERANK_TOOLS_CACHE:-$HOME/.cache/rerank-sidecar/tools}"
HELM="$CACHE/helm-$HELM_VERSION/helm"

if [ ! -x "$HELM" ]; then
    command -v go >/dev/null || { echo "helm.sh: Go is needed to build helm $HELM_VERSION" >&2; exit 1; }
    echo "== building helm $HELM_VERSION into $(dirname "$HELM") (cached)" >&2
    mkdir -p "$(dirname "$HELM")"
    GOBIN="$(dirname "$HELM")" GOFLAGS=-mod=mod nice -n 10 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi
"$HELM" version --short >&2
echo "$HELM"
