"""What the protocol reports to the layer above: plain values, no core objects.

WireGuardProtocol.take_events() returns them in the order they happened; the device hands
them on (Device.wait_events) to the mesh daemons and its log. Keys are raw 32-byte public
keys, endpoints the (IP string, port) tuples of the I/O layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A session with the peer `public_key` is usable in both directions; `endpoint` is
    where the peer is reached now (None: not known)."""
    public_key: bytes
    endpoint: Endpoint | None


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    """An authenticated message from the peer `public_key` came from a new `endpoint`
    (roaming); replies go there from now on."""
    public_key: bytes
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class PathUnanswered:
    """We sent data to the peer `public_key` at `endpoint` and nothing authenticated came
    back for `silent_for` seconds (at least Timers.unanswered_after; emitted again every
    unanswered_after while data goes out unanswered). Keepalives sent are not data;
    any authenticated packet received (keepalives too) answers."""
    public_key: bytes
    endpoint: Endpoint | None
    silent_for: float


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """A probe (WireGuardProtocol.probe) of the peer `public_key` was answered with an
    authenticated handshake response from `endpoint`, `rtt` seconds after it was sent.
    A probe sent with hold=True does not move the peer's endpoint there."""
    public_key: bytes
    endpoint: Endpoint
    rtt: float


Event = Union[HandshakeCompleted, EndpointChanged, PathUnanswered, ProbeAnswered]
