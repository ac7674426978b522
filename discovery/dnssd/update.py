"""Writing and reading a zone on an authoritative DNS server: TSIG-signed dynamic updates
(RFC 2136) with prerequisites, and signed full zone transfers, all over TCP through
dnspython's public API (dns.update, dns.query). The I/O side of the directory on real DNS.

* An update is one UPDATE message (RFC 2136 section 2): prerequisites (section 2.4: a name
  is or is not in use, an RRset exists as is or not at all) and changes, applied by the
  primary all or nothing. A failed prerequisite comes back as YXDOMAIN, YXRRSET, NXDOMAIN
  or NXRRSET (section 2.2) and raises :class:`UpdateRefused` with that rcode: YXDOMAIN for
  "the name must not exist" is the clean "already taken" signal the membership store
  (discovery.stores.zone_membership) builds atomic allocation on.
* Every message is signed with the zone's TSIG key (RFC 8945); an unsigned or wrongly
  signed update gets REFUSED or NOTAUTH (BADSIG/BADKEY) and raises :class:`UpdateRefused`
  naming the key.
* :meth:`ZoneWriter.read` transfers the whole zone (AXFR, RFC 5936) signed with the same
  key, bounded in messages, records and time; :meth:`ZoneWriter.serial` asks only the
  SOA, so a reader re-transfers only when the serial moved (RFC 1995 section 2: the serial
  names the zone's version); :meth:`ZoneWriter.read_since` then asks only the changes
  since the content it read before (IXFR, RFC 1995) and applies them to a copy of it,
  falling back to AXFR when the server refuses or answers oddly.
* Network failures (refused connection, timeout, a reset, a malformed answer) raise
  :class:`DirectoryUnavailable`; the caller may try again later or elsewhere.

Units: timeouts in seconds, sizes in bytes. The server is "HOST:PORT" (meshwg.util.endpoint).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from meshwg.util.endpoint import parse_endpoint
from meshwg.util.errors import MeshwgError

from discovery.dnssd.names import zone_name

DEFAULT_TIMEOUT = 10.0          # seconds per exchange
MAX_XFR_BYTES = 256 << 20       # bytes of one transfer (10,000 members are ~2 MB)
MAX_XFR_RECORDS = 400_000       # records kept from one transfer (10,000 members use ~50,000)
MAX_XFR_TIME = 60.0             # seconds for a whole transfer
MAX_UPDATE_BYTES = 60_000       # an update message's wire size (TCP messages fit 65,535)

_NETWORK_ERRORS = (OSError, EOFError, dns.exception.Timeout, dns.exception.FormError,
                   dns.message.ShortHeader, dns.message.TrailingJunk, dns.query.BadResponse,
                   dns.exception.SyntaxError, ValueError)


class KeySource(Protocol):
    """What the writer needs of a TSIG key file (discovery.dnssd.tsig_file.TsigKey)."""

    def key(self) -> dns.tsig.Key: ...


class ServerRefused(MeshwgError):
    """The DNS server answered but refused; ``rcode`` is the DNS rcode (int), ``what``
    the operation it refused."""

    def __init__(self, rcode: int, what: str, message: str, keyname: str | None = None,
                 tsig_error: int | None = None):
        super().__init__(message)
        self.rcode = rcode
        self.what = what
        self.keyname = keyname          # the TSIG key the refused message was signed with
        self.tsig_error = tsig_error    # the answer's TSIG error (BADKEY, BADSIG...), if any

    @property
    def rcode_text(self) -> str:
        return dns.rcode.to_text(self.rcode)


class UpdateRefused(ServerRefused):
    """An UPDATE failed: a prerequisite (YXDOMAIN, YXRRSET, NXDOMAIN, NXRRSET; RFC 2136
    section 2.2) or the key (REFUSED, NOTAUTH)."""


class TransferRefused(ServerRefused):
    """A zone transfer or SOA query was refused (wrong key, not allowed)."""


class DirectoryUnavailable(MeshwgError):
    """The DNS server cannot be reached or did not answer sanely; try again later."""


@dataclass
class ZoneContent:
    """A zone as one transfer saw it: its SOA serial and its records by (absolute owner
    name, type), the apex SOA left out, in transfer order (duplicates kept as sent)."""

    serial: int
    records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]]

    def rrset(self, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        """The RRset at (name, type) as read, or None."""
        rdatas = self.records.get((name, rdtype))
        if not rdatas:
            return None
        out = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for rdata in rdatas:
            out.add(rdata, 0)
        return out


def resolve_host(host: str) -> str:
    """`host` as an address (a name resolved once, the first address); DirectoryUnavailable
    naming the host when it does not resolve (dnspython takes addresses only)."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, UnicodeError, IndexError) as exc:
        raise DirectoryUnavailable(f"DNS server host {host!r} does not resolve "
                                   f"({getattr(exc, 'strerror', None) or exc or 'no address'})"
                                   ) from None


