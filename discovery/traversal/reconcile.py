"""Reconciliation, free of I/O: what the directory, the LAN and the paths say an engine's
peers should be -> the engine update (meshwg.device.api) that makes it so, and when to
look again.

The daemons do the I/O around it (read the directory and the engine's status, apply the
update, wait until the deadline or an event); everything here takes data and the current
time and returns data:

- a member: MemberReconciler.reconcile(directory, lan, status, now) -> Plan: peers added,
  re-addressed or removed to match the directory (the rendezvous's own peer is kept),
  candidates fed to the path manager (discovery.traversal.paths), the engine's view
  observed, due probes as probe_endpoints, and the next deadline;
- the rendezvous: rendezvous_peer_updates(members, status) makes its peers equal to the
  membership; directory_records(members, endpoints) is the directory it publishes.

Times are wall-clock seconds (time.time()), the clock of the engine's last-handshake
times. Keys are raw 32-byte public keys, endpoints (IP string, port) tuples.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol

from meshwg.device.api import DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate
from meshwg.util.endpoint import Endpoint, host_prefix

from discovery.dnssd.member import MemberRecord, parse_published, published_ip
from discovery.traversal.paths import Candidates, PathManager

RENDEZVOUS_KEEPALIVE = 5    # seconds: a member keeps its NAT mapping to the rendezvous open
MEMBER_KEEPALIVE = 10       # seconds: members keep each other's paths (and mappings) open


class Enrolled(Protocol):
    """What the rendezvous's store says of one member (discovery.stores Member)."""

    name: str
    public_key: bytes
    mesh_address: str
    host_candidates: list[str]


@dataclass
class Plan:
    """What one reconciliation decided: the update to apply (no peers: nothing to do) and
    when to reconcile again at the latest (wall-clock seconds; None: only on events)."""

    update: DeviceUpdate = field(default_factory=DeviceUpdate)
    next_deadline: float | None = None


def host_network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A mesh address as the single-host allowed IP of its peer."""
    return ipaddress.ip_network(host_prefix(address))


def lan_endpoints(addresses: Iterable[str], port: int) -> list[Endpoint]:
    """The endpoints mDNS gave for a peer (its LAN addresses and port); scoped link-local
    addresses ("fe80::1%eth0") mean nothing off their link and are left out."""
    return [(address, port) for address in addresses if "%" not in address]


def publishable_endpoint(endpoint: Endpoint | None) -> Endpoint | None:
    """An engine's endpoint for a member as the directory publishes it (canonical IP); a
    scoped link-local address means nothing to other members (None)."""
    if endpoint is None:
        return None
    try:
        return str(published_ip(endpoint[0], "endpoint")), endpoint[1]
    except ValueError:
        return None


def candidate_endpoints(items: Iterable[str]) -> list[Endpoint]:
    """Stored "IP:port" host candidates as publishable endpoints; others are skipped."""
    out = []
    for item in items:
        try:
            out.append(parse_published(item))
        except ValueError:
            continue
    return out


def rendezvous_peer(public_key: bytes, endpoint: Endpoint, dns_address: str,
                    keepalive: int = RENDEZVOUS_KEEPALIVE) -> PeerUpdate:
    """A member's peer for its rendezvous: the directory's mesh address behind it, kept
    alive so the rendezvous always sees the member's current NAT mapping."""
    return PeerUpdate(public_key=public_key, endpoint=endpoint, persistent_keepalive=keepalive,
                      replace_allowed_ips=True, allowed_ips=[host_network(dns_address)])


def member_peer_updates(directory: Mapping[bytes, MemberRecord], engine: Mapping[bytes, PeerStatus],
                        keep: Iterable[bytes] = (), keepalive: int = MEMBER_KEEPALIVE
                        ) -> list[PeerUpdate]:
    """Updates that make a member's engine peers (`engine`, by key) equal to `directory`:
    peers not listed are removed (except `keep`, the rendezvous), listed ones are added
    with persistent keepalive, and their allowed IP set to their mesh address. Endpoints
    are left to the engine (roaming) and the path manager (probes)."""
    keep = set(keep)
    updates = [PeerUpdate(public_key=key, remove=True)
               for key in engine if key not in directory and key not in keep]
    for key, record in directory.items():
        allowed = [host_network(record.mesh_address)] if record.mesh_address else []
        peer = engine.get(key)
        if peer is None or (allowed and peer.allowed_ips != allowed):
            updates.append(PeerUpdate(public_key=key, persistent_keepalive=keepalive,
                                      replace_allowed_ips=True, allowed_ips=allowed))
    return updates


