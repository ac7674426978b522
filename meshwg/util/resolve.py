"""Host names to addresses (the resolver's I/O), and the socket family of an address.

The one place meshwg and discovery turn a host into addresses: wg-quick Endpoint lines,
the rendezvous named in a join token, DNS servers.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from meshwg.util.endpoint import Endpoint, EndpointError

Resolver = Callable[..., list]


def family_of(address: str) -> int:
    """socket.AF_INET6 for an IPv6 address (with or without brackets), else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def resolve(host: str, port: int, *, getaddrinfo: Resolver = socket.getaddrinfo
            ) -> list[tuple[int, tuple]]:
    """(family, sockaddr) of every IPv4 and IPv6 address of `host` for UDP, in the
    resolver's order without duplicates. An IP literal is returned as it is, without a
    DNS query. Raises EndpointError naming the host and the resolver's reason."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, (host, port) if family == socket.AF_INET else (host, port, 0, 0))]
    try:
        results = getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise EndpointError(f"cannot resolve host {host!r}: {reason}") from None
    out: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in results:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in out:
            out.append((family, sockaddr))
    if not out:
        raise EndpointError(f"host {host!r} has no IPv4 or IPv6 address")
    return out


def resolve_endpoint(host: str, port: int, *, getaddrinfo: Resolver = socket.getaddrinfo
                     ) -> Endpoint:
    """The first address of `host` as an (ip string, port) endpoint. Raises EndpointError."""
    _family, sockaddr = resolve(host, port, getaddrinfo=getaddrinfo)[0]
    return sockaddr[0], port
