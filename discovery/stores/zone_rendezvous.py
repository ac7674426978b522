"""A rendezvous whose membership lives in a DNS zone (issue 10): ``meshwg rendezvous init
--directory dns://HOST[:PORT] --tsig-key FILE --zone ZONE``, and the CLI's membership
commands (invite, invites, members, remove) on such a rendezvous.

The state directory keeps what is this rendezvous's own: its WireGuard key, endpoint,
ports and interface (discovery.stores.rendezvous.RendezvousState's SQLite meta, which
also names the directory: meta ``directory``), and a 0600 copy of the TSIG key file(s)
(:data:`KEY_FILE`, :data:`TRANSFER_KEY_FILE`). The membership (settings, rendezvous,
members, address claims, invites, nonces) is the zone's (discovery.stores.zone_membership),
so any rendezvous of the mesh can enroll and revoke.

``--directory`` is a comma-separated list of ``dns://HOST[:PORT]`` (port 53 by default):
the first is the primary (every update goes there), the others are servers the zone can
also be read from (secondaries) when the primary is down. Updates are signed with the
``--tsig-key`` key; reads (SOA, AXFR) with ``--transfer-key`` when given (configs/dns lets
only the ``meshwg-transfer`` key transfer the zone), else with the update key.

The first rendezvous of a mesh writes the mesh settings (``--network``); a later one reads
them from the zone (``--network`` then optional, and refused when it differs). Each
registers itself (key, endpoint, enrollment port, TLS relay pin) and claims its mesh address
in one update with prerequisites, so two rendezvous created at once never share one.
Failures are one line naming the server, key file or zone; nothing is left half-written:
the local state is created only after the zone accepted the registration, and a
registration whose local state could not be written is withdrawn again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import dns.rcode

from meshwg.core import crypto
from meshwg.core.keys import encode_key
from meshwg.util.endpoint import format_endpoint, parse_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.tsig_file import TsigKey, read_tsig_key
from discovery.dnssd.update import DirectoryUnavailable, ServerRefused, TransferRefused, ZoneWriter
from discovery.enroll.tokens import MAX_OTHERS, RendezvousRef, Token
from discovery.stores.errors import StateError, StateExistsError, UnknownMemberError
from discovery.stores.invites import Invite
from discovery.stores.private_dir import prepare_private_dir, save_private_file
from discovery.stores.rendezvous import DB_NAME, DEFAULT_DNS_PORT, Member, RendezvousState
from discovery.stores.validate import normalize_zone, validate_candidates
from discovery.stores.zone_cache import cache_path, load_zone, save_zone
from discovery.stores.zone_directory import zone_records
from discovery.stores.zone_membership import (
    MeshSettings, RendezvousEntry, ZoneMembership, ZoneUnavailable, served_rendezvous,
)

SCHEME = "dns://"
DEFAULT_PORT = 53
MAX_SERVERS = 8
KEY_FILE = "tsig.key"                   # the update key, copied at init (0600)
TRANSFER_KEY_FILE = "tsig-transfer.key"  # the read key, when one was given
META_DIRECTORY = "directory"
META_TRANSFER_KEY = "transfer_key"      # "1" when TRANSFER_KEY_FILE exists
T = TypeVar("T")
ANNOUNCE_RETRY = 30.0                   # seconds between tries to write our entry's tls=
log = logging.getLogger("meshwg.zone")


class DirectoryError(StateError):
    """The DNS directory cannot be used: one line naming the server, key or zone."""


def parse_directory(text: str) -> list[str]:
    """``dns://HOST[:PORT][,dns://HOST[:PORT]...]`` -> ["HOST:PORT", ...] (the primary
    first). DirectoryError naming the bad part."""
    servers = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part.lower().startswith(SCHEME):
            raise DirectoryError(f"--directory {text!r}: expected dns://HOST[:PORT] "
                                 f"(comma-separated, the primary first), got {part!r}")
        rest = part[len(SCHEME):].rstrip("/")
        if rest.startswith("[") and rest.endswith("]"):
            rest = f"{rest}:{DEFAULT_PORT}"            # [IPv6] without a port
        elif rest.count(":") > 1 and not rest.startswith("["):
            rest = f"[{rest}]:{DEFAULT_PORT}"          # bare IPv6
        elif ":" not in rest:
            rest = f"{rest}:{DEFAULT_PORT}"
        try:
            servers.append(format_endpoint(parse_endpoint(rest)))
        except ValueError as exc:
            raise DirectoryError(f"--directory {part!r}: {exc}") from None
    if len(servers) > MAX_SERVERS:
        raise DirectoryError(f"--directory: at most {MAX_SERVERS} servers")
    return servers


_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def check_zone_name(zone: str) -> str:
    """`zone` when it is a host-name-like DNS name (labels of letters, digits, '-' and '_',
    at most 63 characters each, one final dot allowed); ValueError naming it otherwise.
    Checked before any server is asked."""
    labels = (zone or "").rstrip(".").split(".") if zone and zone != "." else []
    if not labels or len(zone) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"--zone {zone!r}: expected a DNS name such as mesh.example.org "
                         f"(letters, digits, '-' and '_' between dots)")
    return zone


def check_readers(zone_access: ZoneAccess) -> None:
    """Ask every server after the primary for the zone's SOA, signed with the read key
    (the rendezvous reads there when the primary is down). A server that refuses it is
    one DirectoryError naming the server, the key and what to do (--transfer-key FILE);
    one that does not answer now is only logged (a secondary may be down for a while)."""
    for server in zone_access.servers[1:]:
        try:
            zone_access.writer(server).serial()
        except ServerRefused as exc:
            raise DirectoryError(describe(exc, server, zone_access.zone, zone_access.key)) from None
        except (MeshwgError, ValueError) as exc:
            log.warning("%s", describe(exc, server, zone_access.zone, zone_access.key))


def format_directory(servers: list[str]) -> str:
    return ",".join(SCHEME + s for s in servers)


def describe(exc: Exception, server: str, zone: str, key: TsigKey | None = None) -> str:
    """One line saying why the zone on `server` could not be used."""
    if isinstance(exc, (DirectoryUnavailable, ZoneUnavailable)):
        return f"cannot reach DNS server {server} for zone {zone}: {exc}"
    if isinstance(exc, ServerRefused):
        keyname = exc.keyname or (key.name if key is not None else "the key")
        if exc.rcode == dns.rcode.REFUSED and not exc.tsig_error:
            return (f"DNS server {server} refused zone {zone}: the zone is missing there or "
                    f"key {keyname} may not use it ({exc})")
        if exc.rcode == dns.rcode.NOTAUTH or exc.tsig_error:
            return f"{exc}; {_key_hint(exc, keyname)}"
        return f"DNS server {server}, zone {zone}: {exc}"
    return str(exc) or type(exc).__name__


def _key_hint(exc: ServerRefused, keyname: str) -> str:
    """What to do about a server that refused `keyname` (NOTAUTH or a TSIG error)."""
    if exc.tsig_error == dns.rcode.BADSIG:
        return f"the secret in the key file differs from the server's key {keyname}"
    if exc.tsig_error == dns.rcode.BADTIME:
        return "this host's clock and the server's differ"
    if isinstance(exc, TransferRefused):
        unknown = (f"it does not know key {keyname}: sign reads with a key every server of "
                   f"--directory knows, --transfer-key FILE (configs/dns: meshwg-transfer.key; "
                   f"a rendezvous made without it: copy FILE to {TRANSFER_KEY_FILE} in its "
                   f"state directory, mode 0600, and restart it)")
        if exc.tsig_error == dns.rcode.BADKEY:
            return unknown
        return (f"{unknown}; or it does not answer this host's address (Knot's mod-queryacl: "
                f"list the rendezvous' addresses, configs/dns/README.md)")
    return f"the server does not let key {keyname} do this"


@dataclass
class ZoneAccess:
    """The zone of a rendezvous: the store on the primary and readers on the others."""

    servers: list[str]
    zone: str
    key: TsigKey
    read_key: TsigKey | None = None
    timeout: float = 10.0

    def writer(self, server: str | None = None) -> ZoneWriter:
        return ZoneWriter(server or self.servers[0], self.zone, self.key, self.timeout,
                          read_key=self.read_key)

    def membership(self, server: str | None = None) -> ZoneMembership:
        return ZoneMembership(self.writer(server))

    def readable(self) -> tuple[ZoneMembership, str]:
        """A store whose server answers now, the primary first: (store, server).
        DirectoryError naming every server's failure when none does."""
        problems = []
        for server in self.servers:
            store = self.membership(server)
            try:
                store.view()
                return store, server
            except (MeshwgError, ValueError) as exc:
                problems.append(describe(exc, server, self.zone, self.key))
        raise DirectoryError("; ".join(problems))