_TSIG_ERRORS = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}   # RFC 8945 5.3 (16 is also BADVERS)


def refusal(server: str, keyname: str, rcode: int, tsig_error: int | None) -> str:
    """One line for a server that refused a message signed with `keyname`: "DNS server
    H:P refused key K (BADKEY)", with what the rcode or the TSIG error means."""
    if tsig_error:
        code = _TSIG_ERRORS.get(tsig_error, dns.rcode.to_text(tsig_error))
        why = {dns.rcode.BADKEY: "it does not know this key",
               dns.rcode.BADSIG: "its secret for this key differs",
               dns.rcode.BADTIME: "the clocks differ"}.get(tsig_error, "it rejects the key")
    else:
        code = dns.rcode.to_text(rcode)
        why = {dns.rcode.NOTAUTH: "it does not know this key, or does not answer queries "
                                  "from this address (Knot's mod-queryacl)",
               dns.rcode.REFUSED: "this key or address may not use the zone there"
               }.get(rcode, _rcode_meaning(rcode))
    return f"DNS server {server} refused key {keyname} ({code}: {why})"


def _rcode_meaning(rcode: int) -> str:
    return {
        dns.rcode.YXDOMAIN: "a name that must not exist does",
        dns.rcode.YXRRSET: "an RRset that must not exist does",
        dns.rcode.NXDOMAIN: "a name that must exist does not",
        dns.rcode.NXRRSET: "an RRset that must exist (as is) does not",
        dns.rcode.REFUSED: "the server refuses (key not allowed to update this zone?)",
        dns.rcode.NOTAUTH: "the server is not authoritative or rejects the key",
        dns.rcode.NOTZONE: "a name is outside the zone",
    }.get(rcode, "the server failed the request")


