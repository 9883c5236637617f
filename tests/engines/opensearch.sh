#!/usr/bin/env bash
# Install and run a single-node OpenSearch 2.19 on 127.0.0.1 for the test suite,
# built only from Maven Central artifacts (no Docker, no tarball site):
#   org.opensearch.distribution.integ-test-zip:opensearch:<v>:zip   (core, no security plugin)
#   org.opensearch.plugin:opensearch-job-scheduler:<v>.0:zip
#   org.opensearch.plugin:opensearch-knn:<v>.0:zip          (no native libs: use engine "lucene")
#   org.opensearch.plugin:opensearch-ml-plugin:<v>.0:zip
#   org.opensearch.plugin:neural-search:<v>.0:zip
#   org.opensearch.plugin:lang-painless:<v> jars            (k-NN extends it; the integ-test
#                                                            zip lacks it, so we assemble a module)
#
# Usage: tests/engines/opensearch.sh {install|start|stop|status|logs|url|clean}
#
# Environment (see also lib.sh for RERANK_ENGINE_CACHE / RERANK_ENGINE_RUN / RERANK_ENGINE_USER):
#   OPENSEARCH_VERSION        core version (default 2.19.6, newest 2.19.x with all plugins on Maven)
#   OPENSEARCH_PORT           HTTP port (default 9200)
#   OPENSEARCH_TRANSPORT_PORT transport port or range (default 9300-9399)
#   OPENSEARCH_HEAP           JVM heap, -Xms = -Xmx (default 1g)
#   OPENSEARCH_START_TIMEOUT  seconds to wait for green/yellow health (default 240)
#   OPENSEARCH_JAVA_HOME      JDK to run with (default: Java 17 under /usr/lib/jvm, else java on PATH)
set -euo pipefail

ENGINE_NAME=opensearch
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

OS_VERSION="${OPENSEARCH_VERSION:-2.19.6}"
PLUGIN_VERSION="$OS_VERSION.0"
OS_PORT="${OPENSEARCH_PORT:-9200}"
OS_TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-9300-9399}"
OS_HEAP="${OPENSEARCH_HEAP:-1g}"
OS_START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-240}"

INSTALL_DIR="$ENGINE_CACHE/opensearch-$OS_VERSION"
RUN_DIR="$ENGINE_RUN/opensearch"
PID_FILE="$RUN_DIR/opensearch.pid"
CONSOLE_LOG="$RUN_DIR/logs/console.log"
URL="http://127.0.0.1:$OS_PORT"

# Installed in this order: each one's "extended.plugins" must already be present.
PLUGINS=(opensearch-job-scheduler opensearch-knn opensearch-ml-plugin neural-search)

find_java() {
    if [[ -n "${OPENSEARCH_JAVA_HOME:-}" ]]; then printf '%s\n' "$OPENSEARCH_JAVA_HOME"; return; fi
    local d
    for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-21-openjdk-amd64; do
        [[ -x "$d/bin/java" ]] && { printf '%s\n' "$d"; return; }
    done
    local java
    java="$(command -v java)" || die "no Java found; set OPENSEARCH_JAVA_HOME"
    dirname "$(dirname "$(readlink -f "$java")")"
}

# lang-painless is published only as plain jars. Put them in a module folder with a
# descriptor and the two permissions the Painless compiler needs.
assemble_painless() {
    local dir="$1/modules/lang-painless" jar
    mkdir -p "$dir"
    for jar in \
        "org.opensearch.plugin lang-painless $OS_VERSION" \
        "org.opensearch.plugin opensearch-scripting-painless-spi $OS_VERSION" \
        "org.antlr antlr4-runtime 4.13.1" \
        "org.ow2.asm asm 9.7" \
        "org.ow2.asm asm-util 9.7" \
        "org.ow2.asm asm-tree 9.7" \
        "org.ow2.asm asm-commons 9.7" \
        "org.ow2.asm asm-analysis 9.7"; do
        # shellcheck disable=SC2086
        cp "$(maven_fetch $jar jar)" "$dir/"
    done
    cat >"$dir/plugin-descriptor.properties" <<EOF
description=Painless scripting language (module assembled by tests/engines/opensearch.sh)
version=$OS_VERSION
name=lang-painless
classname=org.opensearch.painless.PainlessPlugin
java.version=11
opensearch.version=$OS_VERSION
extended.plugins=
has.native.controller=false
EOF
    cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // Painless compiles scripts to bytecode in its own class loader.
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
}