def _read_keys(tsig_key: str, transfer_key: str | None) -> tuple[TsigKey, TsigKey | None]:
    key = read_tsig_key(tsig_key)        # TsigKeyError: FILE:LINE
    return key, (read_tsig_key(transfer_key) if transfer_key else None)


def access(state: RendezvousState, timeout: float = 10.0) -> ZoneAccess:
    """The zone access a rendezvous's state directory describes (DirectoryError)."""
    if not state.directory:
        raise DirectoryError(f"{state.state_dir}: this rendezvous keeps its membership "
                             f"itself (no --directory at init)")
    folder = Path(state.state_dir)
    # a read key copied in after init (the hint of _key_hint) counts as one given at init
    transfer = folder / TRANSFER_KEY_FILE if state.setting(META_TRANSFER_KEY) == "1" or \
        (folder / TRANSFER_KEY_FILE).exists() else None
    key, read_key = _read_keys(str(folder / KEY_FILE), str(transfer) if transfer else None)
    return ZoneAccess(parse_directory(state.directory), state.zone, key, read_key, timeout)


def _settings(store: ZoneMembership, network: str | None, server: str, zone: str,
              key: TsigKey) -> MeshSettings:
    """The mesh settings in the zone, written from `network` when there are none."""
    try:
        settings = store.view().settings
        if settings is None:
            if not network:
                raise DirectoryError(f"zone {zone} on {server} holds no mesh yet: the first "
                                     f"rendezvous needs --network CIDR")
            try:
                return store.init(network)
            except StateExistsError:           # another first rendezvous won the race
                settings = store.settings()
    except (ServerRefused, DirectoryUnavailable, ZoneUnavailable) as exc:
        raise DirectoryError(describe(exc, server, zone, key)) from None
    if network:
        try:
            same = ipaddress.ip_network(network, strict=True) == \
                ipaddress.ip_network(settings.network)
        except ValueError as exc:
            raise DirectoryError(f"--network {network!r}: {exc}") from None
        if not same:
            raise DirectoryError(f"--network {network} differs from the mesh {settings.network} "
                                 f"in zone {zone}: leave --network out on a second rendezvous")
    return settings


