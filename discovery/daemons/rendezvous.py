"""The rendezvous daemon: a meshwg node whose peers are the members.

WireGuard roaming keeps its view of each member's endpoint equal to that member's current
NAT mapping; it serves that view as DNS-SD (wgsd's layout, discovery.dnssd.zone) on its
mesh address, admits new members over the enrollment service, and keeps its engine's
peers equal to the membership in the state directory. The directory it publishes is also
kept in the state directory (discovery.daemons.directory_cache): after a restart it starts
handshakes to the members' last endpoints at once, so the members' sessions, and the
directory's endpoints, come back without waiting for the members to notice.

It also runs the members-only relay (discovery.relay.server, UDP on its WireGuard port + 1,
`relay=False` / `--no-relay` to turn it off) for pairs with no direct path; its counters
are logged when they changed at a sync and kept in RELAY_STATUS in the state directory
for `meshwg members --json`. Members that offer a relay of their own say so in their
candidate report; the offer is published in their TXT record (discovery.dnssd.relays)
and kept in memory only (a member re-reports when its record lacks it). So are members'
LAN keys (TXT ``lk``: their mDNS announcements are signed with it, discovery.lan.lankey),
which a restart takes from the directory it published last.

It drives its engine in-process (Device.apply/status) and reacts to it: when a member's
endpoint changes (the engine's EndpointChanged and HandshakeCompleted events) the new
endpoint is published and every member told by NOTIFY at once. The membership is re-read
when this process changed it (enrollment, candidate reports) and when another process did
(`meshwg remove`: a look at the store's data version every `interval` seconds, a few
microseconds), with a full sync every SAFETY_POLL seconds besides.

On a DNS directory (`rendezvous init --directory dns://...`) it also writes the endpoints it
observes into the zone, off this loop, and serves those other rendezvous wrote for members
it has no tunnel to (discovery.daemons.zone_publish).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Any

from meshwg.device.api import DeviceUpdate
from meshwg.device.device import Device
from meshwg.util.ingress import Ingress
from meshwg.util.service import Service
from meshwg.util.endpoint import Endpoint, normalize_endpoint, parse_endpoint
from meshwg.util.files import JsonFile

from discovery.daemons.directory_cache import cache_path, load_directory, save_directory
from discovery.daemons.engine_events import EngineEvents
from discovery.daemons.rendezvous_status import directory_status, status_path
from discovery.daemons.storewatch import StoreWatch
from discovery.dnssd.notify import Notifier
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.relays import relay_txt
from discovery.dnssd.zone import Directory
from discovery.lan.lankey import LAN_KEY_TXT, directory_lan_keys, lan_key_txt
from discovery.dnssd.server import DnsServer
from discovery.enroll.transport import EnrollmentServer
from discovery.relay import tls
from discovery.relay.server import RelayServer
from discovery.netcheck.responder import ObservationResponder, observe_ports
from discovery.stores.errors import StateError
from discovery.stores.rendezvous import DB_NAME, RendezvousState
from discovery.stores.validate import screen_candidates
from discovery.traversal.birthday import NAT_TXT_KEY
from discovery.traversal.reconcile import candidate_endpoints, directory_records, rendezvous_peer_updates
from discovery.traversal.report import REPORT_PORT_DEFAULT, CandidateReportServer

log = logging.getLogger("meshwg.rendezvous")

DEFAULT_INTERVAL = 1.0      # seconds between looks for membership changes by other processes
SAFETY_POLL = 30.0          # seconds between full syncs of engine, membership and directory
RELAY_STATUS = "relay-status.json"   # the relay's counters, in the state directory


class RendezvousDaemon:
    """`meshwg rendezvous run`'s daemon for the state in `state_dir`: start() creates the
    interface and serves DNS-SD, enrollment and candidate reports; stop() ends them.
    Raises StateError (no state) and, from start(), the engine's and servers' errors."""

    def __init__(self, state_dir: str, interval: float = DEFAULT_INTERVAL,
                 public_dns: str | None = None, interface: str | None = None, relay: bool = True,
                 relay_tcp_port: int = tls.DEFAULT_PORT):
        self.state = RendezvousState.open(state_dir)
        self._zone_changed = lambda: False
        if self.state.directory:    # the membership is a DNS zone's (discovery.stores.zone_rendezvous)
            from discovery.stores.zone_rendezvous import ZoneState
            try:
                self.state = ZoneState(self.state)
            except BaseException:
                self.state.close()
                raise
            self._zone_changed = self.state.refresh
        self._zone_publish = None       # writes our observations to the zone (zone_publish)
        self.relay_enabled = relay          # a members-only UDP relay on the WG port + 1
        self.relay_tcp_port = relay_tcp_port if relay else 0   # and over TLS on TCP (0: off)
        self.relay: RelayServer | None = None
        self._relay_counters: dict[str, int] = {}
        self._nat_kinds: dict[bytes, str] = {}       # members' NAT kinds, TXT nat= (guarded by _lock)
        self._relay_offers: dict[bytes, int] = {}    # members' relay ports (guarded by _lock)
        self._lan_keys: dict[bytes, bytes] = {}      # members' LAN keys, TXT lk= (guarded by _lock)
        self.relay_status = JsonFile(self.state.state_dir / RELAY_STATUS, mode=0o600)
        self.status_file = JsonFile(status_path(self.state.state_dir), mode=0o600)  # `rendezvous status`
        self.interval = interval
        self.public_dns = public_dns
        self.interface = interface or self.state.interface
        self.network = ipaddress.ip_network(self.state.network)
        self.directory = Directory(self.state.zone, rendezvous_addresses=[self.state.address])
        self.device: Device | None = None
        self.servers: list = []
        self.responder: ObservationResponder | None = None   # netcheck's, WG port + 2, + 3
        self.notifier: Notifier | None = None
        self.engine_events: EngineEvents | None = None
        self.store_watch = StoreWatch(self.state.state_dir / DB_NAME)
        self._loop_service = Service("rendezvous-sync")   # the main loop (wake-or-deadline)
        self._next_sync = 0.0
        self._published: list[MemberRecord] | None = None
        self._members: list = []                     # the membership as last read
        self._address_index: tuple = (None, frozenset())  # (_members, their mesh addresses)
        self._endpoints: dict[bytes, Endpoint | None] = {}   # the engine's view, by key
        self._observed: set[bytes] = set()           # keys the engine has heard from
        self._lock = threading.Lock()                # guards _events and _resync
        self._events: list = []
        self._resync = False
        self.cache_path = cache_path(self.state.state_dir)
        cached = load_directory(self.cache_path)
        self._last_endpoints = {key: record.endpoint for key, record in cached.items()}
        # members' LAN keys as last published: a restart does not withdraw them until
        # each member reports again (its LAN peers would distrust it meanwhile)
        self._lan_keys.update(directory_lan_keys(cached))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        st = self.state
        self.device = Device(self.interface, private_key=st.private_key, listen_port=st.listen_port or 0,
                             addresses=[f"{st.address}/{self.network.prefixlen}"], manage_routes=False)
        self.device.start()
        try:
            self.notifier = Notifier(st.zone, st.address)
            self.engine_events = EngineEvents(self.device, self._on_engine_events,
                                              name="rendezvous-events").start()
            if self.relay_enabled:
                # also over TLS on TCP (pinned in invites) for members whose network blocks
                # UDP; they reach this engine through it too (engine_port)
                tls.save_port(st.state_dir, self.relay_tcp_port)
                identity = tls.ensure_identity(st.state_dir) if self.relay_tcp_port else None
                self.relay = RelayServer(st.private_key, "::", self.device.listen_port + 1,
                                         identity=identity, tcp_port=self.relay_tcp_port or None,
                                         engine_port=self.device.listen_port).start()
                self.servers.append(self.relay)
            if self.state.directory:   # the zone's directory: ours written, others' served
                from discovery.daemons.zone_publish import ZonePublish
                self._zone_publish = ZonePublish(self.state.primary(), self.state.directory_records)
                self.servers.append(self._zone_publish.start())
            self.sync_once()
            if self.state.directory:   # from now on the zone is read off the main loop
                self.servers.append(self.state.start_reader(self._loop_service.wake))
            # the directory and reports: members only, through the tunnel (meshwg.util.ingress)
            members_only = Ingress(self.interface, self._is_member_address)
            dns = DnsServer(self.directory, st.address, st.dns_port, ingress=members_only).start()
            self.servers.append(dns)
            if self.public_dns:
                host, port = parse_endpoint(self.public_dns)
                self.servers.append(DnsServer(self.directory, host, port).start())
            self.servers.append(EnrollmentServer(st, "::", st.enroll_port,
                                                 on_member_added=self._member_added).start())
            self.servers.append(CandidateReportServer(st.address, REPORT_PORT_DEFAULT,
                                                      self._candidates_reported,
                                                      on_relay=self._relay_offered,
                                                      on_nat=self._nat_reported,
                                                      ingress=members_only,
                                                      on_lan_key=self._lan_key_reported).start())
            # `meshwg netcheck`'s "what is my address" responder, on the WG port + 2 and + 3
            self.responder = ObservationResponder(observe_ports(self.device.listen_port)).start()
            self.servers.append(self.responder)
        except BaseException:
            self.stop()
            raise
        self._next_sync = time.monotonic() + SAFETY_POLL
        self._loop_service.spawn(self._loop_service.loop, self._round, name="rendezvous-sync")
        log.info("rendezvous %s: mesh %s, DNS-SD on %s:%d zone %s", self.interface, self.network,
                 st.address, st.dns_port, st.zone)

    def stop(self) -> None:
        self._loop_service.stop(timeout=5)
        if self.engine_events is not None:
            self.engine_events.stop()
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                log.exception("stopping %s", server)
        self.servers.clear()
        if self.notifier is not None:
            self.notifier.close()
        if self.device is not None:
            self.device.stop()
            self.device = None
        self.store_watch.close()
        self.relay_status.remove()
        self.status_file.remove()
        self.state.close()

    # ------------------------------------------------------------------ callbacks (other threads)
    def _is_member_address(self, address: str) -> bool:
        """True when `address` is a current member's mesh address (the membership as last
        read; the store for one enrolled since)."""
        members = self._members
        if self._address_index[0] is not members:       # rebuilt once per membership read
            self._address_index = (members, frozenset(m.mesh_address for m in members))
        if address in self._address_index[1]:
            return True
        return self.state.find_member(address) is not None

    def _member_added(self, member) -> None:
        log.info("enrolled %s (%s)", member.name, member.mesh_address)
        self._request_sync()

    def _candidates_reported(self, source_ip: str, candidates: list[str]) -> None:
        member = self.state.find_member(source_ip)
        if member is None:
            log.info("candidate report from %s, which is no member: ignored", source_ip)
            return
        endpoint = self._endpoints.get(member.public_key)      # where the engine sees it
        responder = self.responder        # its answered sources: our member's other families
        candidates, dropped = screen_candidates(
            candidates, [endpoint[0]] if endpoint else [],
            responder.seen_recently if responder is not None else None)
        for reason in dropped:          # issue 9 case 11: no third parties, nothing unpublishable
            log.info("candidate report from %s (%s): left out %s", source_ip, member.name, reason)
        try:
            self.state.update_candidates(member.public_key, candidates)
        except StateError as exc:      # revoked meanwhile, or a candidate the store refuses
            log.info("candidate report from %s: %s", source_ip, exc)
            return
        self._request_sync()

    def _reported_fact(self, facts: dict, source_ip: str, value: Any) -> str | None:
        """Keep what a member's report says in `facts` (by key; None: nothing, so the
        entry goes) and sync when it changed; the member's name then, else None."""
        member = self.state.find_member(source_ip)
        if member is None:
            return None
        with self._lock:
            if facts.get(member.public_key) == value:
                return None
            if value is None:
                del facts[member.public_key]
            else:
                facts[member.public_key] = value
        self._request_sync()
        return member.name

    def _relay_offered(self, source_ip: str, port: int | None) -> None:
        """A member's report says it offers a relay on UDP `port` (None: it does not)."""
        name = self._reported_fact(self._relay_offers, source_ip, port)
        if name is not None:
            log.info("%s %s", name, f"offers a relay on UDP port {port}" if port else "offers no relay")

    def _lan_key_reported(self, source_ip: str, lan_key: bytes | None) -> None:
        """A member's report carries its LAN key (None: none); published as TXT lk=."""
        name = self._reported_fact(self._lan_keys, source_ip, lan_key)
        if name is not None:
            log.info("%s: LAN key %s", name, lan_key_txt(lan_key) if lan_key else "withdrawn")

    def _nat_reported(self, source_ip: str, kind: str | None) -> None:
        """A member's report says what its netcheck found: a "hard" or "easy" NAT (None:
        unknown); published as TXT nat= for hard-NAT traversal (discovery.traversal.birthday),
        kept in memory only (a member re-reports when its record lacks it)."""
        member = self.state.find_member(source_ip)
        if member is None:
            return
        with self._lock:
            if self._nat_kinds.get(member.public_key) == kind:
                return
            if kind is None:
                del self._nat_kinds[member.public_key]
            else:
                self._nat_kinds[member.public_key] = kind
        self._request_sync()

    def _request_sync(self) -> None:
        with self._lock:
            self._resync = True
        self._loop_service.wake()

    def _on_engine_events(self, events: list) -> None:
        with self._lock:
            self._events.extend(events)
        self._loop_service.wake()

    # ------------------------------------------------------------------ loop
    def _round(self) -> float:
        """One round of the main loop (meshwg.util.service.Service.loop): a full sync when
        asked for, when another process changed the store or every SAFETY_POLL seconds,
        else the engine's events; seconds until the next round (events wake it earlier)."""
        with self._lock:
            resync, self._resync = self._resync, False
        self._serve_rendezvous()        # the mesh's rendezvous list, for members (issue 10)
        if resync or self.store_watch.changed() or self._zone_changed() or \
                time.monotonic() >= self._next_sync:
            self.sync_once()
            self._next_sync = time.monotonic() + SAFETY_POLL
        else:
            self._apply_events()
        self._write_relay_status()
        self._write_status()
        return min(self.interval, max(0.0, self._next_sync - time.monotonic()))

    def _take_events(self) -> list:
        with self._lock:
            events, self._events = self._events, []
        return events

    def _apply_events(self) -> None:
        """Members' new endpoints from the engine's events, published if they changed."""
        members = {m.public_key for m in self._members}
        changed = False
        for event in self._take_events():
            endpoint: Any = event.endpoint
            if endpoint is None or event.public_key not in members:
                continue
            self._observed.add(event.public_key)
            if self._endpoints.get(event.public_key) != endpoint:
                self._endpoints[event.public_key] = endpoint
                changed = True
        if changed:
            self._publish()

    def sync_once(self) -> None:
        """Make the engine's peers equal to the membership, then publish the directory."""
        self._take_events()     # older than the status read below; later ones come in order
        members = self.state.members()
        status = self.device.status()
        engine = {peer.public_key: peer for peer in status.peers}
        updates = rendezvous_peer_updates(members, engine, self._last_endpoints)
        self._last_endpoints = {}       # the directory before a restart: used once
        if updates:
            self.device.apply(DeviceUpdate(peers=updates))
            engine = {peer.public_key: peer for peer in self.device.status().peers}
        self._members = members
        self._endpoints = {key: peer.endpoint for key, peer in engine.items()}
        self._observed = {key for key, peer in engine.items()   # heard from, not a cached endpoint
                          if peer.rx_bytes or peer.last_handshake_sec}
        if self.relay is not None:
            self.relay.set_members(m.public_key for m in members)
            if self.relay.counters != self._relay_counters:
                self._relay_counters = dict(self.relay.counters)
                log.info("relay: %s", " ".join(f"{k}={v}" for k, v in self._relay_counters.items() if v))
        self._publish()

    def _write_relay_status(self) -> None:
        """The relay's counters for `meshwg members --json` (RELAY_STATUS), when they changed."""
        if self.relay is not None:
            try:
                self.relay_status.write(self.relay.status({m.public_key: m.name for m in self._members}))
            except OSError as exc:
                log.warning("cannot write %s: %s", self.relay_status.path, exc)

    def _write_status(self) -> None:
        """`meshwg rendezvous status`'s file (discovery.daemons.rendezvous_status), when it
        changed: who we are, how many members, the directory's health."""
        st = self.state
        try:
            self.status_file.write({
                "pid": os.getpid(), "interface": self.interface, "address": st.address,
                "network": str(self.network), "zone": st.zone, "endpoint": st.endpoint,
                "members": len(self._members), "directory": directory_status(st)},
                {"updated_at": time.time()})
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_file.path, exc)

    def _publishable_endpoints(self) -> dict[bytes, Endpoint | None]:
        """The engine's endpoints, except that a member reaching us through the relay over
        TCP (UDP blocked) is seen at a loopback proxy, which nobody else could use: it is
        published at its first host candidate instead (the directory lists only members
        with an endpoint), which others probe in vain before they use a relay."""
        endpoints = dict(self._endpoints)
        for member in self._members:
            endpoint = endpoints.get(member.public_key)
            if endpoint and ipaddress.ip_address(normalize_endpoint(endpoint)[0]).is_loopback:
                hosts = candidate_endpoints(member.host_candidates)
                endpoints[member.public_key] = hosts[0] if hosts else None
        return endpoints

    def _publish(self) -> None:
        """Serve the directory as the membership and endpoints say; NOTIFY the members
        when it changed."""
        with self._lock:
            extras = {key: relay_txt(port) for key, port in self._relay_offers.items()}
        endpoints = self._publishable_endpoints()
        records = directory_records(self._members, endpoints, extras)
        with self._lock:
            nat_kinds = dict(self._nat_kinds)
            lan_keys = dict(self._lan_keys)
        for record in records:          # TXT nat=hard|easy (discovery.traversal.birthday)
            if record.public_key in nat_kinds:
                record.extra[NAT_TXT_KEY] = nat_kinds[record.public_key]
            if record.public_key in lan_keys:   # TXT lk= (discovery.lan.lankey)
                record.extra[LAN_KEY_TXT] = lan_key_txt(lan_keys[record.public_key])
        if self._zone_publish is not None:      # ours queued for the zone, others' merged
            records = self._zone_publish.serve(records, self._observed)
        if records == self._published:
            return                      # nothing changed: keep the serial, tell nobody
        self._published = records
        try:
            save_directory(self.cache_path, {record.public_key: record for record in records})
        except OSError as exc:
            log.warning("cannot save the directory cache: %s", exc)
        try:
            self.directory.set_members(records)
        except ValueError as exc:       # one bad record must not freeze the directory
            log.warning("directory update: %s; publishing the members without it", exc)
            good = []
            for record in records:
                try:
                    Directory(self.state.zone).set_members([record])
                    good.append(record)
                except ValueError:
                    pass
            self.directory.set_members(good)
        self._notify_members()

    def _serve_rendezvous(self) -> None:
        """On a zone (discovery.stores.zone_rendezvous): our entry made to carry our TLS
        relay port, and the zone's rendezvous served at ``_rendezvous.ZONE`` (no I/O
        unless our entry needs writing), where members learn the ones their token did not
        name; a NOTIFY when that list changed."""
        if not self.state.directory:
            return
        from discovery.stores.zone_membership import served_strings
        self.state.announce_relay(self.relay_tcp_port)
        if self.directory.set_rendezvous(served_strings(self.state.rendezvous())):
            self._notify_members()

    def _notify_members(self) -> None:
        """DNS NOTIFY to every member: re-read the directory now (inside the tunnel)."""
        if self.notifier is not None:
            self.notifier.notify(m.mesh_address for m in self._members)
