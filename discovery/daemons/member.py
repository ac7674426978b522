"""The member daemon behind `meshwg join`: a meshwg engine plus discovery.

- keeps a tunnel with persistent keepalive to the rendezvous;
- reads the directory (DNS-SD over the tunnel) when the rendezvous sends a NOTIFY or its
  SOA serial changed (asked every SERIAL_POLL seconds: one small query, which also keeps
  the tunnel to the rendezvous honest), every `interval` seconds at most on average (two
  reads may come back to back: read_pace);
  when the directory does not answer, a handshake to the rendezvous is started at once
  (after a rendezvous restart its old session is gone) and the read retried;
- with several rendezvous (the token's, the enrollment response's, and those the directory
  lists at ``_rendezvous.ZONE``, learned and forgotten at each read and kept in member.json
  other_rendezvous) keeps a tunnel to two (discovery.traversal.rendezvous_choice), reads
  the directory at the current one and fails over to the other when a read fails (the
  current one is asked for the serial every FAILOVER_POLL then, so a dead one is found
  within seconds; the other every SERIAL_POLL, so status says whether it answers),
  reports its host candidates to both and takes NOTIFY from either;
- follows members of its mesh on the LAN with mDNS, also while the rendezvous is down;
- adds, updates and removes peers on its own engine, in-process (Device.apply/status);
- probes candidate endpoints (discovery.traversal.paths) and prefers LAN paths;
- binds at the rendezvous's relay (discovery.relay, UDP on its WireGuard port + 1) and
  moves a pair onto it when no direct path works; also at the relay of the other
  rendezvous it keeps a tunnel to (issue 10: a relayed pair survives the death of one) and
  the relays members offer in the
  directory (discovery.relay.pool chooses one per pair), and with `relay_port` runs such
  a relay itself (discovery.relay.server) for the other members;
- re-announces at once when its own addresses change (netlink);
- keeps a port mapping on the home gateway (discovery.portmap: PCP, NAT-PMP, UPnP) and
  reports its external endpoint as one more host candidate;
- reaches the rendezvous at the first of its addresses it has a route to, and observes its
  engine socket's reflexive endpoint in every other family it has a route in
  (discovery.netcheck.mapping), reported as host candidates: a dual-stack member is
  published on both families;
- runs netcheck by itself in the background (discovery.daemons.netcheck_schedule: at
  start without a recent report, after its addresses change, every 30 min) and reports its
  NAT kind again when that changed: birthday probing needs it;
- writes a status file for `meshwg status` when what it says changes.

It is a thin loop around discovery.traversal.reconcile: it sleeps until something happens
(an engine event, a NOTIFY, an mDNS change, an address change, the reconciler's next
deadline, the serial poll), then reconciles and applies the update. Idle, nothing wakes it
but the path checks every few seconds and the serial poll.

Only members listed by the rendezvous become peers, and a LAN announcement gives candidate
endpoints only when it is signed with the LAN key the directory publishes for that member
(discovery.lan.lankey: our own key is made on start, reported to the rendezvous, our
announcement signed and signed again every RESIGN_PERIOD); the addresses used are the
signed ones. A forged or unverifiable announcement is counted (status "lan") and never
replaces the last verified one.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from meshwg.core.events import HandshakeCompleted, PathUnanswered, ProbeAnswered
from meshwg.core.timers import Timers
from meshwg.core.keys import encode_key
from meshwg.device.api import DeviceUpdate, PeerUpdate
from meshwg.device.device import Device
from meshwg.util.resolve import family_of, resolve
from meshwg.util.service import Service
from meshwg.util.endpoint import Endpoint, format_endpoint, parse_endpoint

from discovery.daemons.directory_cache import cache_path, load_directory, save_directory
from discovery.daemons.engine_events import EngineEvents
from discovery.daemons.hard_nat import HardNatTraversal
from discovery.daemons.host_dns import HostDns
from discovery.daemons.member_status import StatusFile, status_path
from discovery.daemons.removal import AskSchedule, load_removed, removed_line, save_removed
from discovery.daemons.netcheck_schedule import BackgroundNetcheck, Facts
from discovery.dnssd.client import (
    DiscoveryError, directory_serial, rendezvous_list, resolve_member, resolve_zone,
)
from discovery.dnssd.notify import NotifyListener
from discovery.dnssd.member import MemberRecord
from discovery.lan.interfaces import lan_addresses
from discovery.lan.lankey import (
    LAN_KEY_TXT, LanVerifier, directory_lan_keys, ensure_lan_key, lan_key_txt, public_lan_key,
)
from discovery.lan.netwatch import AddressWatcher
from discovery.netcheck.facts import own_facts
from discovery.netcheck.mapping import EngineMappingObserver, choose_rendezvous
from discovery.netcheck.probe import has_route
from discovery.dnssd.relays import relay_endpoint, relay_port as offered_relay_port
from discovery.relay.choice import Relay
from discovery.relay.client import RelayClient
from discovery.relay.pool import RelayPlan, RelayPool
from discovery.enroll.tokens import MAX_OTHERS, RendezvousRef
from discovery.stores.errors import StateError
from discovery.stores.member import MemberState
from discovery.stores.zone_rendezvous import listed_refs
from discovery.traversal.rendezvous_choice import RendezvousChoice
from discovery.traversal.reconcile import MemberReconciler, lan_endpoints, rendezvous_peer
from discovery.traversal.report import REPORT_PORT_DEFAULT, ReportError, send_report

if TYPE_CHECKING:   # imported where they start, after the engine: not on the first packet's path
    from discovery.lan.announcer import MdnsAnnouncer
    from discovery.lan.browser import MdnsBrowser
    from discovery.lan.service import MdnsService
    from discovery.portmap.mapper import Mapping, PortMapper
    from discovery.relay.server import RelayServer

log = logging.getLogger("meshwg.member")

DEFAULT_INTERVAL = 1.0      # seconds: the directory is read at most this often (on average)
SERIAL_POLL = 15.0          # seconds between SOA serial checks (NOTIFY or not)
FAILOVER_POLL = 3.0         # ... at the current rendezvous when there is a spare: a dead one
                            # is found within this (+ 1 s timeout) and the spare read at once
RETRY_START = 1.0           # seconds before a failed directory read is retried; doubles
RETRY_MAX = 4.0             # ... up to this: a rendezvous back from a restart is found soon
READ_BURST = 3.0            # directory reads that may come back to back (then `interval` apart):
                            # at start, ours, our own listing's NOTIFY, a member joining with us
UNANSWERED_AFTER = 1.0      # seconds of data unanswered before the engine says so (fallback)
PATH_EVENTS_KEPT = 4096     # PathUnanswered / ProbeAnswered waiting for the loop
LAN_REFRESH = 30.0          # seconds between re-reads of mDNS's cache for LAN peers that left
                            # without a goodbye (arrivals and changes come at once)

__all__ = ["MemberDaemon", "status_path", "DEFAULT_INTERVAL", "SERIAL_POLL"]


def read_pace(tokens: float, elapsed: float, interval: float) -> tuple[float, float]:
    """A token bucket for directory reads: (tokens left after a read now, seconds until the
    next read may come), from the tokens left after the previous read `elapsed` seconds
    ago. Reads come `interval` seconds apart on average, READ_BURST in a row: a member that
    joins with us is listed just after our first reads, and its NOTIFY is read at once."""
    if interval <= 0:
        return READ_BURST, 0.0
    tokens = min(READ_BURST, tokens + elapsed / interval) - 1.0
    return tokens, max(0.0, (1.0 - tokens) * interval)


def _resolve_host(endpoint: str) -> list[Endpoint]:
    """Every address of the rendezvous's "HOST:PORT" as (ip, port), in the resolver's
    order (once, at start)."""
    host, port = parse_endpoint(endpoint)
    return [(sockaddr[0], port) for _family, sockaddr in resolve(host, port)]   # EndpointError


def _routable(ip: str) -> bool:
    return has_route(family_of(ip), ip)


class MemberDaemon:
    """`meshwg join`'s daemon for the membership in `state_dir` (discovery.stores.member):
    start() creates the interface and the threads, stop() removes them; status() is what
    the status file holds. Raises StateError (no membership) and, from start(), the
    engine's errors (TUN, bind, netlink)."""

    def __init__(self, state_dir: str, interface: str = "meshwg0", listen_port: int = 0,
                 interval: float = DEFAULT_INTERVAL, mdns: bool = True, portmap: bool = True,
                 relay_port: int | None = None, netcheck: bool = True, dns: str = "auto"):
        self.state_dir = state_dir
        self.use_netcheck = netcheck    # run netcheck by ourselves (discovery.netcheck.schedule)
        self.netcheck: BackgroundNetcheck | None = None
        self._netcheck_facts: Facts | None = None   # from its thread, for the loop
        self.relay_port = relay_port    # offer a relay on this UDP port (0: WG port + 1; None: no)
        self.relay_server: RelayServer | None = None
        self.relays: RelayPool | None = None       # every relay we bind at (the rendezvous's too)
        self._relay_names: dict[bytes, str] = {}   # the relay chosen per peer, for status
        self.state = MemberState.load(state_dir)
        self.lan_key = ensure_lan_key(state_dir)    # signs our mDNS announcement
        self.lan_key_txt = lan_key_txt(public_lan_key(self.lan_key))
        self.lan_verifier = LanVerifier()           # which LAN announcements we believe
        self.interface = interface
        self.listen_port = listen_port
        self.interval = interval
        self.use_mdns = mdns
        self.use_portmap = portmap
        self.portmapper: PortMapper | None = None   # a mapping on the home gateway
        self._mapped: str | None = None             # its external endpoint, reported
        self.network = ipaddress.ip_network(self.state.network)
        self.rendezvous_key = self.state.rendezvous_public_key
        self.rendezvous_addresses = _resolve_host(self.state.rendezvous_endpoint)
        self.rendezvous_endpoint, observe_at = choose_rendezvous(self.rendezvous_addresses, _routable)
        self.mapping: EngineMappingObserver | None = None   # our socket's other families
        self._observe_at = observe_at
        # several rendezvous (issue 10): tunnels to two, reads from the current one
        self.rendezvous = RendezvousChoice([RendezvousRef(
            self.rendezvous_key, self.state.rendezvous_endpoint, 0, self.state.dns_address),
            *self.state.other_rendezvous])
        self._rendezvous_peers: dict[bytes, Endpoint] = {self.rendezvous_key: self.rendezvous_endpoint}
        self._reported_to: dict[bytes, list[str]] = {}  # host candidates each rendezvous has
        self._others_checked_at = float("-inf")         # the other kept rendezvous asked last
        self.rendezvous_dropped: dict[str, int] = {}    # the last rendezvous list's, by reason
        self.reconciler = MemberReconciler(self.rendezvous_key)
        # what `meshwg netcheck` last found here: the only grounds for blaming our own NAT
        self.reconciler.paths.set_own_facts(*own_facts(state_dir, time.time()))
        # a hard NAT against an easy one: birthday-paradox probing (discovery.traversal.birthday)
        self.hard_nat = HardNatTraversal(self.reconciler.paths.own_hard_nat)
        self._hard_nat_at: float | None = None     # when its next step is due
        self.device: Device | None = None
        self.mdns_service: MdnsService | None = None
        self.announcer: MdnsAnnouncer | None = None
        self.browser: MdnsBrowser | None = None
        self.watcher: AddressWatcher | None = None
        self.notify_listener: NotifyListener | None = None
        self.engine_events: EngineEvents | None = None
        self.relay: RelayClient | None = None      # the rendezvous's relay (its WG port + 1)
        self.directory: dict[bytes, MemberRecord] = load_directory(cache_path(state_dir))
        self.directory_ok: float | None = None
        self.directory_error: str | None = None
        self.status_file = StatusFile(status_path(interface))
        # NAME.ZONE on this host: `dns` is auto, resolved, hosts or off (ValueError else)
        self.host_dns = HostDns(dns, interface, self.state.zone,
                                [r.mesh_address for r in self.rendezvous.kept()], self.state.dns_port)
        self._loop_service = Service("member-loop")     # the main loop (wake-or-deadline)
        self._path_events: deque = deque(maxlen=PATH_EVENTS_KEPT)   # engine thread -> loop
        self._reported: list[str] | None = None     # host candidates the rendezvous has
        # set from other threads (NOTIFY, netlink, engine events); read by the loop
        self._resolve_wanted = True
        self._addresses_changed = False
        # the loop's schedule (wall-clock seconds)
        self._resolve_at = 0.0                 # the next serial check or retry
        self._serial: int | None = None        # of the directory read last
        self._resolve_not_before = 0.0         # `interval` after the last read
        self._read_tokens, self._last_read = READ_BURST, float("-inf")   # read_pace's bucket
        self._retry = RETRY_START
        self._engine_view: dict[bytes, Any] = {}
        # removed by the rendezvous? asked over the enrollment port (discovery.daemons.removal)
        self.removal = AskSchedule()
        self.removed: dict[str, Any] | None = load_removed(state_dir)
        self._membership_answer: tuple[str, str | None] | None = None   # thread -> loop

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        st = self.state
        # probes through another path do not move a working one (discovery.traversal.paths)
        self.device = Device(self.interface, private_key=st.private_key, listen_port=self.listen_port,
                             addresses=[f"{st.address}/{self.network.prefixlen}"], manage_routes=False,
                             timers=Timers(unanswered_after=UNANSWERED_AFTER), roam_on_initiation=False)
        self.device.start()
        try:
            self.mapping = EngineMappingObserver(self.device, self._observe_at,
                                                 on_change=self._report_again).start()
            self.device.apply(DeviceUpdate(peers=[
                rendezvous_peer(self.rendezvous_key, self.rendezvous_endpoint, st.dns_address)]))
            self._sync_rendezvous_peers()
            self._refresh_local_networks()
            host, port = self.rendezvous_endpoint
            # with the relay's TLS pin (join token): over TCP when UDP is blocked
            tls_target = ((host, st.relay_tcp_port), bytes.fromhex(st.relay_pin)) if st.relay_pin else None
            self.relay = RelayClient(st.private_key, self.rendezvous_key, (host, port + 1),
                                     self.device.listen_port, on_bound=self._loop_service.wake,
                                     tls_target=tls_target).start()
            self.relays = RelayPool(st.private_key, self.device.listen_port, on_bound=self._loop_service.wake)
            self.relays.add_fixed(Relay(self.rendezvous_key, (host, port + 1), "rendezvous", rendezvous=True),
                                  self.relay)
            if self.relay_port is not None:
                from discovery.relay.server import RelayServer
                self.relay_server = RelayServer(st.private_key, "::",
                                                self.relay_port or self.device.listen_port + 1,
                                                members=[st.public_key, *self.directory]).start()
            self.hard_nat.start(self.device, self._loop_service.wake)
            if self.use_netcheck:      # in the background: the join does not wait for it
                self.netcheck = BackgroundNetcheck(self.state_dir, st.rendezvous_endpoint,
                                                   self._on_netcheck).start()
            if self.use_mdns:      # registering takes ~1.5 s (mDNS probing): not before links
                self._loop_service.spawn(self._start_mdns, name="member-mdns")
            if self.use_portmap:
                from discovery.portmap.mapper import PortMapper
                self.portmapper = PortMapper(self.device.listen_port,
                                             on_change=self._on_portmap).start()
            self.watcher = AddressWatcher(self._on_address_change).start()
            self.notify_listener = NotifyListener(st.address, st.zone, st.dns_address,
                                                  self._on_directory_notify,
                                                  interface=self.interface).start()
            self.notify_listener.allowed_sources = {r.mesh_address for r in self.rendezvous.known}
            self.engine_events = EngineEvents(self.device, self._on_engine_events,
                                              name="member-events").start()
            self.host_dns.start()
            self._update_host_names()      # the cached directory's names, until it is read
            self._reconcile(time.time())   # cached directory: links before the rendezvous answers
        except BaseException:
            self.stop()
            raise
        self._loop_service.spawn(self._loop_service.loop, self._round, name="member-loop")
        log.info("member %s (%s) on %s, port %d", st.name, st.address, self.interface,
                 self.device.listen_port)

    def _start_mdns(self) -> None:
        # zeroconf is imported here, in this thread: 0.1-0.6 s the engine's start does not wait for
        from discovery.lan.announcer import MdnsAnnouncer
        from discovery.lan.browser import MdnsBrowser
        from discovery.lan.service import MdnsService
        try:
            self.mdns_service = MdnsService(exclude_interfaces=(self.interface,))
            self.announcer = MdnsAnnouncer(self.state.mesh_id, self.state.public_key, self.state.name,
                                           self.state.address, self.device.listen_port,
                                           service=self.mdns_service, lan_key=self.lan_key)
            self.announcer.start()
            self.browser = MdnsBrowser(self.state.mesh_id, self.state.public_key,
                                       on_change=lambda peers: self._loop_service.wake(),
                                       service=self.mdns_service,
                                       refresh_interval=LAN_REFRESH)
            self.browser.set_wanted(self.directory)     # a stranger's keys are not even read
            self.browser.start()
        except Exception as exc:   # no multicast-capable interface, etc.: keep going without LAN discovery
            log.warning("mDNS unavailable (%s); LAN discovery disabled", exc)
            self.announcer = self.browser = None

    def stop(self) -> None:
        self._loop_service.stop(timeout=5)
        if self.engine_events is not None:
            self.engine_events.stop()
        if self.mapping is not None:
            self.mapping.stop()
        if self.portmapper is not None:
            self.portmapper.stop()             # deletes the mapping on the gateway
        self.hard_nat.stop()
        if self.netcheck is not None:
            self.netcheck.stop()
        for part in (self.notify_listener, self.watcher, self.browser, self.announcer, self.relays,
                     self.relay, self.relay_server):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s", part)
        self.host_dns.stop()               # before the interface goes (resolved's link)
        if self.device is not None:
            self.device.stop()
            self.device = None
        self.status_file.remove()

    # ------------------------------------------------------------------ events (other threads)
    def _on_directory_notify(self) -> None:
        self._resolve_wanted = True
        self._loop_service.wake()

    def _on_portmap(self, mapping: Mapping | None) -> None:
        # a new or moved mapping is one more host candidate: report it to the rendezvous
        endpoint = mapping.endpoint if mapping else None
        if endpoint != self._mapped:
            self._mapped = endpoint
            self._report_again()

    def _report_again(self) -> None:
        """Our host candidates changed: report them at the next round."""
        self._reported = None
        self._resolve_wanted = True
        self._loop_service.wake()

    def _on_address_change(self) -> None:
        self._addresses_changed = True
        if self.netcheck is not None:
            self.netcheck.addresses_changed()
        self._loop_service.wake()

    def _on_netcheck(self, facts: Facts) -> None:
        self._netcheck_facts = facts
        self._loop_service.wake()

    def _on_engine_events(self, events: list) -> None:
        self._path_events.extend(ev for ev in events if isinstance(ev, (PathUnanswered, ProbeAnswered)))
        # a (new) session with the rendezvous after failed reads: the directory is back
        if self.directory_error and any(ev.public_key in self._rendezvous_peers for ev in events):
            self._resolve_wanted = True
        # a new session with the rendezvous: it may have restarted and lost our relay binding
        if self.relay is not None and any(isinstance(ev, HandshakeCompleted) and
                                          ev.public_key == self.rendezvous_key for ev in events):
            self.relay.rebind()
        if self.relays is not None:     # the other rendezvous's relays likewise
            for ev in events:
                if isinstance(ev, HandshakeCompleted) and ev.public_key != self.rendezvous_key:
                    self.relays.rebind(ev.public_key)
        self._loop_service.wake()

    # ------------------------------------------------------------------ main loop
    def _round(self) -> float | None:
        """One round of the main loop (meshwg.util.service.Service.loop): seconds until
        the next one is due at the latest (events wake it earlier)."""
        deadline = self._step(time.time())
        return None if deadline is None else deadline - time.time()

    def _step(self, now: float) -> float | None:
        """One round: own address changes, the directory if due, reconcile. Returns when
        the next round is due at the latest (events come earlier)."""
        if self._membership_answer is not None:
            self._take_membership_answer(now)
        if self.removed is not None:        # proven: no more tunnel attempts, sleep
            return None
        if self._addresses_changed:
            self._addresses_changed = False
            self._handle_own_address_change(now)
        facts, self._netcheck_facts = self._netcheck_facts, None
        if facts is not None:          # our own netcheck ran: cite it; report a new NAT kind
            self.reconciler.paths.set_own_facts(*facts)
            if self.hard_nat.set_nat(facts[1]):
                log.info("own NAT kind: %s", self.hard_nat.nat)
                self._reported = None
                self._resolve_wanted = True
        if (self._resolve_wanted or now >= self._resolve_at) and now >= self._resolve_not_before:
            self._read_directory(now)
        announcer = self.announcer
        resign_at = announcer.resign_at if announcer is not None else None
        if resign_at is not None and now >= resign_at:
            try:
                announcer.resign()          # a signature is good for lankey.MAX_AGE only
            except Exception:
                log.exception("mDNS re-announce failed")
            resign_at = announcer.resign_at
        next_deadline = min((t for t in (self._reconcile(now), self._hard_nat_at, resign_at)
                             if t is not None), default=None)
        times = [self._resolve_at]
        observe_at = self.mapping.step(now) if self.mapping is not None else None
        if observe_at is not None:
            times.append(observe_at)
        if self._resolve_wanted:
            times.append(self._resolve_not_before)
        if next_deadline is not None:
            times.append(next_deadline)
        return min(times)

    def _read_directory(self, now: float) -> None:
        """Ask the serial; read the whole directory when told to, when the serial moved or
        after a failure; report new host candidates once the rendezvous answers. Schedules
        the next check: a retry with backoff after a failure, with a handshake to the
        rendezvous to replace a session it may have lost (it restarted, or we moved)."""
        told, self._resolve_wanted = self._resolve_wanted, False
        server = self._directory_server()
        current = self.rendezvous.current
        try:
            serial = directory_serial(server, self.state.zone, timeout=1.0)
        except (DiscoveryError, OSError) as exc:
            self.directory_error = str(exc)
        else:
            self._report_candidates()
            if told or serial != self._serial or self.directory_error is not None:
                if self._resolve_directory():
                    self._serial = serial
            else:
                self.directory_error = None
                if self.host_dns.pending:      # the hosts file could not be written: again
                    self._update_host_names()
        done = time.time()
        if self.directory_error is None:
            self.removal.directory_answers()
            self.rendezvous.answered(current, done)
            if done >= self._others_checked_at + SERIAL_POLL:
                self._check_other_rendezvous(done)
            # a large directory (10,000 members take ~0.5 s) is not re-read back to back
            self._read_tokens, wait = read_pace(self._read_tokens, now - self._last_read, self.interval)
            self._last_read = now
            self._resolve_not_before = now + max(wait, 3 * (done - now))
            self._retry = RETRY_START
            self._resolve_at = done + (FAILOVER_POLL if len(self.rendezvous.known) > 1 else SERIAL_POLL)
            return
        self.device.apply(DeviceUpdate(peers=[PeerUpdate(
            public_key=current, update_only=True,
            probe_endpoints=[self._rendezvous_peers.get(current, self.rendezvous_endpoint)])]))
        if self.rendezvous.failed(current, self.directory_error, done):
            log.info("directory at %s failed (%s): reading at %s now", self.rendezvous.ref(current).endpoint,
                     self.directory_error, self.rendezvous.ref(self.rendezvous.current).endpoint)
            self._sync_rendezvous_peers()
            self._resolve_wanted = True         # the other rendezvous, at once, in full
            self._resolve_not_before = self._resolve_at = done
            return
        if self.removal.due(done):
            self._ask_membership(current, done)
        self._resolve_not_before = done + min(self.interval, self._retry)
        self._resolve_at = done + self._retry
        self._retry = min(RETRY_MAX, self._retry * 2)

    def _ask_membership(self, key: bytes, now: float) -> None:
        """Ask rendezvous `key` over its enrollment port whether we are still enrolled, in
        a thread (a TCP exchange, 3 s at most); the loop takes the verified answer."""
        from discovery.enroll.membership import BadAnswer
        from discovery.enroll.transport import ask_membership
        ref = self.rendezvous.ref(key)
        endpoint = ref.endpoint
        host, port = parse_endpoint(endpoint)
        address = (host, ref.enroll_port or port)     # the default enroll port: the WG port's number
        self.removal.started(now)

        def ask() -> None:
            try:
                status = ask_membership(self.state.private_key, key, address)
            except BadAnswer as exc:
                status, endpoint_or_error = "bad", str(exc)
            except Exception as exc:        # unreachable: proves nothing
                status, endpoint_or_error = "error", str(exc)
            else:
                endpoint_or_error = endpoint
            self._membership_answer = (status, endpoint_or_error)
            self._loop_service.wake()
        self._loop_service.spawn(ask, name="member-membership")

    def _take_membership_answer(self, now: float) -> None:
        from discovery.enroll.membership import NOT_MEMBER
        (status, detail), self._membership_answer = self._membership_answer, None
        self.removal.in_flight = False
        if status == "bad":
            self.removal.bad_answers += 1
            log.warning("membership answer that does not verify, ignored: %s", detail)
        elif status == "error":
            log.info("cannot ask the rendezvous whether we are a member: %s", detail)
        elif self.removal.answered(status == NOT_MEMBER):
            try:
                self.removed = save_removed(self.state_dir, detail, now)
            except OSError as exc:
                log.warning("cannot record the removal in %s: %s", self.state_dir, exc)
                self.removed = {"by": detail, "at": now}
            log.warning("%s: %s", self.state.name, removed_line(self.removed))
            self.device.apply(DeviceUpdate(replace_peers=True, peers=[]))   # no more attempts
            try:
                self.status_file.write(self.status(now))
            except OSError as exc:
                log.warning("cannot write %s: %s", self.status_file.path, exc)

    def _check_other_rendezvous(self, now: float) -> None:
        """Ask the other kept rendezvous for the serial (one small query each, every
        SERIAL_POLL): status says whether each answers, and a dead one is replaced by the
        next (rendezvous_choice) before we need it."""
        self._others_checked_at = now
        for ref in self.rendezvous.kept()[1:]:
            try:
                directory_serial((ref.mesh_address, self.state.dns_port), self.state.zone, timeout=1.0)
            except (DiscoveryError, OSError) as exc:
                self.rendezvous.failed(ref.public_key, str(exc), now)
            else:
                self.rendezvous.answered(ref.public_key, now)
        self._sync_rendezvous_peers()

    def _directory_server(self) -> tuple[str, int]:
        """Where the directory is read: the current rendezvous's mesh address."""
        return self.rendezvous.ref(self.rendezvous.current).mesh_address, self.state.dns_port

    def _sync_rendezvous_peers(self) -> None:
        """Engine peers for the rendezvous kept (rendezvous_choice): one added for each kept
        one we have no peer for (its endpoint resolved now; an unresolvable one is tried
        again at the next change); ones no longer kept removed (never the one enrolled at:
        its relay and netcheck use it)."""
        kept = self.rendezvous.kept()
        updates = []
        for ref in kept:
            if ref.public_key in self._rendezvous_peers:
                continue
            try:
                endpoint, _ = choose_rendezvous(_resolve_host(ref.endpoint), _routable)
            except Exception as exc:       # EndpointError, no address with a route
                log.warning("rendezvous %s: cannot reach its endpoint (%s)", ref.endpoint, exc)
                continue
            self._rendezvous_peers[ref.public_key] = endpoint
            updates.append(rendezvous_peer(ref.public_key, endpoint, ref.mesh_address))
        wanted = {ref.public_key for ref in kept} | {self.rendezvous_key}
        for key in [k for k in self._rendezvous_peers if k not in wanted]:
            del self._rendezvous_peers[key]
            updates.append(PeerUpdate(public_key=key, remove=True))
        if updates:
            self.device.apply(DeviceUpdate(peers=updates))

    def _reconcile(self, now: float) -> float | None:
        """Apply what the reconciler decides; write the status file if it changed."""
        if self.browser is not None:
            self.browser.set_wanted(self.directory)     # cheap when the directory is unchanged
        heard = self.browser.peers() if self.browser is not None else {}
        verified = self.lan_verifier.verify(heard, directory_lan_keys(self.directory), now)
        lan = {key: lan_endpoints(peer.addresses, peer.port) for key, peer in verified.items()}
        status = self.device.status()
        self._route_rendezvous(status)
        relays = RelayPlan()
        if self.relays is not None:
            self.relays.set_relays(self._rendezvous_relays() + self._offered_relays())
            self.relays.set_peers(self.directory)
            relays = self.relays.plan({peer.public_key: peer.endpoint for peer in status.peers}, now)
            if self.relay is not None and self.relay.transport == "tcp":    # say so in status
                relays.names = {k: self.relay.label if n == self.relay.name else n
                                for k, n in relays.names.items()}
            self._relay_names = relays.names
        if self.relay_server is not None:
            self.relay_server.set_members([self.state.public_key, *self.directory])
        paths = self.reconciler.paths
        while self._path_events:           # fast fallback and trials (before observing)
            ev = self._path_events.popleft()
            if isinstance(ev, PathUnanswered):
                paths.path_unanswered(ev.public_key, ev.endpoint, ev.silent_for, now)
            else:
                paths.probe_answered(ev.public_key, ev.endpoint, ev.rtt, now)
        plan = self.reconciler.reconcile(self.directory, lan, status, now, relays=relays.endpoints,
                                         relay_names=relays.names, relay_others=relays.others)
        self._hard_nat_at = self.hard_nat.round(now, self.directory, self.reconciler.paths, status,
                                                plan.update)
        plan.update.peers = [u for u in plan.update.peers      # the other rendezvous stay
                             if not (u.remove and u.public_key in self._rendezvous_peers)]
        if plan.update.peers:
            self.device.apply(plan.update)
        self._engine_view = {peer.public_key: peer for peer in status.peers}
        try:
            self.status_file.write(self.status(now))
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_file.path, exc)
        deadlines = [t for t in (plan.next_deadline, relays.next_deadline) if t is not None]
        return min(deadlines) if deadlines else None

    def _route_rendezvous(self, status: Any) -> None:
        """While the rendezvous's relay runs over TCP (UDP blocked), our tunnel to the
        rendezvous goes through it too (the relay client's host proxy); back to the
        rendezvous's UDP endpoint once the relay answers over UDP again."""
        proxy = self.relay.host_endpoint() if self.relay is not None else None
        if proxy is None:
            return
        current = next((p.endpoint for p in status.peers if p.public_key == self.rendezvous_key), None)
        want = proxy if self.relay.transport == "tcp" else self.rendezvous_endpoint
        if current == want or (want != proxy and current != proxy):
            return
        log.info("tunnel to the rendezvous: %s", "through its relay over TCP" if want == proxy
                 else f"back to UDP {format_endpoint(want)}")
        self.device.apply(DeviceUpdate(peers=[PeerUpdate(public_key=self.rendezvous_key,
                                                         update_only=True, endpoint=want)]))

    def _rendezvous_relays(self) -> list[Relay]:
        """The relays of the other rendezvous we keep tunnels to (issue 10: UDP on the
        WireGuard port + 1, TLS where the list gave `tls=` and a pin); the one enrolled at
        is the pool's fixed relay."""
        relays = []
        for key, endpoint in self._rendezvous_peers.items():
            ref = next((r for r in self.rendezvous.known if r.public_key == key), None)
            if key == self.rendezvous_key or ref is None:
                continue
            host, port = endpoint[0], endpoint[1]
            tls_target = ((host, ref.relay_tcp_port), ref.pin) if ref.pin and ref.relay_tcp_port else None
            relays.append(Relay(key, (host, port + 1), f"rendezvous {ref.endpoint}",
                                rendezvous=True, tls=tls_target))
        return relays

    def _offered_relays(self) -> list[Relay]:
        """The relays other members offer in the directory (discovery.dnssd.relays)."""
        return [Relay(key, endpoint, record.name or key.hex()[:8])
                for key, record in self.directory.items()
                if (endpoint := relay_endpoint(record)) is not None]

    def _refresh_local_networks(self) -> list[tuple[str, object, str]]:
        addrs = lan_addresses(exclude=(self.interface,))
        self.reconciler.paths.set_local_networks([net for _, net, _ in addrs])
        return addrs

    def _handle_own_address_change(self, now: float) -> None:
        log.info("own addresses changed: re-announcing")
        if self.announcer is not None:
            try:
                self.announcer.update_addresses()
            except Exception:
                log.exception("mDNS re-announce failed")
        self._refresh_local_networks()
        if self.mapping is not None:   # a family may have come or gone: observe again now
            primary, self._observe_at = choose_rendezvous(self.rendezvous_addresses, _routable)
            self.mapping.set_targets(self._observe_at, now)
            if primary != self.rendezvous_endpoint:    # no route left in the family we used
                log.info("reaching the rendezvous at %s now", format_endpoint(primary))
                self.rendezvous_endpoint = primary
                self.device.apply(DeviceUpdate(peers=[PeerUpdate(
                    public_key=self.rendezvous_key, update_only=True, endpoint=primary)]))
        self._reported = None          # report the new host candidates to the rendezvous now
        self._resolve_wanted = True
        if self.portmapper is not None:
            self.portmapper.refresh()          # a new address (or gateway): map again now
        if self.relays is not None:
            self.relays.rebind()
        # let every peer (and the rendezvous) see our new source address at once
        self.device.apply(self.reconciler.own_addresses_changed(self.rendezvous_endpoint, now))

    def _report_candidates(self) -> None:
        """Our host candidates to each rendezvous kept (each observes the members whose
        tunnels it carries); `_reported` is set once the current one has them."""
        kept = [r for r in self.rendezvous.kept()
                if r.public_key == self.rendezvous.current or not self.rendezvous.health[r.public_key].failing]
        if self._reported is None:
            self._reported_to.clear()
        elif all(self._reported_to.get(r.public_key) == self._reported for r in kept):
            return
        port = self.device.listen_port
        candidates = [format_endpoint((ip, port)) for ip, _, _ in self._refresh_local_networks()]
        if self._mapped is not None:
            candidates.append(self._mapped)
        if self.mapping is not None:   # our engine socket's mapping in the other families
            candidates += [format_endpoint(ep) for ep in self.mapping.endpoints()
                           if format_endpoint(ep) not in candidates]
        for ref in kept:
            if self._reported_to.get(ref.public_key) == candidates:
                continue
            try:
                send_report(ref.mesh_address, REPORT_PORT_DEFAULT, candidates, timeout=2.0,
                            relay_port=self.relay_server.port if self.relay_server is not None else None,
                            nat=self.hard_nat.nat, lan_key=self.lan_key_txt)
                self._reported_to[ref.public_key] = candidates
            except ReportError as exc:
                log.debug("%s", exc)
        if self._reported_to.get(self.rendezvous.current) == candidates:
            self._reported = candidates

    def _resolve_directory(self) -> bool:
        """Read the whole directory; False (and directory_error set) when that failed.

        The listing holds the members with an endpoint; one that left it is asked for
        alone: only a member the directory no longer knows at all (revoked) is dropped. One
        known without an endpoint (a restarted rendezvous has not heard from it yet) keeps
        its last endpoint as a candidate."""
        server = self._directory_server()
        own = self.state.public_key
        try:
            records = resolve_zone(server, self.state.zone, timeout=1.0)
            fresh = {r.public_key: r for r in records if r.public_key != own}
            ours = next((r for r in records if r.public_key == own), None)
            if not self.hard_nat.published(ours):
                self._reported = None       # our NAT kind is not published (a restarted rendezvous)
            if ours is not None and ours.extra.get(LAN_KEY_TXT) != self.lan_key_txt:
                self._reported = None       # nor our LAN key: report it again
            if self.relay_server is not None and not any(
                    r.public_key == own and offered_relay_port(r) == self.relay_server.port for r in records):
                self._reported = None       # our relay is not published (yet): report it again
            for key in [k for k in self.directory if k not in fresh]:
                record = resolve_member(server, self.state.zone, key, timeout=1.0)
                if record is not None:
                    fresh[key] = replace(record, endpoint=record.endpoint or self.directory[key].endpoint)
            listed = rendezvous_list(server, self.state.zone, timeout=1.0)
        except (DiscoveryError, OSError) as exc:
            self.directory_error = str(exc)
            return False
        self._learn_rendezvous(listed)
        self.directory_error = None
        self.directory_ok = time.time()
        if fresh != self.directory:
            try:
                save_directory(cache_path(self.state_dir), fresh)
            except OSError as exc:
                log.warning("cannot save the directory cache: %s", exc)
        self.directory = fresh
        self._update_host_names()
        return True

    def _learn_rendezvous(self, records: list[tuple[bytes, ...]]) -> None:
        """The mesh's rendezvous as the directory lists them (issue 10): learned and
        forgotten (rendezvous_choice.listed), tunnels moved when the two kept changed,
        kept in member.json so a restart knows them; bad entries dropped and counted."""
        refs, self.rendezvous_dropped = listed_refs(records, self.state.network)
        kept = self.rendezvous.kept_keys()
        if not self.rendezvous.listed(refs, self.rendezvous_key):
            return
        log.info("rendezvous of the mesh now: %s", ", ".join(r.endpoint for r in self.rendezvous.known))
        if self.notify_listener is not None:
            self.notify_listener.allowed_sources = {r.mesh_address for r in self.rendezvous.known}
        if self.rendezvous.kept_keys() != kept and self.device is not None:   # started
            self._sync_rendezvous_peers()
            self._others_checked_at = float("-inf")     # ask a new spare at the next read
        self.state.other_rendezvous = [r for r in self.rendezvous.known
                                       if r.public_key != self.rendezvous_key][:MAX_OTHERS]
        try:
            self.state.save(self.state_dir)
        except (OSError, StateError) as exc:
            log.warning("cannot save the rendezvous learned: %s", exc)

    def _update_host_names(self) -> None:
        """NAME.ZONE on this host (discovery.daemons.host_dns): ours and the directory's."""
        st = self.state
        self.host_dns.update([(st.name, st.address),
                              *((r.name, r.mesh_address) for r in self.directory.values())])

    # ------------------------------------------------------------------ status
    def status(self, now: float | None = None) -> dict:
        """What `meshwg status` shows, as of `now`: this member, the directory's health and
        one row per peer (the rendezvous first). Live counters are the CLI's to add."""
        now = now or time.time()
        st = self.state
        engine = self._engine_view
        rdv = engine.get(self.rendezvous_key)
        peers: list[dict[str, Any]] = [{
            "name": "rendezvous", "public_key": encode_key(self.rendezvous_key),
            "mesh_address": st.dns_address,
            "endpoint": format_endpoint(rdv.endpoint) if rdv and rdv.endpoint else None,
            "path": "rendezvous", "reason": self.directory_error or "directory reachable",
        }]
        first = self.rendezvous.health[self.rendezvous_key]
        if self.rendezvous.current != self.rendezvous_key and first.failing:   # failed over
            peers[0]["reason"] = (f"not answering ({first.error}); directory read at "
                                  f"{self.rendezvous.ref(self.rendezvous.current).endpoint}")
        if self.relay is not None and self.relay.transport == "tcp":
            peers[0]["reason"] += " (through its relay over TCP: no UDP answer)"
        elif self.relay is not None and self.relay.tls_error and not self.relay.bound:
            peers[0]["reason"] += f" (relay over TCP: {self.relay.tls_error})"
        relayed = self.relays.peer_counters() if self.relays is not None else {}
        for key, rec in sorted(self.directory.items(), key=lambda kv: kv[1].name):
            peer = engine.get(key)
            path, reason = self.reconciler.paths.describe(key, now)
            reason = self.hard_nat.explain(key, peer.endpoint if peer else None, reason)
            row = {
                "name": rec.name, "public_key": encode_key(key), "mesh_address": rec.mesh_address,
                "endpoint": format_endpoint(peer.endpoint) if peer and peer.endpoint else None,
                "path": path, "reason": reason,
            }
            if path == "relay":
                row["relay"] = self._relay_names.get(key)
                row["relay_rx_bytes"], row["relay_tx_bytes"] = relayed.get(key, (0, 0))
            peers.append(row)
        return {
            "interface": self.interface,
            "self": {"name": st.name, "mesh_address": st.address, "public_key": encode_key(st.public_key),
                     "listen_port": self.device.listen_port if self.device else None,
                     "mesh_id": st.mesh_id, "network": st.network},
            "directory": {"ok_at": self.directory_ok, "error": self.directory_error},
            "dns": self.host_dns.status(),      # how NAME.ZONE resolves here
            "portmap": self.portmapper.status() if self.portmapper is not None else None,
            "hard_nat": self.hard_nat.status(),
            "rendezvous": [{**row, "public_key": encode_key(row["public_key"])}
                           for row in self.rendezvous.status()],
            "rendezvous_dropped": dict(self.rendezvous_dropped),   # bad list entries, by reason
            "netcheck": self.netcheck.status() if self.netcheck is not None else None,
            "relay_server": self._relay_server_status(),
            "relays": self.relays.status() if self.relays is not None else [],   # we bind at
            "lan": asdict(self.lan_verifier.counters),  # LAN announcements by verdict
            "peers": peers,
            "removed": self.removed,        # {"by": ENDPOINT, "at": SECONDS}: proven removal
            "membership_checks": {"asked": self.removal.asked, "bad_answers": self.removal.bad_answers},
        }

    def _relay_server_status(self) -> dict[str, Any] | None:
        """The relay we offer: its port, counters (dropped by reason) and what it forwarded
        per member name; None when we offer none."""
        if self.relay_server is None:
            return None
        names = {key: record.name for key, record in self.directory.items()}
        names[self.state.public_key] = self.state.name
        return self.relay_server.status(names)
