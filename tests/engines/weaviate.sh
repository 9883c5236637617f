#!/usr/bin/env bash
# Build and run a single-node Weaviate on 127.0.0.1 for the test suite. The server is a Go
# module: `install` builds it from the Go module proxy with `go install` (about 5 minutes of CPU
# on 2 cores; the binary, ~170 MB, is cached outside the clone) and nothing else is downloaded.
#
# Usage: tests/engines/weaviate.sh {install|start|stop|status|logs|url|clean}
#
# Environment (see also lib.sh for RERANK_ENGINE_CACHE / RERANK_ENGINE_RUN / RERANK_ENGINE_USER):
#   WEAVIATE_VERSION        module version (default 1.35.2)
#   WEAVIATE_PORT           REST port (default 8090); the other ports follow it:
#   WEAVIATE_GRPC_PORT      gRPC port, used by weaviate-client v4 (default WEAVIATE_PORT + 1)
#   WEAVIATE_GOSSIP_PORT    cluster gossip (default + 2); the cluster data port is gossip + 1 (+ 3)
#   WEAVIATE_RAFT_PORT      Raft (default + 4); its internal RPC port is WEAVIATE_RAFT_PORT + 1 (+ 5)
#   WEAVIATE_MODULES        ENABLE_MODULES (default reranker-cohere: Weaviate's own rerank, pointed
#                           at the sidecar's Cohere route by a collection's base URL)
#   WEAVIATE_HYBRID_POOL    QUERY_HYBRID_MAXIMUM_RESULTS: the least candidates each side of a hybrid
#                           query contributes (Weaviate's default 100; default here 1, so each side
#                           contributes its top `limit`, as hybrid does in the other engines' tests)
#   WEAVIATE_START_TIMEOUT  seconds to wait for /v1/.well-known/ready (default 120)
#
# Binds: REST, gossip and Raft listen on 127.0.0.1 only. Weaviate 1.35 has no setting for the
# address of two listeners, which take every interface: gRPC (WEAVIATE_GRPC_PORT) and the
# cluster data API (gossip + 1). Run it on a host whose firewall keeps those ports private.
# The Go profiler (port 6060 by default) is turned off.
set -euo pipefail

ENGINE_NAME=weaviate
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

WV_VERSION="${WEAVIATE_VERSION:-1.35.2}"
WV_PORT="${WEAVIATE_PORT:-8090}"
WV_GRPC_PORT="${WEAVIATE_GRPC_PORT:-$((WV_PORT + 1))}"
WV_GOSSIP_PORT="${WEAVIATE_GOSSIP_PORT:-$((WV_PORT + 2))}"
WV_RAFT_PORT="${WEAVIATE_RAFT_PORT:-$((WV_PORT + 4))}"
WV_MODULES="${WEAVIATE_MODULES:-reranker-cohere}"
WV_HYBRID_POOL="${WEAVIATE_HYBRID_POOL:-1}"
WV_START_TIMEOUT="${WEAVIATE_START_TIMEOUT:-120}"

INSTALL_DIR="$ENGINE_CACHE/weaviate-$WV_VERSION"
RUN_DIR="$ENGINE_RUN/weaviate"
PID_FILE="$RUN_DIR/weaviate.pid"
CONSOLE_LOG="$RUN_DIR/console.log"
URL="http://127.0.0.1:$WV_PORT"

installed() {
    [[ -x "$INSTALL_DIR/bin/weaviate-server" && -f "$INSTALL_DIR/.installed" ]] \
        && grep -qx "weaviate $WV_VERSION" "$INSTALL_DIR/.installed"
}

cmd_install() {
    if installed; then
        say "already installed: $INSTALL_DIR"
        return 0
    fi
    local go t0 tmp="$INSTALL_DIR.tmp.$$"
    go="$(find_go)"
    t0="$(now_s)"
    rm -rf "$tmp"
    mkdir -p "$tmp/bin"
    say "building weaviate-server $WV_VERSION with $($go version | cut -d' ' -f3) (several minutes)"
    # The module and build caches are Go's own (GOMODCACHE, GOCACHE), outside the clone.
    GOBIN="$tmp/bin" nice -n 10 "$go" install "github.com/weaviate/weaviate/cmd/weaviate-server@v$WV_VERSION" \
        || { rm -rf "$tmp"; die "go install of weaviate-server v$WV_VERSION failed"; }
    printf 'weaviate %s\n' "$WV_VERSION" >"$tmp/.installed"
    rm -rf "$INSTALL_DIR"
    mv "$tmp" "$INSTALL_DIR"
    say "built into $INSTALL_DIR in $(elapsed "$t0")s"
}