def _unregister(store: ZoneMembership, entry: RendezvousEntry) -> None:
    """Withdraw a registration (best effort: init failed after the zone took it)."""
    update = store.writer.new_update()
    owner = store.layout.rendezvous_name(entry.public_key)
    update.present(owner)
    update.delete(owner)
    update.delete(store.layout.claim_name(entry.mesh_address))
    try:
        store.writer.send(update, "withdrawing a failed rendezvous init")
    except MeshwgError:
        pass


def init_on_directory(state_dir: str | os.PathLike, endpoint: str, zone: str, directory: str,
                      tsig_key: str, *, network: str | None = None,
                      transfer_key: str | None = None, listen_port: int | None = None,
                      interface: str = "meshwg-rdv", enroll_port: int | None = None,
                      dns_port: int = DEFAULT_DNS_PORT, timeout: float = 10.0) -> RendezvousState:
    """Create a rendezvous on the DNS directory (see the module docstring) and return its
    state. Raises StateError (DirectoryError, TsigKeyError) with one line."""
    state_dir = Path(state_dir)
    servers = parse_directory(directory)
    try:
        zone = normalize_zone(check_zone_name(zone))
        _, endpoint_port = parse_endpoint(endpoint)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    if (state_dir / DB_NAME).exists():
        raise StateExistsError(f"{state_dir / DB_NAME}: a rendezvous state already exists; "
                               f"refusing to overwrite it")
    try:
        key, read_key = _read_keys(tsig_key, transfer_key)
    except MeshwgError as exc:
        raise StateError(str(exc)) from None
    zone_access = ZoneAccess(servers, zone, key, read_key, timeout)
    primary = servers[0]
    store = zone_access.membership()
    settings = _settings(store, network, primary, zone, key)
    check_readers(zone_access)

    existed = state_dir.exists()
    prepare_private_dir(state_dir)
    created: list[Path] = []
    entry = None
    try:
        for source, name in ((tsig_key, KEY_FILE), (transfer_key, TRANSFER_KEY_FILE)):
            if source:
                save_private_file(state_dir / name, Path(source).read_bytes())
                created.append(state_dir / name)
        from discovery.relay import tls
        identity = tls.ensure_identity(state_dir)
        created += [identity.cert_path, identity.key_path]
        private = crypto.generate_private_key()
        port = listen_port if listen_port is not None else endpoint_port
        enroll = format_endpoint((parse_endpoint(endpoint)[0], enroll_port or port))
        try:
            entry = store.register_rendezvous(crypto.public_key(private), endpoint, enroll,
                                              identity.pin)
        except (ServerRefused, DirectoryUnavailable, ZoneUnavailable) as exc:
            raise DirectoryError(describe(exc, primary, zone, key)) from None
        meta = {META_DIRECTORY: format_directory(servers),
                META_TRANSFER_KEY: "1" if transfer_key else "0"}
        return RendezvousState.init(state_dir, settings.network, endpoint, zone,
                                    listen_port=listen_port, interface=interface,
                                    enroll_port=enroll_port, dns_port=dns_port,
                                    private_key=private, mesh_id=settings.mesh_id,
                                    address=entry.mesh_address, extra_meta=meta)
    except BaseException as exc:
        if entry is not None:
            _unregister(store, entry)
        if not existed:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            for path in created:
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StateError(f"{state_dir}: {exc.strerror or exc}") from None
        raise


