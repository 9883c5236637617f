# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Shared helpers for the engine scripts in tests/engines/ (sourced, not run).
#
# Environment:
#   RERANK_ENGINE_CACHE  downloads and assembled installs, kept outside the clone
#                        (default: $HOME/.cache/rerank-sidecar/engines)
#   RERANK_ENGINE_RUN    per-run data, logs, pid files (default: /tmp/rerank-engines)
#   RERANK_ENGINE_USER   unprivileged account the JVM engines run as when we are root
#                        (default: rerank-engines; created on demand)
#   MAVEN_REPO_URL       Maven repository base (default: https://repo1.maven.org/maven2)

ENGINE_CACHE="${RERANK_ENGINE_CACHE:-$HOME/.cache/rerank-sidecar/engines}"
ENGINE_RUN="${RERANK_ENGINE_RUN:-/tmp/rerank-engines}"
ENGINE_USER="${RERANK_ENGINE_USER:-rerank-engines}"
MAVEN_REPO_URL="${MAVEN_REPO_URL:-https://repo1.maven.org/maven2}"
DOWNLOADS="$ENGINE_CACHE/downloads"

say() { printf '[%s] %s\n' "${ENGINE_NAME:-engines}" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Download a Maven artifact into $DOWNLOADS (once) and check it against the
# .sha1 file published beside it. Prints the local path.
#   maven_fetch GROUP ARTIFACT VERSION EXT
maven_fetch() {
    local group="$1" artifact="$2" version="$3" ext="$4"
    local file="$artifact-$version.$ext"
    local url="$MAVEN_REPO_URL/${group//.//}/$artifact/$version/$file"
    local dest="$DOWNLOADS/$file"
    mkdir -p "$DOWNLOADS"
    if [[ ! -s "$dest" ]]; then
        say "downloading $group:$artifact:$version:$ext"
        curl -fsSL --retry 3 --retry-delay 2 -o "$dest.part" "$url" \
            || { rm -f "$dest.part"; die "download failed: $url"; }
        local want got
        want="$(curl -fsSL --retry 3 "$url.sha1" | cut -c1-40)" || want=""
        got="$(sha1sum "$dest.part" | cut -c1-40)"
        if [[ -n "$want" && "$want" != "$got" ]]; then
            rm -f "$dest.part"
            die "checksum mismatch for $url (want $want, got $got)"
        fi
        mv "$dest.part" "$dest"
    fi
    printf '%s\n' "$dest"
}

# JVMs refuse to run as root, so when we are root the engines run as a system
# account. When we are not root they simply run as the current user.
ensure_service_user() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    if ! id -u "$ENGINE_USER" >/dev/null 2>&1; then
        say "creating system user $ENGINE_USER"
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$ENGINE_USER"
    fi
}

# The service user must be able to reach the run dir (e.g. not under /root).
check_run_dir_access() {
    local dir="$1"
    [[ "$(id -u)" -eq 0 ]] || return 0
    runuser -u "$ENGINE_USER" -- test -w "$dir" \
        || die "$ENGINE_USER cannot write to $dir; point RERANK_ENGINE_RUN at a world-traversable place such as /tmp"
}

# Give the service user a directory it can write to.
own_dir() {
    mkdir -p "$@"
    if [[ "$(id -u)" -eq 0 ]]; then chown -R "$ENGINE_USER:" "$@"; fi
}

# The cache usually lives under /root (mode 0700), which the service user cannot
# enter, so the engine runs from a copy of the install inside the run dir.
# Hard links make the copy instant when both are on one file system.
#   stage_tree SRC DEST
stage_tree() {
    local src="$1" dest="$2"
    local stamp="$src/.installed"
    if [[ -f "$dest/.installed" ]] && cmp -s "$stamp" "$dest/.installed"; then
        return 0
    fi
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    cp -al "$src" "$dest" 2>/dev/null || { rm -rf "$dest"; cp -a "$src" "$dest"; }
}

# pid from a pid file if that process is alive; empty otherwise.
live_pid() {
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then printf '%s\n' "$pid"; fi
}

