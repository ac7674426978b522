"""Members report their host candidates (LAN addresses and port) to the rendezvous.

The report travels inside the WireGuard tunnel to the rendezvous's mesh address, so the
rendezvous knows who sent it from the source address alone: cryptokey routing only lets
a member's packets in with its own mesh address as source. One JSON line over TCP:
{"candidates": ["IP:port", ...]} answered by {"ok": true} or {"ok": false}. A member that
offers to relay (`meshwg join --relay`) adds "relay": PORT (its relay's UDP port,
published by the rendezvous: discovery.dnssd.relays); a report without it withdraws an
offer. "nat": "hard" | "easy" is the member's own netcheck finding (published as the
TXT key ``nat`` for hard-NAT traversal: discovery.traversal.birthday). "lk": BASE64 is
the public half of the member's LAN key (published as TXT ``lk``: discovery.lan.lankey).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any, Callable

from meshwg.util.endpoint import format_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.ingress import Ingress, admitted, restrict
from meshwg.util.jsonbound import loads_bounded
from meshwg.util.service import Service, StreamReader
from meshwg.util.resolve import family_of

from discovery.dnssd.member import check_port, parse_published
from discovery.lan.lankey import parse_lan_key

log = logging.getLogger("meshwg.report")

REPORT_PORT_DEFAULT = 5354   # TCP, on the rendezvous's mesh address only
MAX_REPORT = 4096            # bytes of one report line
MAX_CANDIDATES = 16
READ_TIMEOUT = 2.0           # seconds a sender has to deliver its line
MAX_CONNECTIONS = 32         # reports served at once (one per member at most, normally)
NAT_KINDS = ("hard", "easy")  # a report's optional "nat": the member's netcheck finding


class ReportError(MeshwgError):
    """A candidate report could not be delivered or was refused; the message says where."""


def parse_candidates(items: Any) -> list[str]:
    """Validate a report's list of "IP:port" / "[IPv6]:port" strings (at most
    MAX_CANDIDATES, publishable IP literals only) -> the same endpoints in canonical text.
    Raises ValueError naming the bad item."""
    if not isinstance(items, list) or len(items) > MAX_CANDIDATES:
        raise ValueError(f"candidates must be a list of at most {MAX_CANDIDATES} endpoints")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"candidate {item!r} is not a string")
        out.append(format_endpoint(parse_published(item)))
    return out


class CandidateReportServer:
    """Listens on the rendezvous's mesh address; calls on_report(source_ip, candidates)
    for each well-formed report (from its own thread). Malformed ones are answered
    {"ok": false} and counted in `dropped`. With an ``ingress`` (meshwg.util.ingress) it
    takes connections only from the tunnel, and closes those from sources it does not
    admit unanswered (counted in `refused`). Idle, it blocks without timeouts."""

    def __init__(self, address: str, port: int, on_report: Callable[[str, list[str]], None],
                 on_relay: Callable[[str, int | None], None] | None = None,
                 on_nat: Callable[[str, str | None], None] | None = None,
                 ingress: Ingress | None = None,
                 on_lan_key: Callable[[str, bytes | None], None] | None = None):
        self.on_lan_key = on_lan_key      # (source_ip, LAN key or None) for each report
        self.on_relay = on_relay          # (source_ip, relay port or None) for each report
        self.on_nat = on_nat              # (source_ip, "hard" | "easy" | None) for each report
        self.address = address
        self.requested_port = port
        self.on_report = on_report
        self.port = 0
        self.received = 0
        self.dropped = 0
        self.refused = 0
        self.ingress = ingress
        self._service = Service("report-server")
        self._sock: socket.socket | None = None

    def start(self) -> "CandidateReportServer":
        """Bind and serve; OSError if the address or port cannot be bound."""
        family = family_of(self.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            restrict(sock, self.ingress)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, self.requested_port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._service.on_close(sock.close)
        svc = self._service
        svc.spawn(lambda: svc.serve_connections(
            sock, lambda conn, peer: self._handle(conn, peer[0]), limit=MAX_CONNECTIONS,
            name="report-conn", on_reject=self._rejected), name="report-accept")
        return self

    def _read_line(self, conn: socket.socket) -> bytes:
        """The first line a sender writes (at most MAX_REPORT bytes, within READ_TIMEOUT)."""
        line = StreamReader(conn, self._service,
                            deadline=time.monotonic() + READ_TIMEOUT).read_line(MAX_REPORT)
        if line is None:
            raise ValueError(f"no report line of at most {MAX_REPORT} bytes within {READ_TIMEOUT:g} s")
        return line

    def _handle(self, conn: socket.socket, source: str) -> None:
        if not admitted(self.ingress, source):
            self.refused += 1
            return
        try:
            message = loads_bounded(self._read_line(conn), MAX_REPORT)
            candidates = parse_candidates(message.get("candidates"))
            nat = parse_nat(message.get("nat"))
            relay = parse_relay_port(message.get("relay"))
            lan_key = parse_lan_key(message.get("lk"))
        except (OSError, ValueError, AttributeError) as exc:
            self.dropped += 1
            log.info("dropped a malformed candidate report from %s: %s", source, exc)
            reply = b'{"ok": false}\n'
        else:
            self.received += 1
            try:
                self.on_report(source, candidates)
                if self.on_relay is not None:
                    self.on_relay(source, relay)
                if self.on_nat is not None:
                    self.on_nat(source, nat)
                if self.on_lan_key is not None:
                    self.on_lan_key(source, lan_key)
                reply = b'{"ok": true}\n'
            except Exception:               # noqa: BLE001 -- the server goes on
                log.exception("handling the candidate report from %s failed", source)
                reply = b'{"ok": false}\n'
        try:
            conn.setblocking(True)
            conn.settimeout(READ_TIMEOUT)
            conn.sendall(reply)
        except OSError:
            pass

    def _rejected(self) -> None:
        self.dropped += 1

    def stop(self) -> None:
        self._service.stop()


def parse_relay_port(value: Any) -> int | None:
    """A report's "relay" value: None (absent) or a port in 1..65535; ValueError else."""
    return None if value is None else check_port(value, "relay")


def parse_nat(value: Any) -> str | None:
    """A report's "nat" value: None (absent) or one of NAT_KINDS; ValueError else."""
    if value is not None and value not in NAT_KINDS:
        raise ValueError(f"nat {value!r} is not one of {', '.join(NAT_KINDS)}")
    return value


def send_report(address: str, port: int, candidates: list[str], timeout: float = 3.0,
                relay_port: int | None = None, nat: str | None = None,
                lan_key: str | None = None) -> None:
    """Report `candidates` ("IP:port" strings), and the UDP port of the relay this member
    offers (None: none), to the rendezvous at address:port (TCP). Raises ReportError if
    it cannot be reached or refuses them."""
    where = format_endpoint((address, port))
    message: dict[str, Any] = {"candidates": candidates}
    if relay_port is not None:
        message["relay"] = relay_port
    if nat is not None:                 # our NAT kind, as netcheck found it
        message["nat"] = nat
    if lan_key is not None:             # our LAN key's public half (discovery.lan.lankey)
        message["lk"] = lan_key
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = sock.recv(256)
    except OSError as exc:
        raise ReportError(f"cannot report candidates to {where}: {exc}") from None
    if b'"ok": true' not in reply:
        raise ReportError(f"rendezvous {where} refused the candidate report: {reply!r}")