def rendezvous_refs(entries: list[RendezvousEntry], leave_out: bytes | None = None
                    ) -> list[RendezvousRef]:
    """The zone's registered rendezvous as tokens and enrollment responses name them
    (ordered by mesh address, `leave_out` omitted, at most MAX_OTHERS). An entry whose
    enroll= is not HOST:PORT is left out (the zone's parser admits none such)."""
    refs = []
    for entry in sorted(entries, key=lambda e: e.mesh_address):
        if entry.public_key == leave_out:
            continue
        try:
            port = parse_endpoint(entry.enroll)[1]
        except ValueError:
            continue
        refs.append(RendezvousRef(entry.public_key, entry.endpoint, port,
                                  mesh_address=entry.mesh_address, pin=entry.pin,
                                  relay_tcp_port=entry.relay_tcp_port))
    return refs[:MAX_OTHERS]


def listed_refs(records: list[tuple[bytes, ...]], network: str
                ) -> tuple[list[RendezvousRef], dict[str, int]]:
    """The rendezvous list a member read at ``_rendezvous.ZONE`` (discovery.dnssd.client
    .rendezvous_list) as references, and what it dropped by reason
    (zone_membership.served_rendezvous)."""
    entries, dropped = served_rendezvous(records, network)
    return rendezvous_refs(entries), dict(dropped)


def invite_token(state: RendezvousState, invite: Invite, enroll_port: int | None = None,
                 rendezvous: list[RendezvousEntry] = ()) -> Token:
    """The join token of an invite recorded in the zone, naming this rendezvous first and
    every other one registered in `rendezvous` (the zone's) after it."""
    return Token(endpoint=state.endpoint, rendezvous_public_key=state.public_key,
                 invite_id=invite.invite_id, secret=invite.secret,
                 expires_at=invite.expires_at, mesh_id=state.mesh_id,
                 enroll_port=enroll_port or state.enroll_port,
                 others=tuple(rendezvous_refs(list(rendezvous), leave_out=state.public_key)))


