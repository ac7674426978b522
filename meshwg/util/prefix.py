"""IP prefixes as wg and wg-quick write them ("10.0.0.0/8", "fd00::/64", a bare address)."""

from __future__ import annotations

import ipaddress
from typing import Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_network(text: str) -> Network:
    """A CIDR prefix, host bits cleared (a bare address is a host route: /32 or /128).
    Raises ValueError for anything else (including a prefix length of more than 3 digits)."""
    _address, slash, length = text.partition("/")
    if slash and not (length.isdigit() and len(length) <= 3):
        raise ValueError(text)
    return ipaddress.ip_network(text, strict=False)


def has_host_bits(text: str) -> bool:
    """True when a prefix such as "10.0.0.1/24" has bits set beyond its length."""
    return ipaddress.ip_interface(text).ip != ipaddress.ip_network(text, strict=False).network_address
