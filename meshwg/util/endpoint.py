"""Endpoints: "HOST:PORT" text (IPv6 as "[ADDR]:PORT") and (host, port) tuples. No I/O.

The one parser and formatter of host:port in meshwg and discovery. Endpoints inside the
engine are (ip string, port) tuples in canonical form (normalize_endpoint): an IPv4 address
mapped into IPv6 ("::ffff:1.2.3.4") is written as IPv4, IPv6 in its compressed form.
"""

from __future__ import annotations

import ipaddress

from meshwg.util.errors import MeshwgError

Endpoint = tuple[str, int]


class EndpointError(MeshwgError, ValueError):
    """A "HOST:PORT" string or (host, port) pair is malformed; the message quotes it."""


def split_hostport(text: str) -> tuple[str, str]:
    """Split "host:port" or "[IPv6]:port" into host and port text (the port unchecked).
    Raises EndpointError for missing brackets, colon or parts."""
    if not isinstance(text, str) or not text:
        raise EndpointError(f"endpoint {text!r}: expected HOST:PORT")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise EndpointError(f"endpoint {text!r}: no closing ']'")
        host, rest = text[1:close], text[close + 1:]
        if not rest.startswith(":") or len(rest) == 1:
            raise EndpointError(f"endpoint {text!r}: no port after ']'")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port:
        raise EndpointError(f"endpoint {text!r}: expected HOST:PORT")
    if ":" in host:
        raise EndpointError(f"endpoint {text!r}: IPv6 addresses must be written [ADDRESS]:PORT")
    return host, port


def parse_port(text: str, lowest: int = 1) -> int:
    """A decimal port number in lowest..65535 (at most 5 ASCII digits: str.isdigit alone
    takes "²" and "５", as strtoul does not); EndpointError otherwise."""
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or len(text) > 5 \
            or not lowest <= int(text) <= 65535:
        raise EndpointError(f"port {text!r} is not in {lowest}..65535")
    return int(text)


def parse_endpoint(text: str, *, ip_only: bool = False) -> Endpoint:
    """"HOST:PORT" -> (host, port), port 1..65535. With `ip_only` the host must be an IP
    literal and comes back canonical; otherwise a host name is allowed (no white space or
    '/'; resolving it is the caller's I/O). Raises EndpointError."""
    host, port_text = split_hostport(text.strip() if isinstance(text, str) else text)
    try:
        port = parse_port(port_text)
    except EndpointError:
        raise EndpointError(f"endpoint {text!r}: port {port_text!r} is not in 1..65535") from None
    if text.startswith("[") or ip_only:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise EndpointError(f"endpoint {text!r}: {host!r} is not an IP address") from None
        if text.startswith("[") and ip.version != 6:
            raise EndpointError(f"endpoint {text!r}: brackets hold an IPv6 address")
        if ip_only:
            scope = host.partition("%")[2]
            return (str(ip) + (f"%{scope}" if scope else ""), port)
        return host, port
    if any(c.isspace() for c in host) or "/" in host:
        raise EndpointError(f"endpoint {text!r}: host {host!r} is not a valid name or address")
    return host, port


def format_endpoint(endpoint: Endpoint | None) -> str:
    """"IP:port" or "[IPv6]:port"; "(none)" for None (as `wg show` prints it)."""
    if endpoint is None:
        return "(none)"
    host, port = endpoint[0], endpoint[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_endpoint(endpoint: tuple) -> Endpoint:
    """A socket address or (host, port) -> canonical (ip string, port): brackets removed,
    IPv4-mapped IPv6 written as IPv4, IPv6 compressed. Raises EndpointError."""
    try:
        host, port = str(endpoint[0]).strip("[]"), int(endpoint[1])
        ip = ipaddress.ip_address(host)
    except (ValueError, TypeError, IndexError):
        raise EndpointError(f"endpoint {endpoint!r}: not an IP address and port") from None
    if not 0 <= port <= 65535:
        raise EndpointError(f"endpoint {endpoint!r}: port out of range")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), port)


def address_bytes(endpoint: Endpoint) -> tuple[bytes, bytes]:
    """(packed IP, packed IP + 2-byte port) of an endpoint: the keys of the per-source rate
    limiter and of cookie replies (whitepaper section 5.4.7)."""
    host, port = endpoint
    try:
        ip = ipaddress.ip_address(host).packed
    except ValueError:
        ip = host.encode()
    return ip, ip + port.to_bytes(2, "big")


def host_prefix(address: str) -> str:
    """An address as a single-host prefix: "10.0.0.1/32", "fd00::1/128"."""
    return f"{address}/{128 if ':' in address else 32}"