# The server process (a child of runuser when we are root).
server_pid() {
    local leader
    leader="$(live_pid "$PID_FILE")"
    [[ -n "$leader" ]] || return 0
    pgrep -n -s "$leader" weaviate-server || printf '%s\n' "$leader"
}

cmd_start() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) at $URL"
        return 0
    fi
    installed || cmd_install
    local port
    for port in "$WV_PORT" "$WV_GRPC_PORT" "$WV_GOSSIP_PORT" "$((WV_GOSSIP_PORT + 1))" "$WV_RAFT_PORT" "$((WV_RAFT_PORT + 1))"; do
        port_free "$port" || die "port $port on 127.0.0.1 is already in use (WEAVIATE_PORT and the ports after it)"
    done

    local t0
    t0="$(now_s)"
    ensure_service_user
    mkdir -p "$RUN_DIR"
    stage_tree "$INSTALL_DIR" "$RUN_DIR/home"
    own_dir "$RUN_DIR/data"
    check_run_dir_access "$RUN_DIR/data"
    rm -f "$PID_FILE"

    say "starting Weaviate $WV_VERSION on $URL (gRPC $WV_GRPC_PORT, modules $WV_MODULES)"
    launch_detached "$CONSOLE_LOG" "$RUN_DIR" env \
        PERSISTENCE_DATA_PATH="$RUN_DIR/data" \
        AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true \
        DEFAULT_VECTORIZER_MODULE=none \
        ENABLE_MODULES="$WV_MODULES" \
        CLUSTER_HOSTNAME=node1 \
        CLUSTER_ADVERTISE_ADDR=127.0.0.1 \
        CLUSTER_BIND_ADDR=127.0.0.1 \
        CLUSTER_GOSSIP_BIND_PORT="$WV_GOSSIP_PORT" \
        CLUSTER_DATA_BIND_PORT="$((WV_GOSSIP_PORT + 1))" \
        RAFT_PORT="$WV_RAFT_PORT" \
        RAFT_INTERNAL_RPC_PORT="$((WV_RAFT_PORT + 1))" \
        RAFT_BOOTSTRAP_EXPECT=1 \
        RAFT_JOIN=node1 \
        GRPC_PORT="$WV_GRPC_PORT" \
        GO_PROFILING_DISABLE=true \
        DISABLE_TELEMETRY=true \
        LIMIT_RESOURCES=true \
        QUERY_DEFAULTS_LIMIT=25 \
        QUERY_HYBRID_MAXIMUM_RESULTS="$WV_HYBRID_POOL" \
        "$RUN_DIR/home/bin/weaviate-server" --host 127.0.0.1 --port "$WV_PORT" --scheme http
    echo "$LAUNCHED_PID" >"$PID_FILE"

    if ! wait_http_ok "$URL/v1/.well-known/ready" "$WV_START_TIMEOUT" "$t0"; then
        show_log_tail "$CONSOLE_LOG" 40
        abort_launch "$PID_FILE"
        exit 1
    fi
    pid="$(server_pid)"
    say "up in $(elapsed "$t0")s: pid $pid, RSS $(rss_mib "$pid") MiB, $URL"
}

cmd_status() {
    report_status "$(server_pid)" "$URL (gRPC 127.0.0.1:$WV_GRPC_PORT)" "$URL/v1/meta"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) stop_pid "$PID_FILE" 60 ;;
    status) cmd_status ;;
    logs) show_log_tail "$CONSOLE_LOG" "${LINES:-100}" ;;
    url) printf '%s\n' "$URL" ;;
    clean) stop_pid "$PID_FILE" 60; rm -rf "$RUN_DIR"; say "removed $RUN_DIR" ;;
    *) echo "usage: $0 {install|start|stop|status|logs|url|clean}" >&2; exit 2 ;;
esac
