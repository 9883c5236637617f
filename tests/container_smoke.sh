#!/usr/bin/env bash
# Build the sidecar images and check them: the CPU server image serves a tiny random model (no hub),
# turns healthy through its own HEALTHCHECK, answers a rerank over HTTP, runs unprivileged and drains
# on stop; the client image runs the loader and web commands. Not part of tests/run.sh: it needs a
# container engine and several GB of disk.
#
#   bash tests/container_smoke.sh [docker|podman]
#
# Environment: PYTHON_IMAGE (base of the client and CPU images, default python:3.12-slim-bookworm),
# TORCH_INDEX_URL (where the CPU server image gets torch, default the CPU wheel index), PORT (host
# port for the HTTP face, default 18080).
set -euo pipefail
engine="${1:-docker}"
cd "$(dirname "$0")/.."
tag="rerank-sidecar-smoke"
port="${PORT:-18080}"
build_args=()
[ -n "${PYTHON_IMAGE:-}" ] && build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
[ -n "${TORCH_INDEX_URL:-}" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
format=()
[ "$engine" = podman ] && format=(--format docker)  # keep the HEALTHCHECK

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; "$engine" logs "$tag-server" 2>&1 | tail -40 >&2 || true; exit 1; }
cleanup() {
    "$engine" rm -f "$tag-server" >/dev/null 2>&1 || true
    "$engine" volume rm -f "$tag-models" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

step "build client and CPU server images"
"$engine" build "${format[@]}" "${build_args[@]}" --target client -t "$tag:client" .
"$engine" build "${format[@]}" "${build_args[@]}" --target server --build-arg VARIANT=cpu -t "$tag:cpu" .

step "client image: commands exist, runs as uid 10001"
"$engine" run --rm "$tag:client" --help >/dev/null
for command in load-catalogue web opensearch-setup; do
    "$engine" run --rm "$tag:client" "$command" --help >/dev/null || fail "client: $command --help"
done
[ "$("$engine" run --rm --entrypoint id "$tag:client" -u)" = 10001 ] || fail "client does not run as uid 10001"

step "server image: tiny model into the models volume, then serve it"
"$engine" volume create "$tag-models" >/dev/null
"$engine" run --rm -v "$tag-models:/models" "$tag:cpu" make-tiny-model /models/tiny-reranker >/dev/null
"$engine" run -d --name "$tag-server" -v "$tag-models:/models" -p "127.0.0.1:$port:8080" "$tag:cpu" \
    serve --host 0.0.0.0 --port 50051 --http-port 8080 --model /models/tiny-reranker --device cpu >/dev/null

healthy=""
for _ in $(seq 1 60); do
    if [ "$engine" = podman ]; then
        # podman runs health checks from systemd timers; without systemd, run the image's check by hand
        "$engine" healthcheck run "$tag-server" >/dev/null 2>&1 && healthy=yes
    else
        [ "$("$engine" inspect --format '{{.State.Health.Status}}' "$tag-server")" = healthy ] && healthy=yes
    fi
    [ -n "$healthy" ] && break
    sleep 2
done
[ -n "$healthy" ] || fail "the server's HEALTHCHECK never passed"
echo "healthy"

[ "$("$engine" exec "$tag-server" id -u)" = 10001 ] || fail "server does not run as uid 10001"
response="$(curl -sS --fail-with-body "http://127.0.0.1:$port/v2/rerank" -H 'content-type: application/json' \
    -d '{"query": "red shoes", "documents": ["red running shoes", "a blue teapot"], "top_n": 2}')" \
    || fail "rerank request: $response"
python3 - "$response" <<'EOF' || fail "rerank response: $response"
import json, sys
results = json.loads(sys.argv[1])["results"]
assert sorted(r["index"] for r in results) == [0, 1], results
assert all(0.0 <= r["relevance_score"] <= 1.0 for r in results), results
print("rerank ok:", results)
EOF

step "stop drains and exits 0"
"$engine" stop -t 30 "$tag-server" >/dev/null
status="$("$engine" inspect --format '{{.State.ExitCode}}' "$tag-server")"
[ "$status" = 0 ] || fail "server exited with $status on stop"
echo "container smoke test passed ($engine)"