class ZoneWriter:
    """TSIG-signed RFC 2136 updates to, and AXFR reads from, one zone on one server.

    `server` is "HOST:PORT" of the primary (updates) or any server of the zone (reads);
    `zone` the zone's name; `key` gives the dns.tsig.Key (discovery.dnssd.tsig_file);
    `timeout` seconds per exchange. Reads (SOA, AXFR) are signed with `read_key` when
    given (a primary may allow transfers to another key than updates: configs/dns),
    else with `key`. Thread-safe: every call opens its own connection.
    """

    def __init__(self, server: str, zone: str | dns.name.Name, key: KeySource,
                 timeout: float = DEFAULT_TIMEOUT, *, read_key: KeySource | None = None,
                 max_records: int = MAX_XFR_RECORDS,
                 max_bytes: int = MAX_XFR_BYTES, max_transfer_time: float = MAX_XFR_TIME):
        try:
            self.host, self.port = parse_endpoint(server)
        except ValueError as exc:
            raise MeshwgError(f"DNS server {server!r}: {exc}") from None
        self.server = server
        self.zone = zone_name(zone)
        self.tsig = key.key()
        self.keyring = {self.tsig.name: self.tsig}
        self.read_tsig = read_key.key() if read_key is not None else self.tsig
        self.read_keyring = {self.read_tsig.name: self.read_tsig}
        self.timeout = timeout
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_transfer_time = max_transfer_time
        self.ixfr_applied = self.ixfr_full = self.ixfr_fallbacks = 0   # read_since's outcomes
        self.ixfr_problem = ""

    # -- updates

    def new_update(self) -> dns.update.UpdateMessage:
        """An empty UPDATE for the zone, to be signed with the key when sent."""
        update = dns.update.UpdateMessage(self.zone)
        update.use_tsig(self.keyring, keyname=self.tsig.name, algorithm=self.tsig.algorithm)
        return update

    def send(self, update: dns.update.UpdateMessage, what: str) -> None:
        """Send one update over TCP and wait for its answer. Raises UpdateRefused (naming
        `what` and the rcode) unless NOERROR, DirectoryUnavailable on network errors,
        MeshwgError if the message exceeds MAX_UPDATE_BYTES."""
        try:
            update.to_wire(max_size=MAX_UPDATE_BYTES)
        except dns.exception.TooBig:
            raise MeshwgError(f"update ({what}) exceeds {MAX_UPDATE_BYTES} bytes") from None
        response = self._exchange(update, what, UpdateRefused)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise UpdateRefused(rcode, what, f"{self.server}: update of {self.zone} refused "
                                f"({what}): {dns.rcode.to_text(rcode)}, {_rcode_meaning(rcode)}",
                                keyname=self.tsig.name.to_text(omit_final_dot=True))

    def _exchange(self, message: dns.message.Message, what: str,
                  refused: type[ServerRefused]) -> dns.message.Message:
        """Send `message` (signed) over TCP and return the verified answer. An answer that
        does not verify but says the server refused (NOTAUTH/REFUSED, or a TSIG error such
        as BADKEY; such answers are unsigned) raises `refused` naming the key; it is only
        ever taken as a failure, never as a success."""
        keyname = message.keyname.to_text(omit_final_dot=True) if message.keyname else "(none)"
        try:
            deadline = time.monotonic() + self.timeout
            wire = message.to_wire()
            with socket.create_connection((resolve_host(self.host), self.port),
                                          timeout=self.timeout) as sock:
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                (length,) = struct.unpack("!H", _recv_exact(sock, 2, deadline, self.timeout))
                answer = _recv_exact(sock, length, deadline, self.timeout)
        except _NETWORK_ERRORS as exc:
            raise DirectoryUnavailable(f"{self.server}: {what}: {type(exc).__name__}: "
                                       f"{exc or 'no answer'}") from None
        try:
            response = dns.message.from_wire(answer, keyring=message.keyring,
                                             request_mac=message.mac)
        except (dns.tsig.PeerError, dns.message.UnknownTSIGKey, dns.exception.FormError,
                dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.BadAlgorithm) as exc:
            self._refused_or_raise(answer, message, keyname, what, refused, exc)
            raise AssertionError("unreachable") from None
        except (dns.exception.DNSException, ValueError) as exc:
            raise DirectoryUnavailable(f"{self.server}: {what}: {type(exc).__name__}: "
                                       f"{exc or 'a malformed answer'}") from None
        if response.id != message.id or not message.is_response(response):
            raise DirectoryUnavailable(f"{self.server}: {what}: an answer to another query")
        return response

    def _refused_or_raise(self, answer: bytes, message: dns.message.Message, keyname: str,
                          what: str, refused: type[ServerRefused], exc: Exception) -> None:
        """An answer whose TSIG did not verify: `refused` when it refuses the key, else
        DirectoryUnavailable."""
        try:
            unverified = dns.message.from_wire(answer, keyring=False)
        except (dns.exception.DNSException, ValueError):
            unverified = None
        if unverified is not None and unverified.id == message.id:
            rcode = unverified.rcode()
            tsig_error = unverified.tsig_error if unverified.had_tsig else None
            if rcode != dns.rcode.NOERROR or tsig_error:
                raise refused(rcode, what, f"{refusal(self.server, keyname, rcode, tsig_error)}"
                              f" to {what}", keyname=keyname, tsig_error=tsig_error) from None
        raise DirectoryUnavailable(f"{self.server}: {what}: the answer's TSIG does not "
                                   f"verify ({type(exc).__name__}: {exc})") from None

    # -- reads

    def serial(self) -> int:
        """The zone's SOA serial, asked over TCP with a signed query."""
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        query.use_tsig(self.read_keyring, keyname=self.read_tsig.name,
                       algorithm=self.read_tsig.algorithm)
        response = self._exchange(query, f"SOA query for {self.zone}", TransferRefused)
        rcode = response.rcode()
        soa = response.get_rrset(response.answer, self.zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        if rcode != dns.rcode.NOERROR or soa is None or len(soa) != 1:
            raise TransferRefused(rcode, "SOA query", f"{self.server}: no SOA for {self.zone} "
                                  f"({dns.rcode.to_text(rcode)})",
                                  keyname=self.read_tsig.name.to_text(omit_final_dot=True))
        return int(soa[0].serial)

    def read(self) -> ZoneContent:
        """The whole zone by one signed AXFR over TCP (RFC 5936 section 2.2: messages of
        records framed by the SOA; RFC 8945 section 5.3.1: TSIG over the stream). At most
        `max_bytes` bytes and `max_records` records within `max_transfer_time` seconds,
        else DirectoryUnavailable. Records outside the zone or of another class are
        dropped."""
        query = dns.message.make_query(self.zone, dns.rdatatype.AXFR)
        with contextlib.closing(self._stream(query, f"transfer of {self.zone}")) as rrs:
            first = next(rrs)
            if not self._is_soa(first):
                raise DirectoryUnavailable(f"{self.server}: transfer of {self.zone}: the "
                                           f"answer does not start with the SOA")
            return self._full(int(first[0].serial), rrs, [])

    def read_since(self, since: ZoneContent | None) -> ZoneContent:
        """The zone as the server holds it now, given `since` (a content read before,
        not changed by the caller): an incremental transfer (IXFR, RFC 1995) from its
        serial applied to a copy of it; the whole zone (:meth:`read`) when there is no
        `since`, or when the IXFR is refused or its answer is odd (a serial going
        backwards, a delta that does not apply, a truncated stream). A server may answer
        an IXFR with the whole zone (RFC 1995 section 4): taken as it is. `ixfr_applied`,
        `ixfr_full` and `ixfr_fallbacks` count the outcomes (`ixfr_problem`: the last
        fallback's reason)."""
        if since is None:
            return self.read()
        try:
            return self._ixfr(since)
        except (ServerRefused, DirectoryUnavailable) as exc:
            self.ixfr_fallbacks += 1
            self.ixfr_problem = str(exc)
            return self.read()

    def _ixfr(self, since: ZoneContent) -> ZoneContent:
        what = f"incremental transfer of {self.zone} from serial {since.serial}"
        query = dns.message.make_query(self.zone, dns.rdatatype.IXFR)
        query.authority.append(dns.rrset.from_text(self.zone, 0, "IN", "SOA",
                                                   f". . {since.serial} 0 0 0 0"))
        with contextlib.closing(self._stream(query, what)) as rrs:
            first = next(rrs)
            if not self._is_soa(first):
                raise DirectoryUnavailable(f"{self.server}: {what}: the answer does not "
                                           f"start with the SOA")
            final = int(first[0].serial)
            if final == since.serial:
                return since                # up to date (a single SOA)
            if _serial_before(final, since.serial):
                raise DirectoryUnavailable(f"{self.server}: {what}: the serial went "
                                           f"backwards (to {final})")
            second = next(rrs)
            if not self._is_soa(second):      # the whole zone instead (RFC 1995 section 4)
                self.ixfr_full += 1
                return self._full(final, rrs, [second])
            content = self._apply_deltas(since, final, second, rrs, what)
            self.ixfr_applied += 1
            return content

    def _apply_deltas(self, since: ZoneContent, final: int, first: dns.rrset.RRset,
                      rrs: Iterator[dns.rrset.RRset], what: str) -> ZoneContent:
        """RFC 1995 section 4's sequences (old SOA, deleted records, new SOA, added
        records), the first one's old SOA being `first`, applied to a copy of `since`
        up to the closing SOA of serial `final`."""
        records = {key: list(rdatas) for key, rdatas in since.records.items()}
        total = sum(len(rdatas) for rdatas in records.values())
        current, new, adding = since.serial, None, False
        rr: dns.rrset.RRset | None = first
        while True:
            if rr is None:
                rr = next(rrs)
            if self._is_soa(rr):
                serial = int(rr[0].serial)
                if not adding and new is None:             # a sequence's old SOA
                    if serial != current:
                        raise DirectoryUnavailable(f"{self.server}: {what}: a change from "
                                                   f"serial {serial}, expected {current}")
                    new = -1
                elif not adding:                            # its new SOA: additions follow
                    new, adding = serial, True
                else:                                       # the end of a sequence
                    current, new, adding = new, None, False
                    if serial == final and current == final:
                        break
                    if serial != current:
                        raise DirectoryUnavailable(f"{self.server}: {what}: a change from "
                                                   f"serial {serial}, expected {current}")
                    new = -1
                rr = None
                continue
            if rr.rdclass == dns.rdataclass.IN and rr.name.is_subdomain(self.zone):
                key, rdata = (rr.name, rr.rdtype), rr[0]
                kept = records.get(key, [])
                if adding:
                    if rdata not in kept:
                        records.setdefault(key, kept).append(rdata)
                        total += 1
                elif rdata in kept:
                    kept.remove(rdata)
                    total -= 1
                    if not kept:
                        del records[key]
                else:
                    raise DirectoryUnavailable(f"{self.server}: {what}: deletes a record "
                                               f"the zone read before does not hold")
                if total > self.max_records:
                    raise DirectoryUnavailable(f"{self.server}: {what}: over "
                                               f"{self.max_records} records")
            rr = None
        return ZoneContent(final, records)

    def _is_soa(self, rrset: dns.rrset.RRset) -> bool:
        return rrset.rdtype == dns.rdatatype.SOA and rrset.name == self.zone

    def _full(self, serial: int, rrs: Iterator[dns.rrset.RRset],
              first: list[dns.rrset.RRset]) -> ZoneContent:
        """A whole zone's records after its opening SOA (`first`, then `rrs`) up to the
        closing SOA; records outside the zone or of another class dropped."""
        records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        for rrset in itertools.chain(first, rrs):
            if self._is_soa(rrset):
                return ZoneContent(serial, records)
            if rrset.rdclass == dns.rdataclass.IN and rrset.name.is_subdomain(self.zone):
                records.setdefault((rrset.name, rrset.rdtype), []).extend(rrset)
        raise DirectoryUnavailable(f"{self.server}: transfer of {self.zone}: ended early")

    def _stream(self, query: dns.message.Message, what: str) -> Iterator[dns.rrset.RRset]:
        """The answer records of a signed transfer `query` over TCP, one per RRset, message
        after message (RFC 8945 section 5.3.1: TSIG over the stream), until the caller
        stops (closing it closes the connection). At most `max_bytes` bytes and
        `max_records` records within `max_transfer_time` seconds, else
        DirectoryUnavailable; a refusal is TransferRefused naming the key."""
        keyname = self.read_tsig.name.to_text(omit_final_dot=True)
        query.use_tsig(self.read_keyring, keyname=self.read_tsig.name,
                       algorithm=self.read_tsig.algorithm)
        deadline = time.monotonic() + self.max_transfer_time
        count = 0
        try:
            with socket.create_connection((resolve_host(self.host), self.port),
                                          timeout=self.timeout) as sock, \
                    _shutdown_at_exit(sock):
                wire = query.to_wire()
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                frames = _FramePump(sock, deadline, self.timeout, self.max_bytes,
                                    f"{self.server}: {what}")
                tsig_ctx = None
                while True:
                    data = frames.next()
                    message = dns.message.from_wire(
                        data, keyring=self.read_keyring, request_mac=query.mac, xfr=True,
                        tsig_ctx=tsig_ctx, multi=True, one_rr_per_rrset=True)
                    tsig_ctx = message.tsig_ctx
                    if message.rcode() != dns.rcode.NOERROR:
                        raise TransferRefused(message.rcode(), what, refusal(
                            self.server, keyname, message.rcode(),
                            message.tsig_error if message.had_tsig else None) + f" to {what}",
                            keyname=keyname,
                            tsig_error=message.tsig_error if message.had_tsig else None)
                    if not message.answer:
                        raise DirectoryUnavailable(f"{self.server}: {what}: an empty message")
                    count += len(message.answer)
                    if count > self.max_records + 2:
                        raise DirectoryUnavailable(f"{self.server}: {what}: over "
                                                   f"{self.max_records} records")
                    yield from message.answer
        except (dns.tsig.PeerError, dns.message.UnknownTSIGKey) as exc:
            tsig_error = {dns.tsig.PeerBadKey: dns.rcode.BADKEY,
                          dns.tsig.PeerBadSignature: dns.rcode.BADSIG,
                          dns.tsig.PeerBadTime: dns.rcode.BADTIME}.get(type(exc))
            raise TransferRefused(dns.rcode.NOTAUTH, what, refusal(
                self.server, keyname, dns.rcode.NOTAUTH, tsig_error) + f" to {what}",
                keyname=keyname, tsig_error=tsig_error) from None
        except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.exception.DNSException) + \
                _NETWORK_ERRORS as exc:
            raise DirectoryUnavailable(f"{self.server}: {what}: {type(exc).__name__}: "
                                       f"{exc or 'no answer'}") from None