# Send SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
#   stop_pid PIDFILE [TIMEOUT]
stop_pid() {
    local pidfile="$1" timeout="${2:-60}" pid i
    pid="$(live_pid "$pidfile")"
    if [[ -z "$pid" ]]; then
        say "not running"
        rm -f "$pidfile"
        return 0
    fi
    say "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 2; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return 0; }
        sleep 0.5
    done
    say "pid $pid ignored SIGTERM for ${timeout}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# Resident memory of a process in MiB (0 if gone).
rss_mib() {
    local pid="$1"
    awk '/^VmRSS:/ {printf "%d\n", $2 / 1024; found=1} END {if (!found) print 0}' \
        "/proc/$pid/status" 2>/dev/null || echo 0
}

# Fail early with a clear message if something already listens on the port.
port_free() {
    local port="$1"
    ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Start a command in its own session, as the service user, with stdin closed and
# stdout/stderr appended to LOG. Sets LAUNCHED_PID (the runuser/launcher process,
# alive as long as the engine is).
#   launch_detached LOG WORKDIR CMD...
launch_detached() {
    local log="$1" workdir="$2"
    shift 2
    local prefix=()
    if [[ "$(id -u)" -eq 0 ]]; then prefix=(runuser -u "$ENGINE_USER" --); fi
    mkdir -p "$(dirname "$log")"
    : >"$log"
    (cd "$workdir" && exec setsid -w "${prefix[@]}" "$@" </dev/null >>"$log" 2>&1) &
    LAUNCHED_PID=$!
}

# After a failed start: stop the engine via its pid file, then end whatever is left
# of the process group launch_detached created (e.g. a JVM that had no pid file yet).
#   abort_launch PIDFILE
abort_launch() {
    local pidfile="$1" i
    stop_pid "$pidfile" 30 >/dev/null 2>&1 || true
    [[ -n "${LAUNCHED_PID:-}" ]] || return 0
    kill -TERM -- "-$LAUNCHED_PID" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do
        kill -0 -- "-$LAUNCHED_PID" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL -- "-$LAUNCHED_PID" 2>/dev/null || true
}

# Print the last N lines of a log, with its path, to stderr.
show_log_tail() {
    local log="$1" n="${2:-50}"
    say "log file: $log"
    if [[ -f "$log" ]]; then
        say "last $n lines:"
        tail -n "$n" "$log" >&2
    else
        say "(log file does not exist)"
    fi
}

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN {printf "%.1f", b - a}'; }

# Wait until URL answers 2xx, the launched process exits (fail), or TIMEOUT seconds pass (fail).
#   wait_http_ok URL TIMEOUT T0
wait_http_ok() {
    local url="$1" timeout="$2" t0="$3" deadline
    deadline=$(($(date +%s) + timeout))
    while (($(date +%s) < deadline)); do
        if curl -fsS --max-time 5 -o /dev/null "$url" 2>/dev/null; then
            say "answering at $url after $(elapsed "$t0")s"
            return 0
        fi
        if [[ -n "${LAUNCHED_PID:-}" ]] && ! kill -0 "$LAUNCHED_PID" 2>/dev/null; then
            say "the process exited during startup"
            return 1
        fi
        sleep 1
    done
    say "no answer from $url within ${timeout}s"
    return 1
}

# The status verb shared by the scripts: pid, memory, and one HTTP probe.
#   report_status PID URL PROBE_URL     (PID empty: not running)
report_status() {
    local pid="$1" url="$2" probe="$3"
    if [[ -z "$pid" ]]; then
        say "not running"
        return 3
    fi
    say "running: pid $pid, RSS $(rss_mib "$pid") MiB, $url"
    curl -fsS --max-time 5 "$probe" || { say "HTTP not answering"; return 1; }
    echo
}

# Go toolchain for building engines from the Go module proxy: go on PATH, else /usr/local/go.
find_go() {
    if command -v go >/dev/null 2>&1; then command -v go; return; fi
    [[ -x /usr/local/go/bin/go ]] && { echo /usr/local/go/bin/go; return; }
    die "no Go toolchain found (go on PATH or /usr/local/go/bin/go)"
}

# A Java 17 home for the JVM engines: OVERRIDE when set, else Java 17 (or 21) under /usr/lib/jvm,
# else the java on PATH.
#   find_java_home OVERRIDE
find_java_home() {
    if [[ -n "${1:-}" ]]; then printf '%s\n' "$1"; return; fi
    local d java
    for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-21-openjdk-amd64; do
        [[ -x "$d/bin/java" ]] && { printf '%s\n' "$d"; return; }
    done
    java="$(command -v java)" || die "no Java found; set the engine's JAVA_HOME variable"
    dirname "$(dirname "$(readlink -f "$java")")"
}