class MemberReconciler:
    """A member's reconciliation: directory records + LAN candidates + path state ->
    the engine update and the next deadline. Holds the path manager; no I/O."""

    def __init__(self, rendezvous_key: bytes, paths: PathManager | None = None,
                 keepalive: int = MEMBER_KEEPALIVE):
        self.rendezvous_key = rendezvous_key
        self.paths = paths if paths is not None else PathManager()
        self.keepalive = keepalive

    def reconcile(self, directory: Mapping[bytes, MemberRecord],
                  lan: Mapping[bytes, list[Endpoint]], status: DeviceStatus, now: float,
                  relays: Mapping[bytes, Endpoint] | None = None, relay_name: str = "rendezvous",
                  relay_names: Mapping[bytes, str] | None = None,
                  relay_others: Mapping[bytes, list[Endpoint]] | None = None) -> Plan:
        """`directory`: the other members by key; `lan`: LAN endpoints mDNS found, by key
        (only listed members use them: mDNS is unauthenticated); `status`: the engine's,
        read just before; `relays`: the relay client's local proxy endpoint per peer
        (discovery.relay.client), `relay_name` the relay's name (`relay_names`: per peer,
        when peers use different relays; `relay_others`: the proxies of each peer's other
        relays, discovery.relay.pool). Returns the peers to
        add/change/remove, the probes due, and the peers moved onto their relay (endpoint
        set to the proxy, with a handshake through it)."""
        relays = relays or {}
        engine = {peer.public_key: peer for peer in status.peers}
        updates = member_peer_updates(directory, engine, keep=(self.rendezvous_key,),
                                      keepalive=self.keepalive)
        for key in [k for k in self.paths.peers if k not in directory]:
            self.paths.forget(key)
        for key, record in directory.items():
            self.paths.set_relay(key, relays.get(key), (relay_names or {}).get(key, relay_name),
                                 (relay_others or {}).get(key, ()))
            self.paths.update_candidates(key, Candidates(lan=list(lan.get(key, ())),
                                                         reflexive=record.endpoint,
                                                         host=list(record.host_candidates)), now)
            peer = engine.get(key)
            if peer is not None:
                self.paths.observe(key, peer.endpoint, peer.last_handshake_sec or None,
                                   peer.rx_bytes, now)
        # a move onto the relay goes first, with its handshake through the relay: a probe
        # round in the same update would be rate-limited or replace that handshake
        # (or, after a fallback or a trial, onto the endpoint the path manager chose)
        moved = {key: endpoint for key, endpoint in self.paths.moves_due(now).items() if key in engine}
        for key, endpoint in moved.items():
            updates.append(PeerUpdate(public_key=key, update_only=True, endpoint=endpoint,
                                      probe_endpoints=[endpoint],
                                      pin_endpoint=self.paths.move_pin(key)))
        for key, endpoints in self.paths.probes_due(now).items():
            if key not in moved:
                updates.append(PeerUpdate(public_key=key, update_only=True, probe_endpoints=endpoints,
                                          probe_hold=self.paths.probe_hold(key)))
        return Plan(DeviceUpdate(peers=updates), self.paths.next_deadline(now))

    def own_addresses_changed(self, rendezvous_endpoint: Endpoint, now: float) -> DeviceUpdate:
        """This host's addresses changed: a handshake to the rendezvous and to every peer's
        current endpoint lets them see our new source address at once, and every path is
        re-probed on all its candidates."""
        updates = [PeerUpdate(public_key=self.rendezvous_key, update_only=True,
                              probe_endpoints=[rendezvous_endpoint])]
        for key, path in self.paths.peers.items():
            if path.endpoint is not None:
                updates.append(PeerUpdate(public_key=key, update_only=True,
                                          probe_endpoints=[path.endpoint]))
            self.paths.path_may_have_moved(key, now)
        return DeviceUpdate(peers=updates)


def rendezvous_peer_updates(members: Iterable[Enrolled], engine: Mapping[bytes, PeerStatus],
                            last_endpoints: Mapping[bytes, Endpoint | None] | None = None
                            ) -> list[PeerUpdate]:
    """Updates that make the rendezvous's engine peers equal to the membership: revoked
    members removed, new ones added with their mesh address as allowed IP. Endpoints are
    learnt by roaming (members keep the rendezvous alive); a member the engine has no
    endpoint for but `last_endpoints` has (the directory before a restart) gets that one
    and a handshake to it at once, so its session comes back without waiting for it."""
    wanted = {m.public_key: m for m in members}
    last_endpoints = last_endpoints or {}
    updates = [PeerUpdate(public_key=key, remove=True) for key in engine if key not in wanted]
    for key, member in wanted.items():
        allowed = [host_network(member.mesh_address)]
        peer = engine.get(key)
        update = PeerUpdate(public_key=key)
        if peer is None or peer.allowed_ips != allowed:
            update.replace_allowed_ips, update.allowed_ips = True, allowed
        last = last_endpoints.get(key)
        if last is not None and (peer is None or peer.endpoint is None):
            update.endpoint, update.probe_endpoints = last, [last]
        if update != PeerUpdate(public_key=key):
            updates.append(update)
    return updates


def directory_records(members: Iterable[Enrolled], endpoints: Mapping[bytes, Endpoint | None],
                      extras: Mapping[bytes, dict[str, str]] | None = None) -> list[MemberRecord]:
    """The directory the rendezvous publishes: each member with the endpoint its engine
    sees (its current NAT mapping, None until its first handshake), its reported host
    candidates and its `extras` TXT fields (a relay offer: discovery.dnssd.relays)."""
    return [MemberRecord(public_key=m.public_key,
                         endpoint=publishable_endpoint(endpoints.get(m.public_key)),
                         allowed_ips=[host_prefix(m.mesh_address)], name=m.name,
                         mesh_address=m.mesh_address,
                         host_candidates=candidate_endpoints(m.host_candidates),
                         extra=dict((extras or {}).get(m.public_key, {})))
            for m in members]
