"""Fetching media URLs under limits, with the SSRF guard.

URLs that resolve to loopback, private, link-local or otherwise non-public addresses are refused
unless allowed, including IPv6 addresses that embed such an IPv4 address (IPv4-mapped and
-compatible, NAT64, 6to4, Teredo). Every address a name resolves to is checked, and every redirect
target; the connection goes to the address that was checked, so a second DNS answer cannot
redirect it. A fetch has connect and read timeouts, an overall time limit (their sum), a byte limit
and a redirect limit, and stops between chunks when its request is no longer wanted.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from sidecar.errors import Kind, SidecarError

_CHUNK = 64 * 1024
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, by every common translation scheme."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found += list(ip.teredo)
    if any(ip in network for network in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(address: str) -> bool:
    """Whether an address (and every IPv4 address it embeds) is a global unicast address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    candidates = [ip] + (embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else [])
    return all(c.is_global and not c.is_multicast for c in candidates)


def check_address(host: str, port: int, allow_private: bool) -> str:
    """Resolve `host` and return an address to connect to; refuse non-public ones unless allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r} ({exc.strerror})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise ValueError(
                    f"host {host!r} resolves to non-public address {address}; the server refuses private,"
                    " loopback and link-local URLs unless started with --allow-private-urls"
                )
    return addresses[0]


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP connection to a pre-checked address, with separate connect and read timeouts."""

    def __init__(self, host: str, port: int, address: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self._address, self._read_timeout = address, read_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.settimeout(self._read_timeout)


class _PinnedTLSConnection(_PinnedConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def fetch_url(
    url: str,
    *,
    allow_private: bool,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_bytes: int,
    max_redirects: int,
    check: Callable[[], None] = lambda: None,
) -> bytes:
    """GET `url` under the address, time, size and redirect limits; `check` raises to stop early."""
    deadline = time.monotonic() + connect_timeout_s + read_timeout_s
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = check_address(parts.hostname, port, allow_private)
        cls = _PinnedTLSConnection if parts.scheme == "https" else _PinnedConnection
        conn = cls(parts.hostname, port, address, connect_timeout_s, read_timeout_s)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": "rerank-sidecar", "Accept": "image/*, video/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ValueError(f"fetching {url} returned HTTP {response.status}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise SidecarError(Kind.TOO_LARGE, f"{url} is {declared} bytes, over the {max_bytes} limit")
            body = bytearray()
            while chunk := response.read(min(_CHUNK, max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > max_bytes:
                    raise SidecarError(Kind.TOO_LARGE, f"{url} exceeds the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise TimeoutError
                check()
            return bytes(body)
        except TimeoutError:
            raise ValueError(f"fetching {url} timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ValueError(f"fetching {url} failed ({type(exc).__name__}: {exc})") from None
        finally:
            conn.close()
    raise ValueError(f"more than {max_redirects} redirects fetching the URL")