def _serial_before(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: `a` comes before `b`."""
    return a != b and ((a < b and b - a < 1 << 31) or (a > b and a - b > 1 << 31))


class _FramePump:
    """Reads a transfer's length-prefixed messages (RFC 7766 section 8) in a thread while
    the caller parses, so a server with a short TCP I/O timeout (Knot: 500 ms) does not
    drop a slow reader; at most `max_bytes` are read. :meth:`next` returns the next
    message, or raises what the reading raised (EOFError, TimeoutError, DirectoryUnavailable
    for too many bytes). The thread ends with the socket (closed by the caller)."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float, max_bytes: int,
                 what: str):
        self._frames: queue.Queue = queue.Queue()
        self._deadline = deadline
        self._what = what
        self._thread = threading.Thread(target=self._pump, name="axfr-reader", daemon=True,
                                        args=(sock, deadline, timeout, max_bytes))
        self._thread.start()

    def _pump(self, sock: socket.socket, deadline: float, timeout: float, max_bytes: int) -> None:
        received = 0
        try:
            while True:
                (length,) = struct.unpack("!H", _recv_exact(sock, 2, deadline, timeout))
                received += 2 + length
                if received > max_bytes:
                    raise DirectoryUnavailable(f"{self._what}: over {max_bytes} bytes")
                self._frames.put(_recv_exact(sock, length, deadline, timeout))
        except BaseException as exc:  # noqa: BLE001 -- handed to the parsing thread
            self._frames.put(exc)

    def next(self) -> bytes:
        try:
            item = self._frames.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("the transfer took too long") from None
        if isinstance(item, BaseException):
            raise item
        return item


