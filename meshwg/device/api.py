"""The engine's Python API types: what a caller may change (DeviceUpdate) and read
(DeviceStatus) of a running device, and the events it reports (HandshakeCompleted,
EndpointChanged: defined in meshwg.core.events, the protocol's output, and named here).

meshwg.device.device.Device.apply / status / wait_events take and give these; the `wg` control
socket (meshwg.uapi) is one text encoding of the same types, and the mesh daemons use them
in-process. Keys are raw 32-byte values, endpoints (IP string, port) tuples, allowed IPs
ipaddress networks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

from meshwg.core.events import (EndpointChanged, Event, HandshakeCompleted, PathUnanswered,
                                ProbeAnswered)

__all__ = ["Network", "PeerUpdate", "DeviceUpdate", "PeerStatus", "DeviceStatus",
           "Event", "HandshakeCompleted", "EndpointChanged", "PathUnanswered", "ProbeAnswered"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass
class PeerUpdate:
    """One peer's part of a set request. None / False / [] mean "not mentioned".

    preshared_key == bytes(32) removes the preshared key. allowed_ips are added in order
    (after replace_allowed_ips clears the old ones); remove_allowed_ips ("allowed_ip=-CIDR",
    sent by newer wg tools) are removed from this peer only.
    """

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[Network] = field(default_factory=list)
    remove_allowed_ips: list[Network] = field(default_factory=list)
    probe_endpoints: list[tuple[str, int]] = field(default_factory=list)
    probe_hold: bool = False    # the probes' answer does not move the endpoint (ProbeAnswered)
    pin_endpoint: float = 0.0   # > 0: a deliberate move of `endpoint`, kept that many seconds
                                # against roaming, announced with a keepalive (move_endpoint)


@dataclass
class DeviceUpdate:
    """A whole validated set request; apply device fields, then `peers` in order.

    private_key == bytes(32) removes the private key; fwmark 0 clears the mark.
    """

    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerUpdate] = field(default_factory=list)


@dataclass
class PeerStatus:
    public_key: bytes
    preshared_key: bytes | None
    endpoint: tuple[str, int] | None
    last_handshake_sec: int
    last_handshake_nsec: int
    tx_bytes: int
    rx_bytes: int
    persistent_keepalive: int
    allowed_ips: list[Network]


@dataclass
class DeviceStatus:
    private_key: bytes | None
    listen_port: int
    fwmark: int
    peers: list[PeerStatus]
