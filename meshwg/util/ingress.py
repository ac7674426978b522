"""Who may talk to a mesh-internal service: only what came through the tunnel from a member.

Linux accepts a packet for any local address on any interface (the weak host model), so a
server bound to a mesh address also answers a host on the internet side that routes the
mesh prefix to the machine's public address. An :class:`Ingress` closes that:

* :meth:`Ingress.bind` sets SO_BINDTODEVICE to the tunnel interface on a socket before
  it is bound: the kernel then delivers to it only datagrams and connections that arrived
  on that interface (anything else finds no socket: an ICMP port unreachable or a TCP
  reset, nothing read). Connections accepted from a bound listener are bound too.
* :meth:`Ingress.admits` checks the source address (``allowed``: e.g. "a current member's
  mesh address", "the rendezvous"). The engine only lets an inner packet in when its
  source lies in the sending peer's allowed IPs, so arrival on the tunnel plus a member's
  source address proves the member.

Every mesh-internal server takes an ``ingress`` (None: no restriction, for tests on
loopback and for services meant to be public).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def _anyone(_source: str) -> bool:
    return True


@dataclass(frozen=True)
class Ingress:
    """Accept only what arrives on ``interface`` from a source ``allowed`` admits."""

    interface: str
    allowed: Callable[[str], bool] = field(default=_anyone)

    def bind(self, sock: socket.socket) -> None:
        """Restrict `sock` to the tunnel interface (call before bind()); OSError if the
        interface does not exist."""
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())

    def admits(self, source: str) -> bool:
        """True when `source` (an address, maybe with a %scope) may be answered."""
        try:
            return bool(self.allowed(source.split("%", 1)[0]))
        except Exception:  # noqa: BLE001 -- a failing check refuses, never kills a server
            return False


def restrict(sock: socket.socket, ingress: Ingress | None) -> None:
    """:meth:`Ingress.bind` when there is an ingress rule, else nothing."""
    if ingress is not None:
        ingress.bind(sock)


def admitted(ingress: Ingress | None, source: str) -> bool:
    """:meth:`Ingress.admits` when there is an ingress rule, else True."""
    return ingress is None or ingress.admits(source)