cmd_install() {
    if [[ -f "$INSTALL_DIR/.installed" ]]; then
        say "already installed: $INSTALL_DIR"
        return 0
    fi
    local java_home core p zip
    java_home="$(find_java)"
    core="$(maven_fetch org.opensearch.distribution.integ-test-zip opensearch "$OS_VERSION" zip)"
    for p in "${PLUGINS[@]}"; do maven_fetch org.opensearch.plugin "$p" "$PLUGIN_VERSION" zip >/dev/null; done

    INSTALL_TMP="$INSTALL_DIR.tmp.$$"
    local tmp="$INSTALL_TMP"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    trap 'rm -rf "$INSTALL_TMP"' EXIT
    say "unpacking $(basename "$core")"
    unzip -q "$core" -d "$tmp"
    mv "$tmp/opensearch-$OS_VERSION" "$tmp/home"
    assemble_painless "$tmp/home"
    for p in "${PLUGINS[@]}"; do
        zip="$DOWNLOADS/$p-$PLUGIN_VERSION.zip"
        say "installing plugin $p"
        OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$tmp/home/config" \
            "$tmp/home/bin/opensearch-plugin" install --batch "file://$zip" >"$tmp/plugin-$p.log" 2>&1 \
            || { cat "$tmp/plugin-$p.log" >&2; die "plugin install failed: $p"; }
    done
    printf 'opensearch %s plugins %s installed %s\n' "$OS_VERSION" "$PLUGIN_VERSION" "$(date -u +%FT%TZ)" >"$tmp/home/.installed"
    rm -rf "$INSTALL_DIR"
    mv "$tmp/home" "$INSTALL_DIR"
    rm -rf "$tmp"
    trap - EXIT
    say "installed into $INSTALL_DIR"
}

write_config() {
    local conf="$RUN_DIR/config"
    rm -rf "$conf"
    cp -r "$INSTALL_DIR/config" "$conf" # a real copy: never write through hard links
    cat >"$conf/opensearch.yml" <<EOF
# Generated by tests/engines/opensearch.sh; rewritten at every start.
cluster.name: rerank-test-opensearch
node.name: rerank-test-node
path.data: $RUN_DIR/data
path.logs: $RUN_DIR/logs

# One node, loopback only (bootstrap checks stay lenient on loopback).
discovery.type: single-node
network.host: 127.0.0.1
http.port: $OS_PORT
transport.port: $OS_TRANSPORT_PORT

# Do not block writes when the test machine's disk is fuller than 85/90/95 %.
cluster.routing.allocation.disk.threshold_enabled: false

# ML-commons on a small, non-dedicated node with a model server on loopback.
plugins.ml_commons.only_run_on_ml_node: false
plugins.ml_commons.connector.private_ip_enabled: true
plugins.ml_commons.trusted_connector_endpoints_regex:
  - "^http://127\\\\.0\\\\.0\\\\.1:[0-9]+(/.*)?$"
  - "^http://localhost:[0-9]+(/.*)?$"
plugins.ml_commons.native_memory_threshold: 100
plugins.ml_commons.jvm_heap_memory_threshold: 100
plugins.ml_commons.disk_free_space_threshold: 0b
EOF
    # bin/opensearch runs from its home (read-only for us): send the GC log, heap
    # dumps and JVM error files that jvm.options puts under logs/ and data/ to the run dir.
    sed -i \
        -e "s#file=logs/#file=$RUN_DIR/logs/#" \
        -e "s#Xloggc:logs/#Xloggc:$RUN_DIR/logs/#" \
        -e "s#HeapDumpPath=data#HeapDumpPath=$RUN_DIR/data#" \
        -e "s#ErrorFile=logs/#ErrorFile=$RUN_DIR/logs/#" \
        "$conf/jvm.options"
}

