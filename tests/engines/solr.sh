#!/usr/bin/env bash
# Install and run a standalone Solr 9 node on 127.0.0.1 for the test suite, built only from Maven
# Central artifacts: solr-core and solr-test-framework (whose embedded Jetty runner is Solr's own
# way to run a node in-process), started by a tiny launcher (tests/engines/solr/). `install` also
# builds the sidecar rerank plugin (solr-plugin/), which `start` puts on the node's shared lib path.
#
# Usage: tests/engines/solr.sh {install|start|stop|status|logs|url|clean}
#
# Environment (see also lib.sh for RERANK_ENGINE_CACHE / RERANK_ENGINE_RUN / RERANK_ENGINE_USER):
#   SOLR_VERSION        Solr version (default 9.10.1; 10.x needs Java 21 and its POM does not resolve)
#   SOLR_PORT           HTTP port (default 8983); the node serves http://127.0.0.1:PORT/solr
#   SOLR_HEAP           JVM heap, -Xms = -Xmx (default 512m)
#   SOLR_START_TIMEOUT  seconds to wait for the node (default 120)
#   SOLR_JAVA_HOME      JDK to run with (default: Java 17 under /usr/lib/jvm, else java on PATH)
#   MAVEN_REPO_LOCAL    Maven's local repository (default $RERANK_ENGINE_CACHE/maven)
set -euo pipefail

ENGINE_NAME=solr
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

SOLR_V="${SOLR_VERSION:-9.10.1}"
SOLR_P="${SOLR_PORT:-8983}"
SOLR_H="${SOLR_HEAP:-512m}"
SOLR_TIMEOUT="${SOLR_START_TIMEOUT:-120}"
M2="${MAVEN_REPO_LOCAL:-$ENGINE_CACHE/maven}"

INSTALL_DIR="$ENGINE_CACHE/solr-$SOLR_V"
RUN_DIR="$ENGINE_RUN/solr"
PID_FILE="$RUN_DIR/solr.pid"
CONSOLE_LOG="$RUN_DIR/console.log"
URL="http://127.0.0.1:$SOLR_P/solr"

find_java() { find_java_home "${SOLR_JAVA_HOME:-}"; }

