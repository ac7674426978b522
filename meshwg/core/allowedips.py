"""Cryptokey routing: which peer owns the longest prefix containing an address.

One table per address family. Each table keeps one dict per prefix length present,
mapping the masked address (an int) to the peer; a lookup tries the present lengths
longest first, so it costs at most one dict probe per distinct prefix length in use
(typically a handful), independent of the number of peers.

The levels of a family are kept as one tuple of (mask, dict), longest first, rebuilt
when a prefix length appears or disappears; the lookup binds it once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

RECENT_MAX = 256       # addresses lookup_recent remembers; the memo is emptied when full


class _FamilyTable:
    """Prefixes of one address family (bits = 32 or 128)."""

    __slots__ = ("bits", "by_length", "levels")

    def __init__(self, bits: int):
        self.bits = bits
        self.by_length: dict[int, dict[int, Hashable]] = {}
        # (mask, dict) per present prefix length, longest first; rebuilt on shape change.
        self.levels: tuple[tuple[int, dict[int, Hashable]], ...] = ()

    def mask(self, length: int) -> int:
        return ((1 << length) - 1) << (self.bits - length)

    def rebuild(self) -> None:
        self.levels = tuple((self.mask(length), self.by_length[length])
                            for length in sorted(self.by_length, reverse=True))

    def set(self, length: int, key: int, peer: Hashable) -> None:
        level = self.by_length.get(length)
        if level is None:
            level = self.by_length[length] = {}
            level[key] = peer
            self.rebuild()
        else:
            level[key] = peer

    def delete(self, length: int, key: int) -> None:
        level = self.by_length[length]
        del level[key]
        if not level:
            del self.by_length[length]
            self.rebuild()


def _sort_key(net: Network) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


class AllowedIPs:
    """Longest-prefix-match table from IPv4/IPv6 networks to peers (any hashable object).

    A network belongs to at most one peer: inserting it again moves it.
    Networks are normalised (host bits cleared), as wg does.
    """

    def __init__(self) -> None:
        self._v4 = _FamilyTable(32)
        self._v6 = _FamilyTable(128)
        self._owner: dict[Network, Hashable] = {}
        self._of_peer: dict[Hashable, set[Network]] = {}
        # lookup_recent's memo: raw address -> peer, emptied by every change of the table
        # (read, never written, by the compiled lone crossing: meshwg/accel/_crossing.c)
        self.recent: dict[bytes, Hashable] = {}

    @staticmethod
    def _normalise(network: Network) -> Network:
        """The network itself: an IPv4Network or IPv6Network never has host bits set
        (the constructor clears them or refuses), so there is nothing to rebuild (which
        cost more than the rest of an insert)."""
        if not isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            raise TypeError(f"expected an IPv4Network or IPv6Network, got {network!r}")
        return network

    def _table(self, network: Network) -> _FamilyTable:
        return self._v4 if network.version == 4 else self._v6

    def insert(self, network: Network, peer: Hashable) -> None:
        """Route `network` to `peer` (taking it from any previous owner)."""
        if peer is None:
            raise ValueError("peer must not be None")
        net = self._normalise(network)
        previous = self._owner.get(net)
        if previous is not None:
            if previous == peer:
                return
            self._forget(previous, net)
        self.recent.clear()
        self._owner[net] = peer
        self._of_peer.setdefault(peer, set()).add(net)
        self._table(net).set(net.prefixlen, int(net.network_address), peer)

    def remove(self, network: Network, peer: Hashable | None = None) -> bool:
        """Drop `network` (only if owned by `peer`, when given). True if something was removed."""
        net = self._normalise(network)
        owner = self._owner.get(net)
        if owner is None or (peer is not None and owner != peer):
            return False
        self.recent.clear()
        del self._owner[net]
        self._forget(owner, net)
        self._table(net).delete(net.prefixlen, int(net.network_address))
        return True

    def remove_peer(self, peer: Hashable) -> None:
        """Drop every network of `peer`."""
        self.recent.clear()
        for net in self._of_peer.pop(peer, ()):
            del self._owner[net]
            self._table(net).delete(net.prefixlen, int(net.network_address))

    def _forget(self, peer: Hashable, net: Network) -> None:
        nets = self._of_peer[peer]
        nets.discard(net)
        if not nets:
            del self._of_peer[peer]

    def lookup(self, address: bytes) -> Hashable | None:
        """The peer owning the longest prefix that contains the raw 4- or 16-byte address."""
        n = len(address)
        if n == 4:
            levels = self._v4.levels
        elif n == 16:
            levels = self._v6.levels
        else:
            return None
        value = int.from_bytes(address, "big")
        for mask, level in levels:
            peer = level.get(value & mask)
            if peer is not None:
                return peer
        return None

    def lookup_recent(self, address: bytes) -> Hashable | None:
        """lookup(address), remembered per address until the table changes (at most
        RECENT_MAX addresses): one dict probe for the lone-packet path
        (meshwg.core.lone), where a ping after an idle spell pays for every level it
        walks on a cold CPU."""
        peer = self.recent.get(address)
        if peer is None:
            peer = self.lookup(address)
            if peer is not None:
                recent = self.recent
                if len(recent) >= RECENT_MAX:
                    recent.clear()
                recent[address] = peer
        return peer

    def networks_of(self, peer: Hashable) -> list[Network]:
        """The networks routed to `peer`: IPv4 first, then by address and prefix length."""
        return sorted(self._of_peer.get(peer, ()), key=_sort_key)

    def networks(self) -> set[Network]:
        """Every network routed to some peer (a new set, in no order)."""
        return set(self._owner)

    def peers(self) -> list[Hashable]:
        """Every peer that owns at least one network."""
        return list(self._of_peer)

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, network: object) -> bool:
        if not isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return False
        return self._normalise(network) in self._owner