@contextlib.contextmanager
def _shutdown_at_exit(sock: socket.socket) -> Iterator[None]:
    """Shut `sock` down on the way out: a thread blocked reading it wakes and ends."""
    try:
        yield
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _recv_exact(sock: socket.socket, size: int, deadline: float, timeout: float) -> bytes:
    """Exactly `size` bytes from `sock` before `deadline` (monotonic seconds), each read
    within `timeout` seconds; EOFError or TimeoutError otherwise."""
    out = bytearray()
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the transfer took too long")
        sock.settimeout(min(timeout, left))
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise EOFError("the server closed the connection")
        out += chunk
    return bytes(out)


def _wire_size(rrset: dns.rrset.RRset) -> int:
    """Bytes of `rrset` uncompressed (an empty one: its owner and a fixed RR header)."""
    if not len(rrset):
        return len(rrset.name.to_wire()) + 10
    out = io.BytesIO()
    rrset.to_wire(out)
    return out.tell()


def batches(changes: Iterable[tuple[str, dns.rrset.RRset]], per_message: int,
            max_bytes: int = MAX_UPDATE_BYTES - 512) -> Iterable[list]:
    """Group (op, rrset) changes into lists of at most `per_message` records and
    `max_bytes` of uncompressed records each (an upper bound of their share of an UPDATE
    message; 512 bytes are left for the header, zone and TSIG; a "replace" also costs
    the RR that deletes the old RRset). An RRset is never split."""
    batch: list[tuple[str, dns.rrset.RRset]] = []
    count = size = 0
    for op, rrset in changes:
        records = max(1, len(rrset))
        wire = _wire_size(rrset) + (len(rrset.name.to_wire()) + 10 if op == "replace" else 0)
        if batch and (count + records > per_message or size + wire > max_bytes):
            yield batch
            batch, count, size = [], 0, 0
        batch.append((op, rrset))
        count += records
        size += wire
    if batch:
        yield batch
