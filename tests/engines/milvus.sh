#!/usr/bin/env bash
# Install and run the real Milvus 2.3 standalone server (C++/Go binaries shipped in the
# PyPI package `milvus`) on 127.0.0.1 for the test suite. Dense vectors only; for BM25 /
# full-text use milvus-lite. The server runs in its own empty network namespace and
# only 127.0.0.1:$MILVUS_PORT is relayed to it (see milvus_server.py for why).
#
# Usage: tests/engines/milvus.sh {install|start|stop|status|logs|url|clean}
#
# Environment (see also lib.sh for RERANK_ENGINE_CACHE / RERANK_ENGINE_RUN):
#   MILVUS_VERSION        PyPI version of `milvus` (default 2.3.5, the newest that installs)
#   MILVUS_PORT           gRPC/REST port on 127.0.0.1 (default 19531)
#   MILVUS_ISOLATE        1 (default): network namespace + relay; 0: plain process whose
#                         proxy listens on MILVUS_PORT and other ports on all interfaces
#   MILVUS_START_TIMEOUT  seconds to wait for the server (default 180)
#   MILVUS_PYTHON         Python used to create the venv (default python3)
set -euo pipefail

ENGINE_NAME=milvus
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

MV_VERSION="${MILVUS_VERSION:-2.3.5}"
MV_PORT="${MILVUS_PORT:-19531}"
MV_ISOLATE="${MILVUS_ISOLATE:-1}"
MV_START_TIMEOUT="${MILVUS_START_TIMEOUT:-180}"

VENV="$ENGINE_CACHE/milvus-venv"
BIN_DIR="$ENGINE_CACHE/milvus-$MV_VERSION/bin"
RUN_DIR="$ENGINE_RUN/milvus"
PID_FILE="$RUN_DIR/milvus_server.pid"
CONSOLE_LOG="$RUN_DIR/console.log"
URL="http://127.0.0.1:$MV_PORT"

installed() {
    [[ -x "$VENV/bin/python" && -x "$BIN_DIR/milvus" && -f "$BIN_DIR/.installed" ]] \
        && grep -qx "milvus $MV_VERSION" "$BIN_DIR/.installed"
}

cmd_install() {
    if installed; then
        say "already installed: $BIN_DIR"
        return 0
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating $VENV"
        "${MILVUS_PYTHON:-python3}" -m venv "$VENV"
    fi
    say "pip install milvus==$MV_VERSION"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "milvus==$MV_VERSION"
    say "unpacking server binaries"
    "$VENV/bin/python" "$SCRIPT_DIR/milvus_server.py" extract --bin-dir "$BIN_DIR"
    printf 'milvus %s\n' "$MV_VERSION" >"$BIN_DIR/.installed"
    say "installed into $BIN_DIR"
}

cmd_start() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) at $URL"
        return 0
    fi
    installed || cmd_install
    port_free "$MV_PORT" || die "port $MV_PORT on 127.0.0.1 is already in use"

    local t0 extra=()
    t0="$(now_s)"
    [[ "$MV_ISOLATE" == 1 ]] || extra+=(--no-isolate)
    mkdir -p "$RUN_DIR"
    rm -f "$RUN_DIR/ready" "$PID_FILE"
    say "starting Milvus $MV_VERSION on 127.0.0.1:$MV_PORT (isolate=$MV_ISOLATE)"
    # Runs as the invoking user: Milvus does not refuse root, and namespaces need it
    # (or a user namespace, which milvus_server.py asks for when not root).
    (
        cd "$RUN_DIR"
        exec setsid "$VENV/bin/python" "$SCRIPT_DIR/milvus_server.py" run \
            --bin-dir "$BIN_DIR" --run-dir "$RUN_DIR" --port "$MV_PORT" \
            --start-timeout "$MV_START_TIMEOUT" "${extra[@]}" \
            </dev/null >"$CONSOLE_LOG" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local deadline=$(($(date +%s) + MV_START_TIMEOUT + 10))
    while [[ ! -f "$RUN_DIR/ready" ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "Milvus exited during startup"
            show_log_tail "$CONSOLE_LOG" 20
            show_log_tail "$RUN_DIR/milvus/logs/milvus-stdout.log" 50
            rm -f "$PID_FILE"
            exit 1
        fi
        if (($(date +%s) > deadline)); then
            say "Milvus not ready within ${MV_START_TIMEOUT}s"
            show_log_tail "$RUN_DIR/milvus/logs/milvus-stdout.log" 50
            stop_pid "$PID_FILE" 30
            exit 1
        fi
        sleep 0.5
    done
    say "up in $(elapsed "$t0")s: supervisor pid $pid, server RSS $(server_rss) MiB, $URL"
}

# RSS of the milvus binary (child of the supervisor).
server_rss() {
    local sup child
    sup="$(live_pid "$PID_FILE")"
    [[ -n "$sup" ]] || { echo 0; return; }
    child="$(awk '{print $1}' "/proc/$sup/task/$sup/children" 2>/dev/null)"
    [[ -n "$child" ]] && rss_mib "$child" || echo 0
}

cmd_stop() {
    stop_pid "$PID_FILE" 45
    rm -f "$RUN_DIR/ready"
}

cmd_status() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -z "$pid" ]]; then
        say "not running"
        return 3
    fi
    if [[ ! -f "$RUN_DIR/ready" ]]; then
        say "starting (supervisor pid $pid)"
        return 1
    fi
    say "running: supervisor pid $pid, server RSS $(server_rss) MiB, $URL"
    # Milvus 2.3 serves its REST API on the proxy port as well.
    curl -fsS --max-time 5 "$URL/v1/vector/collections" && echo
}

cmd_logs() {
    show_log_tail "$RUN_DIR/milvus/logs/milvus-stdout.log" "${LINES:-100}"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    url) printf '%s\n' "$URL" ;;
    clean) cmd_stop; rm -rf "$RUN_DIR"; say "removed $RUN_DIR" ;;
    *) echo "usage: $0 {install|start|stop|status|logs|url|clean}" >&2; exit 2 ;;
esac
