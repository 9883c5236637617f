"""The flags with which an app reaches a sidecar: its target, API key and TLS files (one definition for all apps).

--sidecar TARGET            host:port, dns:///name:port (every replica behind a name), or ip:port,ip:port
--sidecar-api-key KEY       default: $RERANK_SIDECAR_API_KEY
--sidecar-ca FILE           TLS, trusting this CA (--sidecar-tls alone trusts the system's CAs)
--sidecar-cert/--sidecar-key FILE   mutual TLS
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sidecar.settings import API_KEY_ENV


def add_key_argument(parser: argparse.ArgumentParser) -> None:
    """--sidecar-api-key alone (an app that starts its own sidecar)."""
    parser.add_argument(
        "--sidecar-api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"the sidecar's API key (default: ${API_KEY_ENV}; the variable keeps it out of the process list)",
    )


def add_sidecar_arguments(parser: argparse.ArgumentParser) -> None:
    """--sidecar, its API key and its TLS files."""
    parser.add_argument(
        "--sidecar",
        required=True,
        help="the sidecar's gRPC target: host:port, dns:///name:port (balanced over every address of the name), "
        "or several ip:port separated by commas",
    )
    add_key_argument(parser)
    parser.add_argument("--sidecar-tls", action="store_true", help="reach the sidecar over TLS (system CAs)")
    parser.add_argument("--sidecar-ca", type=Path, help="PEM CA that signed the sidecar's certificate (implies TLS)")
    parser.add_argument("--sidecar-cert", type=Path, help="PEM client certificate for mutual TLS")
    parser.add_argument("--sidecar-key", type=Path, help="PEM key of --sidecar-cert")


GRPC_SCHEMES = frozenset({"dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds"})


def sidecar_target(value: str) -> str | list[str]:
    """--sidecar as a `RerankerClient` target: a list when it names several ip:port replicas."""
    if value.split(":", 1)[0] in GRPC_SCHEMES:
        return value  # a gRPC target string, whose own syntax may have commas
    targets = [t.strip() for t in value.split(",") if t.strip()]
    return targets if len(targets) > 1 else value


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """`RerankerClient` keyword arguments from the flags above."""
    return {
        "api_key": args.sidecar_api_key or "",
        "tls": getattr(args, "sidecar_tls", False),
        "root_certificates": getattr(args, "sidecar_ca", None),
        "client_cert": getattr(args, "sidecar_cert", None),
        "client_key": getattr(args, "sidecar_key", None),
    }
