"""MemberRecord, what the directory publishes about one member, and the checks that make
its values publishable. No I/O.

Published addresses are IP literals: no host names and no scoped IPv6 (a scope means
nothing on another machine); an IPv4 address mapped into IPv6 is published as IPv4.
Endpoints are written as meshwg.util.endpoint writes them: ``1.2.3.4:51820``,
``[2001:db8::1]:51820``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from meshwg.util.endpoint import format_endpoint, parse_endpoint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PARSE_CACHE = 1 << 15   # endpoints remembered by parse_published: a directory re-read is cheap


@dataclass
class MemberRecord:
    """What the directory knows about one member (the rendezvous's view): its 32-byte
    public key, its endpoint (IP, port) or None, allowed IPs as CIDR text, name, mesh
    address, host candidates (IP, port) and extra TXT key=value pairs."""

    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: list[str]
    name: str = ""
    mesh_address: str = ""
    host_candidates: list[tuple[str, int]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)


def published_ip(host: str, what: str) -> IPAddress:
    """Parse an IP literal for publishing; IPv4-mapped IPv6 becomes IPv4. Raises
    ValueError naming `what` for a host name or a scoped address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise ValueError(f"{what}: scoped address {host!r} cannot be published")
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def check_port(port: object, what: str) -> int:
    """`port` if it is an int in 1..65535; ValueError naming `what` otherwise."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port!r} is not in 1..65535")
    return port


def format_published(host: str, port: int, what: str = "candidate") -> str:
    """``1.2.3.4:51820`` or ``[2001:db8::1]:51820`` for a publishable (IP, port).
    Raises ValueError naming `what`."""
    ip = published_ip(host, what)
    return format_endpoint((str(ip), check_port(port, f"{what} {host!r}")))


@functools.lru_cache(maxsize=PARSE_CACHE)
def parse_published(text: str, what: str = "candidate") -> tuple[str, int]:
    """Inverse of :func:`format_published`: (canonical IP, port). Raises ValueError.
    Results are remembered (a member's endpoint and candidates repeat at every read of
    the directory); failures are not."""
    host, port = parse_endpoint(text)          # IP-only is checked once, just below
    return str(published_ip(host, f"{what} {text!r}")), port


def is_cidr(text: str) -> bool:
    """Whether `text` is an IP network ("10.0.0.0/24", host bits allowed)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def check_record(record: MemberRecord) -> IPAddress | None:
    """Check what TXT encoding does not (allowed IPs, candidate and endpoint addresses and
    ports); the endpoint's IP, or None without one. Raises ValueError naming the field."""
    for cidr in record.allowed_ips:
        if not is_cidr(cidr):
            raise ValueError(f"allowed_ips: {cidr!r} is not a CIDR")
    for host, port in record.host_candidates:
        format_published(host, port, "host_candidates")
    if record.endpoint is None:
        return None
    host, port = record.endpoint
    ip = published_ip(host, "endpoint")
    check_port(port, f"endpoint {host!r}")
    return ip
