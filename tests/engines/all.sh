#!/usr/bin/env bash
# Install, start, stop or show every test engine (OpenSearch, Elasticsearch, Milvus, Weaviate, Solr),
# printing the time each step took. `start` stops the engines it already started
# when a later one fails, then exits non-zero.
#
# Usage: tests/engines/all.sh {install|start|stop|status|clean}   (clean: stop, delete run data)
#
# Environment:
#   RERANK_ENGINES  engines to act on, in order (default: "opensearch elasticsearch milvus weaviate solr")
#   plus everything the per-engine scripts read (ports, heap sizes, cache and run dirs).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE_NAME=all
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

read -r -a ENGINES <<<"${RERANK_ENGINES:-opensearch elasticsearch milvus weaviate solr}"

step() {
    local engine="$1" action="$2" t0 rc=0
    t0="$(now_s)"
    "$SCRIPT_DIR/$engine.sh" "$action" || rc=$?
    say "$engine $action: $(elapsed "$t0")s (exit $rc)"
    return "$rc"
}

action="${1:-}"
case "$action" in
    install)
        t_all="$(now_s)"
        for e in "${ENGINES[@]}"; do step "$e" install; done
        say "all installed in $(elapsed "$t_all")s; cache $ENGINE_CACHE uses $(du -sh "$ENGINE_CACHE" | cut -f1)"
        ;;
    start)
        t_all="$(now_s)"
        started=()
        for e in "${ENGINES[@]}"; do
            if ! step "$e" start; then
                say "$e failed to start; stopping ${started[*]:-nothing}"
                for s in "${started[@]}"; do "$SCRIPT_DIR/$s.sh" stop || true; done
                exit 1
            fi
            started+=("$e")
        done
        say "all started in $(elapsed "$t_all")s"
        ;;
    stop)
        rc=0
        for e in "${ENGINES[@]}"; do step "$e" stop || rc=1; done
        exit "$rc"
        ;;
    clean)
        rc=0
        for e in "${ENGINES[@]}"; do step "$e" clean || rc=1; done
        exit "$rc"
        ;;
    status)
        rc=0
        for e in "${ENGINES[@]}"; do "$SCRIPT_DIR/$e.sh" status >/dev/null || rc=1; done
        exit "$rc"
        ;;
    *)
        echo "usage: $0 {install|start|stop|status|clean}" >&2
        exit 2
        ;;
esac