# A stamp of what an install holds: the version and the sources it was built from.
stamp() {
    printf 'solr %s\n' "$SOLR_V"
    cat "$SCRIPT_DIR/solr/pom.xml" "$SCRIPT_DIR"/solr/src/main/java/dev/reranksidecar/solrnode/*.java \
        "$REPO_DIR/solr-plugin/pom.xml" "$REPO_DIR"/solr-plugin/src/main/java/dev/reranksidecar/solr/*.java | sha1sum | cut -c1-40
}

installed() {
    [[ -f "$INSTALL_DIR/.installed" ]] && [[ "$(cat "$INSTALL_DIR/.installed")" == "$(stamp)" ]]
}

# Build one Maven project from a copy (the clone stays clean); Maven's downloads go to $M2.
#   maven_build SRC_DIR OUT_DIR GOALS...
maven_build() {
    local src="$1" out="$2"
    shift 2
    rm -rf "$out"
    cp -r "$src" "$out"
    JAVA_HOME="$(find_java)" nice -n 10 mvn -q -B -f "$out/pom.xml" -Dmaven.repo.local="$M2" \
        -Dsolr.version="$SOLR_V" "$@" >"$out/build.log" 2>&1 \
        || { tail -n 40 "$out/build.log" >&2; die "maven build of $src failed (log: $out/build.log)"; }
}

cmd_install() {
    if installed; then
        say "already installed: $INSTALL_DIR"
        return 0
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to install Solr"
    local t0 tmp="$INSTALL_DIR.tmp.$$"
    t0="$(now_s)"
    rm -rf "$tmp"
    mkdir -p "$tmp/plugins"
    say "resolving Solr $SOLR_V from Maven Central and building the launcher"
    maven_build "$SCRIPT_DIR/solr" "$tmp/node-build" package dependency:copy-dependencies \
        -DoutputDirectory="$tmp/lib" -DincludeScope=runtime
    cp "$tmp/node-build/target/solr-test-node-1.jar" "$tmp/lib/"
    say "building the sidecar rerank plugin (solr-plugin/)"
    maven_build "$REPO_DIR/solr-plugin" "$tmp/plugin-build" package
    cp "$tmp"/plugin-build/target/rerank-sidecar-solr-*.jar "$tmp/plugins/"
    rm -rf "$tmp/node-build" "$tmp/plugin-build"
    stamp >"$tmp/.installed"
    rm -rf "$INSTALL_DIR"
    mv "$tmp" "$INSTALL_DIR"
    say "installed into $INSTALL_DIR in $(elapsed "$t0")s ($(du -sh "$INSTALL_DIR" | cut -f1))"
}

cmd_start() {
    local pid
    pid="$(live_pid "$PID_FILE")"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) at $URL"
        return 0
    fi
    installed || cmd_install
    port_free "$SOLR_P" || die "port $SOLR_P on 127.0.0.1 is already in use"

    local t0 java_home
    t0="$(now_s)"
    java_home="$(find_java)"
    ensure_service_user
    mkdir -p "$RUN_DIR"
    stage_tree "$INSTALL_DIR" "$RUN_DIR/install"
    # The node's home: solr.xml and the configsets are copied fresh; cores persist across restarts.
    mkdir -p "$RUN_DIR/home"
    cp "$SCRIPT_DIR/solr/home/solr.xml" "$RUN_DIR/home/"
    rm -rf "$RUN_DIR/home/configsets" "$RUN_DIR/home/lib"
    cp -r "$SCRIPT_DIR/solr/home/configsets" "$RUN_DIR/home/"
    cp -r "$RUN_DIR/install/plugins" "$RUN_DIR/home/lib"
    own_dir "$RUN_DIR/home" "$RUN_DIR/logs"
    rm -f "$PID_FILE"
    if [[ "$(id -u)" -eq 0 ]]; then chown "$ENGINE_USER:" "$RUN_DIR"; fi # the JVM writes its pid file here
    check_run_dir_access "$RUN_DIR/home"

    say "starting Solr $SOLR_V on $URL (heap $SOLR_H, java $java_home)"
    launch_detached "$CONSOLE_LOG" "$RUN_DIR" "$java_home/bin/java" \
        "-Xms$SOLR_H" "-Xmx$SOLR_H" -Djava.io.tmpdir="$RUN_DIR/logs" \
        -Dsolr.solr.home="$RUN_DIR/home" -Dsolr.log.dir="$RUN_DIR/logs" \
        -Dsolr.disableConfigSetsCreateAuthChecks=true -Dsolr.max.booleanClauses=4096 \
        ${SOLR_EXTRA_JAVA_OPTS:-} \
        -cp "$RUN_DIR/install/lib/*" dev.reranksidecar.solrnode.SolrNode "$RUN_DIR/home" "$SOLR_P" "$PID_FILE"

    if ! wait_http_ok "$URL/admin/info/system?wt=json" "$SOLR_TIMEOUT" "$t0"; then
        show_log_tail "$CONSOLE_LOG" 40
        abort_launch "$PID_FILE"
        exit 1
    fi
    pid="$(live_pid "$PID_FILE")"
    say "up in $(elapsed "$t0")s: pid $pid, RSS $(rss_mib "$pid") MiB, $URL"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) stop_pid "$PID_FILE" 60 ;;
    status) report_status "$(live_pid "$PID_FILE")" "$URL" "$URL/admin/cores?action=STATUS&wt=json" ;;
    logs) show_log_tail "$CONSOLE_LOG" "${LINES:-100}" ;;
    url) printf '%s\n' "$URL" ;;
    clean) stop_pid "$PID_FILE" 60; rm -rf "$RUN_DIR"; say "removed $RUN_DIR" ;;
    *) echo "usage: $0 {install|start|stop|status|logs|url|clean}" >&2; exit 2 ;;
esac