cmd_start() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) at $URL"
        return 0
    fi
    [[ -f "$INSTALL_DIR/.installed" ]] || cmd_install
    port_free "$OS_PORT" || die "port $OS_PORT on 127.0.0.1 is already in use"

    local t0 java_home
    t0="$(now_s)"
    java_home="$(find_java)"
    ensure_service_user
    mkdir -p "$RUN_DIR"
    stage_tree "$INSTALL_DIR" "$RUN_DIR/home"
    write_config
    own_dir "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp" "$RUN_DIR/config"
    rm -f "$PID_FILE"
    if [[ "$(id -u)" -eq 0 ]]; then chown "$ENGINE_USER:" "$RUN_DIR"; fi
    check_run_dir_access "$RUN_DIR/data"

    say "starting OpenSearch $OS_VERSION on $URL (heap $OS_HEAP, java $java_home)"
    launch_detached "$CONSOLE_LOG" "$RUN_DIR" env \
        OPENSEARCH_JAVA_HOME="$java_home" \
        OPENSEARCH_PATH_CONF="$RUN_DIR/config" \
        OPENSEARCH_TMPDIR="$RUN_DIR/tmp" \
        OPENSEARCH_JAVA_OPTS="-Xms$OS_HEAP -Xmx$OS_HEAP ${OPENSEARCH_EXTRA_JAVA_OPTS:-}" \
        "$RUN_DIR/home/bin/opensearch" -p "$PID_FILE"

    if ! wait_for_health "$t0"; then
        show_log_tail "$CONSOLE_LOG" 50
        say "main log: $RUN_DIR/logs/rerank-test-opensearch.log"
        abort_launch "$PID_FILE"
        exit 1
    fi
    # A single node never places replicas; with 0 by default new indices are green at
    # once. This cluster setting is only read from the cluster state (a persistent
    # setting), not from opensearch.yml, so it is set through the API.
    curl -fsS --max-time 10 -XPUT -H 'Content-Type: application/json' "$URL/_cluster/settings" \
        -d '{"persistent":{"cluster.default_number_of_replicas":0}}' >/dev/null \
        || say "warning: could not set cluster.default_number_of_replicas"
    pid="$(live_pid "$PID_FILE")"
    say "up in $(elapsed "$t0")s: pid $pid, RSS $(rss_mib "$pid") MiB, $URL"
}

# Wait until the node answers with health yellow or green, or fail on timeout
# or when the JVM exits.
wait_for_health() {
    local t0="$1" status deadline
    deadline=$(($(date +%s) + OS_START_TIMEOUT))
    while (($(date +%s) < deadline)); do
        status="$(curl -fsS --max-time 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null \
            | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')" || status=""
        if [[ "$status" == green || "$status" == yellow ]]; then
            say "cluster health $status after $(elapsed "$t0")s"
            return 0
        fi
        if ! kill -0 "$LAUNCHED_PID" 2>/dev/null; then
            say "OpenSearch exited during startup"
            return 1
        fi
        sleep 1
    done
    say "no yellow/green health within ${OS_START_TIMEOUT}s"
    return 1
}

cmd_stop() {
    stop_pid "$PID_FILE" 60
}

cmd_status() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -z "$pid" ]]; then
        say "not running"
        return 3
    fi
    say "running: pid $pid, RSS $(rss_mib "$pid") MiB, $URL"
    curl -fsS --max-time 5 "$URL/_cluster/health?pretty" || { say "HTTP not answering"; return 1; }
}

cmd_logs() {
    show_log_tail "$RUN_DIR/logs/rerank-test-opensearch.log" "${LINES:-100}"
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