def rendezvous_rows(store: ZoneMembership, me: bytes) -> list[dict]:
    """The mesh's rendezvous as `meshwg members` lists them (this one marked)."""
    return [{"public_key": encode_key(e.public_key), "endpoint": e.endpoint,
             "enroll": e.enroll, "address": e.mesh_address, "self": e.public_key == me}
            for e in sorted(store.rendezvous(), key=lambda e: e.mesh_address)]


def writable(zone_access: ZoneAccess) -> str | None:
    """None when the primary answers now, else one line why the directory is read-only."""
    try:
        zone_access.writer().serial()
        return None
    except (MeshwgError, ValueError) as exc:
        return ("the primary is not writable: " +
                describe(exc, zone_access.servers[0], zone_access.zone, zone_access.key))



def on_primary(zone_access: ZoneAccess, action: Callable[[ZoneMembership], T]) -> T:
    """`action(store on the primary)`; a primary that cannot be reached or refuses is one
    DirectoryError saying that writes (enrollment, revocation, invites) wait for it."""
    primary = zone_access.servers[0]
    try:
        return action(zone_access.membership())
    except (DirectoryUnavailable, ZoneUnavailable) as exc:
        raise DirectoryError(f"the primary DNS server {primary} is not writable now, so "
                             f"enrollment, invites and revocation wait for it "
                             f"({describe(exc, primary, zone_access.zone)})") from None
    except ServerRefused as exc:
        raise DirectoryError(describe(exc, primary, zone_access.zone, zone_access.key)) from None


def on_any(zone_access: ZoneAccess, action: Callable[[ZoneMembership], T]) -> tuple[T, str]:
    """`action` on the first server that answers (the primary first): (result, server)."""
    store, server = zone_access.readable()
    try:
        return action(store), server
    except (DirectoryUnavailable, ZoneUnavailable, ServerRefused) as exc:
        raise DirectoryError(describe(exc, server, zone_access.zone, zone_access.key)) from None


@dataclass(frozen=True)
class ZoneRead:
    """One finished read of the zone, parsed: what :meth:`ZoneState.refresh` swaps in."""

    serial: int
    members: list[Member]
    directory: dict[bytes, MemberRecord]
    rendezvous: list[RendezvousEntry]
    server: str


