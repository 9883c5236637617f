"""Run the Milvus 2.3 standalone server from the PyPI package `milvus` for tests.

Started by tests/engines/milvus.sh with the Python of the venv that holds `milvus`.

Why not the package's own `milvus-server` command:
  * Milvus 2.3 binds every gRPC port and the metrics port on all interfaces;
    `<component>.ip` only sets the address a component advertises to the others.
  * `milvus-server` handles only SIGINT: on SIGTERM the wrapper dies and leaves
    the server process running.

What this does instead:
  * extracts the packaged binaries once (`extract`), into the engine cache;
  * `run`: binds 127.0.0.1:PORT in the caller's network namespace, then re-executes
    itself in a fresh, empty network namespace (`unshare --net`) with that listening
    socket inherited. Inside, Milvus has only its own loopback, so nothing it opens is
    reachable from anywhere else; this process relays connections accepted on
    127.0.0.1:PORT to Milvus' proxy. Inter-component traffic stays on loopback
    because each component's advertised ip is 127.0.0.1.
  * SIGTERM/SIGINT stop Milvus with SIGTERM (SIGKILL after a grace period).
  * With --no-isolate, or when `unshare --net` is not permitted here, Milvus' proxy
    listens on PORT directly and its other ports on all interfaces.
"""

import argparse
import asyncio
import ctypes
import fcntl
import hashlib
import lzma
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
INNER_PROXY_PORT = 19530
INNER_METRICS_PORT = 9091


def log(msg):
    print(f"[milvus_server] {msg}", file=sys.stderr, flush=True)


def package_dir():
    import milvus  # the PyPI package `milvus`

    return Path(milvus.__file__).resolve().parent


def cmd_extract(args):
    """Decompress data/bin/*.lzma from the package into BIN_DIR (skip unchanged files)."""
    src = package_dir() / "data" / "bin"
    dest = Path(args.bin_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for packed in sorted(src.glob("*.lzma")):
        target = dest / packed.name[: -len(".lzma")]
        digest = hashlib.sha256(packed.read_bytes()).hexdigest()
        stamp = target.with_name(target.name + ".sha256")
        if target.exists() and stamp.exists() and stamp.read_text() == digest:
            continue
        with lzma.open(packed) as fin, open(str(target) + ".part", "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
        os.chmod(str(target) + ".part", 0o755)
        os.replace(str(target) + ".part", target)
        stamp.write_text(digest)
    log(f"binaries ready in {dest}")


def loopback_up():
    """Bring `lo` up in a new network namespace (ioctl, so no iproute2 needed)."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def write_config(base: Path, proxy_port: int):
    """Render the package's config template with our paths, ports and loopback ips."""
    from milvus import MilvusServerConfig

    cfg = MilvusServerConfig()
    cfg.update(data_dir=str(base), proxy_port=proxy_port)
    for component in COMPONENTS:
        cfg.set(f"{component}.ip", "127.0.0.1")
    cfg.set("etcd_log_level", "warn")
    cfg.resolve()  # fills log/data paths and free ports, writes configs/milvus.yaml
    return cfg


def _die_with_parent():
    """In the Milvus child: get SIGTERM if this supervisor dies, even by SIGKILL,
    so no server is left behind in a namespace nobody can reach."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_healthy(proc, port, timeout):
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if b"OK" in resp.read():
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


async def relay(listen_sock, inner_port):
    async def pump(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except OSError:
                pass

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", inner_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))

    server = await asyncio.start_server(handle, sock=listen_sock)
    async with server:
        await server.serve_forever()


def cmd_run(args):
    run_dir = Path(args.run_dir)
    base = run_dir / "milvus"
    ready = run_dir / "ready"
    ready.unlink(missing_ok=True)

    unshare = ["unshare", "--net"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    if args.isolate and args.listen_fd is None:
        try:
            probe = subprocess.run(unshare + ["--", "true"], capture_output=True, text=True)
            why = probe.stderr.strip() if probe.returncode else ""
        except OSError as exc:  # no unshare(1) at all
            why = str(exc)
        if why:
            log(f"network namespaces unavailable ({why}); running without isolation")
            args.isolate = False

    if args.isolate and args.listen_fd is None:
        # Step 1, in the caller's namespace: take the public port, then move into a
        # fresh network namespace keeping the socket (same pid: unshare execs).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(128)
        sock.set_inheritable(True)
        argv = unshare + ["--", sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
        argv += ["--listen-fd", str(sock.fileno())]
        os.execvp(argv[0], argv)

    listen_sock = None
    if args.listen_fd is not None:
        loopback_up()
        listen_sock = socket.socket(fileno=args.listen_fd)
        proxy_port = INNER_PROXY_PORT
    else:
        proxy_port = args.port

    cfg = write_config(base, proxy_port)
    bin_dir = Path(args.bin_dir)
    metrics_port = INNER_METRICS_PORT
    if listen_sock is None:
        metrics_port, probe = cfg.resolve_port(INNER_METRICS_PORT)
        probe.close()
    env = dict(os.environ)
    env.update(
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(metrics_port),
        MILVUS_RUN_DIR=str(base / "run"),
        MILVUSCONF=str(base / "configs") + "/",
        LD_LIBRARY_PATH=f"{bin_dir}:{env.get('LD_LIBRARY_PATH', '')}",
    )
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "milvus-stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "milvus"), "run", "standalone"],
            cwd=base,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    log(
        f"milvus pid {proc.pid}, proxy port {proxy_port}, metrics port {metrics_port}"
        + (f", relayed from 127.0.0.1:{args.port}" if listen_sock else "")
    )

    def stop(*_):
        if proc.poll() is None:
            log("stopping milvus (SIGTERM)")
            proc.terminate()
            try:
                proc.wait(timeout=args.stop_timeout)
            except subprocess.TimeoutExpired:
                log("milvus ignored SIGTERM, killing it")
                proc.kill()
                proc.wait()
            log(f"milvus stopped, exit code {proc.returncode}")
        ready.unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not wait_healthy(proc, metrics_port, args.start_timeout):
        log("milvus did not become healthy" + (f" (exit code {proc.returncode})" if proc.poll() is not None else ""))
        stop()
    ready.write_text(f"{os.getpid()}\n")
    log("healthy")

    if listen_sock is None:
        # Poll rather than proc.wait(): a blocking wait holds Popen's lock, and the
        # SIGTERM handler's own wait would then deadlock.
        while proc.poll() is None:
            time.sleep(1)
    else:
        loop = asyncio.new_event_loop()
        task = loop.create_task(relay(listen_sock, INNER_PROXY_PORT))

        def watch():
            if proc.poll() is not None:
                task.cancel()
            else:
                loop.call_later(1.0, watch)

        loop.call_soon(watch)
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
    log(f"milvus exited with code {proc.returncode}")
    ready.unlink(missing_ok=True)
    sys.exit(proc.returncode or 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract", help="unpack the server binaries")
    p.add_argument("--bin-dir", required=True)
    p = sub.add_parser("run", help="run Milvus in the foreground")
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-isolate", dest="isolate", action="store_false")
    p.add_argument("--start-timeout", type=float, default=180)
    # Milvus 2.3 ignores SIGTERM for its whole internal grace period; test data needs no clean flush.
    p.add_argument("--stop-timeout", type=float, default=5)
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    {"extract": cmd_extract, "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    main()