class ZoneState:
    """What `rendezvous run` reads of its state when the membership is a zone's: the
    rendezvous's own settings from its RendezvousState (attributes pass through), the
    members as last read from the first server that answers (primary first, then the
    secondaries; none answering: the last read stays). :meth:`refresh` re-reads when the
    zone's SOA serial moved, at most every `min_interval` seconds. Host candidates the
    members report are kept in memory (the directory's, not the zone's membership).

    Once :meth:`start_reader` ran, the SOA checks, transfers and parsing happen in a
    worker (a Service, "zone-reader"); :meth:`refresh`, :meth:`members` and
    :meth:`announce_relay` then do no I/O: refresh swaps in the worker's finished
    :class:`ZoneRead` (one reference taken under a lock held for no I/O), so the daemon's
    main loop never waits on DNS."""

    def __init__(self, state: RendezvousState, min_interval: float = 2.0):
        self._state = state
        self._access = access(state, timeout=3.0)   # a dead server must not stall the loop long
        self._stores = [self._access.membership(s) for s in self._access.servers]
        self._announce_at = 0.0     # when our entry's tls= may be written (announce_relay)
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._members: list[Member] = []
        self._serial: int | None = None
        self._next_check = 0.0
        self._candidates: dict[bytes, list[str]] = {}
        self._directory: dict[bytes, MemberRecord] = {}  # the zone's directory records
        self._rendezvous: list[RendezvousEntry] | None = None  # as the last read listed them
        self._read_serial: int | None = None  # the serial the reader last read (worker's)
        self._pending: ZoneRead | None = None  # read by the worker, not yet swapped in
        self._reader: Service | None = None   # the worker (start_reader)
        self._relay_port: int | None = None   # our entry's tls= as the daemon wants it
        self.read_from = ""             # the server of the last read
        self.problem = ""               # why no server answered at the last try ("" if one did)
        self.primary_problem = ""       # why the primary did not answer at the last try
        self.saved_at: float | None = None  # serving the copy saved then (unix s; zone_cache)
        self._saved_view = None
        self._load_saved()

    def __getattr__(self, name: str):
        return getattr(self._state, name)

    def _load_saved(self) -> None:
        """Serve the zone saved at the last read (discovery.stores.zone_cache) until a
        server answers: a restart during a DNS outage keeps the membership."""
        saved = load_zone(cache_path(self._state.state_dir), self._access.zone)
        if saved is None:
            return
        try:
            view = self._stores[0].layout.parse(saved.content)
            directory = zone_records(saved.content, self._access.zone)
        except (MeshwgError, ValueError) as exc:
            log.warning("ignoring the saved zone %s: %s", cache_path(self._state.state_dir), exc)
            return
        self._members = sorted(view.members.values(), key=lambda m: (m.joined_at, m.name))
        self._serial, self._directory, self._saved_view = saved.content.serial, directory, view
        self._read_serial = saved.content.serial
        self.saved_at = saved.read_at
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(saved.read_at))
        self.read_from = f"the copy saved in the state directory (read from {saved.server} at {when})"
        log.info("zone %s: serving %d members as read from %s at %s (serial %d) until a "
                 "server answers", self._access.zone, len(self._members), saved.server, when,
                 saved.content.serial)

    def _save(self, store: ZoneMembership) -> None:
        """Keep what `store` read last in the state directory (best effort)."""
        if store.content is None:
            return
        try:
            save_zone(cache_path(self._state.state_dir), self._access.zone, store.content,
                      store.writer.server)
        except OSError as exc:
            log.warning("cannot save zone %s in %s: %s", self._access.zone,
                        self._state.state_dir, exc.strerror or exc)

    def refresh(self, force: bool = False) -> bool:
        """Read the membership again when the serial moved; True when it changed. With a
        reader running (:meth:`start_reader`): only swap in what it finished reading, no
        I/O (`force` then means nothing)."""
        if self._reader is not None:
            with self._lock:
                read, self._pending = self._pending, None
            return read is not None and self._apply(read)
        now = time.monotonic()
        with self._lock:
            if not force and now < self._next_check:
                return False
            self._next_check = now + self._min_interval
        read = self._read()
        return read is not None and self._apply(read)

    def _read(self) -> ZoneRead | None:
        """The I/O half of a refresh: the SOA serial of the first server that answers and,
        when it moved since the last read, the zone transferred and parsed (saved in the
        state directory too). None when it did not move or no server answered (problem
        and primary_problem say why)."""
        problems = []
        for store in self._stores:
            try:
                serial = store.writer.serial()
                if store is self._stores[0]:
                    self.primary_problem = ""
                if serial == self._read_serial:
                    self.problem = ""
                    if self.saved_at is not None:       # the saved copy is current
                        self.read_from, self.saved_at = store.writer.server, None
                    return None
                members = store.members()
                directory = zone_records(store.content, self._access.zone) \
                    if store.content is not None else {}
                view = store.last_view()
            except (MeshwgError, ValueError) as exc:
                problems.append(describe(exc, store.writer.server, self._access.zone))
                if store is self._stores[0]:
                    self.primary_problem = problems[-1]
                continue
            self._read_serial = view.serial if view is not None else serial
            self.problem = ""
            self._save(store)
            return ZoneRead(self._read_serial, members, directory,
                            list(view.rendezvous.values()) if view is not None else [],
                            store.writer.server)
        self.problem = "; ".join(problems)
        return None

    def _apply(self, read: ZoneRead) -> bool:
        """Serve `read` (the main loop's side: no I/O); True when members or directory
        records changed."""
        changed = [m.public_key for m in read.members] != [m.public_key for m in self._members]
        changed = changed or read.directory != self._directory
        self._members, self._serial, self._directory = read.members, read.serial, read.directory
        self._rendezvous = read.rendezvous
        self.read_from, self.saved_at, self._saved_view = read.server, None, None
        return changed

    def start_reader(self, wake: Callable[[], None]) -> Service:
        """Check the serial, transfer and parse in a worker from now on, every
        `min_interval` seconds (at once when asked: :meth:`announce_relay`); `wake()`
        (the daemon's loop) is called when a new read is ready for :meth:`refresh`.
        The worker also writes our entry's relay port. Returns the Service (stop() it)."""
        service = Service("zone-reader")

        def step() -> float:
            read = self._read()
            if read is not None:
                with self._lock:
                    self._pending = read
                wake()
            if self._relay_port is not None and self._write_relay(self._relay_port):
                return 0.0              # read our entry back now
            return self._min_interval

        self._reader = service
        service.spawn(service.loop, step, name="zone-reader")
        return service

    def members(self) -> list[Member]:
        self.refresh(force=True)
        return [dataclasses.replace(m, host_candidates=list(self._candidates.get(m.public_key, [])))
                for m in self._members]

    def primary(self) -> ZoneMembership:
        """A store of its own on the primary (for a writer in another thread)."""
        return self._access.membership()

    def directory_records(self) -> dict[bytes, MemberRecord]:
        """The member records rendezvous wrote into the zone, as last read (by key;
        discovery.stores.zone_directory)."""
        return self._directory

    def find_member(self, ref: str | bytes) -> Member | None:
        for member in self._members:
            if ref in (member.public_key, member.name, member.mesh_address):
                return member
        return None

    def update_candidates(self, public_key: bytes, candidates: list[str]) -> None:
        try:
            candidates = validate_candidates(candidates)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        if self.find_member(public_key) is None:
            raise UnknownMemberError(f"no member with public key {encode_key(public_key)}")
        self._candidates[public_key] = candidates

    def rendezvous(self) -> list[RendezvousEntry]:
        """The mesh's rendezvous as the zone listed them at the last read (no I/O)."""
        if self._rendezvous is not None:
            return list(self._rendezvous)
        for store in self._stores:
            view = store.last_view()
            if store.writer.server == self.read_from and view is not None:
                return list(view.rendezvous.values())
        return list(self._saved_view.rendezvous.values()) if self._saved_view is not None else []

    def announce_relay(self, relay_tcp_port: int) -> bool:
        """Have our zone entry carry `relay_tcp_port` (tls=; 0: none) when the last read
        says it does not: one update on the primary, tried at most every ANNOUNCE_RETRY
        seconds (a primary that is down does not stall every round). True when written.
        With a reader running the worker writes it (False here: no I/O)."""
        if self._reader is not None:
            if self._relay_port != relay_tcp_port:
                self._relay_port = relay_tcp_port
                self._reader.wake()
            return False
        if self._write_relay(relay_tcp_port):
            self._next_check = 0.0      # read our entry back at the next refresh
            return True
        return False

    def _write_relay(self, relay_tcp_port: int) -> bool:
        """announce_relay's I/O half: True when our entry was written."""
        now = time.monotonic()
        ours = next((e for e in self.rendezvous() if e.public_key == self._state.public_key), None)
        if ours is None or ours.relay_tcp_port == relay_tcp_port or now < self._announce_at:
            return False
        self._announce_at = now + ANNOUNCE_RETRY
        try:
            self._stores[0].update_rendezvous(dataclasses.replace(ours, relay_tcp_port=relay_tcp_port))
        except (MeshwgError, ValueError) as exc:
            log.warning("cannot write our relay port into zone %s: %s", self._access.zone,
                        describe(exc, self._access.servers[0], self._access.zone))
            return False
        return True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop(timeout=5)
        self._state.close()
