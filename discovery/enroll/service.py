"""Enrollment: a joiner holding an invite token becomes a member of the mesh.

Protocol (TCP, one newline-terminated JSON object each way, one exchange per connection):

  request  {"v":1, "invite":HEX, "public_key":B64, "name":STR, "candidates":[HOST:PORT...],
            "nonce":B64(16), "timestamp":INT, "proof":B64}
           proof = HMAC-SHA256(invite secret, canonical(request fields))
  response {"v":1, "status":"ok"|"refused", "reason":CODE, "message":STR,
            "address", "network", "zone", "rendezvous_public_key", "rendezvous_endpoint",
            "mesh_id", "dns_address", "dns_port", "mac":B64}
           mac = HMAC-SHA256(invite secret, canonical(request nonce, response fields))

The invite secret never crosses the network; the joiner's private key never leaves
the joiner. Refusals before the proof is verified (malformed, unknown invite, forged
proof) carry no mac, since the rendezvous cannot or must not use the secret then.

Layering: message building/parsing/verification here is free of I/O;
`RendezvousEnrollment` applies a request to a RendezvousState; `EnrollmentServer` and
`enroll` are the thin TCP transport.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from discovery.stores.rendezvous import (
    REFUSAL_CODES, REFUSAL_FORGED, REFUSAL_MALFORMED, REFUSAL_REPLAYED,
    REFUSAL_UNKNOWN_INVITE, InviteRefusal, Member, RendezvousState, validate_candidates,
    validate_name,
)
from discovery.enroll.tokens import KEY_SIZE, Token, format_endpoint, parse_endpoint

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE = 8192          # bytes, newline included
CLOCK_SKEW = 120.0          # seconds a request timestamp may differ from the rendezvous clock
NONCE_SIZE = 16
_REQUEST_LABEL = b"meshwg enroll request v1"
_RESPONSE_LABEL = b"meshwg enroll response v1"


class EnrollmentError(Exception):
    """Enrollment failed for a reason other than a refusal (network, bad response)."""


class EnrollmentRefused(EnrollmentError):
    """The rendezvous refused; ``reason`` is a code, ``message`` its explanation.

    ``authenticated`` is False when the refusal came before the rendezvous verified the
    proof (so it could not be signed with the invite secret).
    """

    def __init__(self, reason: str, message: str, authenticated: bool, where: str = ""):
        self.reason = reason
        self.message = message
        self.authenticated = authenticated
        at = f" at {where}" if where else ""
        super().__init__(f"enrollment refused by the rendezvous{at}: {message}")


class MalformedMessage(ValueError):
    """A message that does not follow the protocol."""


# ---------------------------------------------------------------- canonical encoding


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _canonical(label: bytes, *fields: bytes | str | int | list[str]) -> bytes:
    """Unambiguous byte string: label, then each field length-prefixed (lists counted)."""
    out = [_lp(label)]
    for f in fields:
        if isinstance(f, bytes):
            out.append(b"b" + _lp(f))
        elif isinstance(f, str):
            out.append(b"s" + _lp(f.encode("utf-8")))
        elif isinstance(f, int):
            out.append(b"i" + struct.pack(">q", f))
        else:
            out.append(b"l" + struct.pack(">I", len(f)))
            out.extend(b"s" + _lp(x.encode("utf-8")) for x in f)
    return b"".join(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(f"{what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise MalformedMessage(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _load_json_line(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_MESSAGE:
        raise MalformedMessage(f"message larger than {MAX_MESSAGE} bytes")
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not a JSON message ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedMessage("message is not a JSON object")
    if doc.get("v") != PROTOCOL_VERSION:
        raise MalformedMessage(f"protocol version {doc.get('v')!r} is not supported "
                               f"(expected {PROTOCOL_VERSION})")
    return doc


def _dump_json_line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"


# ---------------------------------------------------------------- request


@dataclass(frozen=True)
class EnrollmentRequest:
    invite_id: str
    public_key: bytes
    name: str
    host_candidates: tuple[str, ...]
    nonce: bytes
    timestamp: int
    proof: bytes

    def signed_bytes(self) -> bytes:
        return request_signed_bytes(self.invite_id, self.public_key, self.name,
                                    self.host_candidates, self.nonce, self.timestamp)

    def to_wire(self) -> bytes:
        return _dump_json_line({
            "v": PROTOCOL_VERSION, "invite": self.invite_id, "public_key": _b64(self.public_key),
            "name": self.name, "candidates": list(self.host_candidates),
            "nonce": _b64(self.nonce), "timestamp": self.timestamp, "proof": _b64(self.proof),
        })

    @classmethod
    def from_wire(cls, line: bytes) -> "EnrollmentRequest":
        """Parse and validate the shape of a request (not its proof)."""
        doc = _load_json_line(line)
        invite_id = doc.get("invite")
        if not isinstance(invite_id, str) or len(invite_id) != 32 or not _is_hex(invite_id):
            raise MalformedMessage("invite id must be 32 hex digits")
        name = doc.get("name")
        try:
            validate_name(name)
            candidates = tuple(validate_candidates(doc.get("candidates")))
        except ValueError as exc:
            raise MalformedMessage(str(exc)) from None
        timestamp = doc.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp < 2**62:
            raise MalformedMessage("timestamp must be a non-negative integer (unix seconds)")
        return cls(invite_id=invite_id,
                   public_key=_unb64(doc.get("public_key"), "public_key", KEY_SIZE),
                   name=name, host_candidates=candidates,
                   nonce=_unb64(doc.get("nonce"), "nonce", NONCE_SIZE),
                   timestamp=timestamp,
                   proof=_unb64(doc.get("proof"), "proof", hashlib.sha256().digest_size))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def request_signed_bytes(invite_id: str, public_key: bytes, name: str,
                         host_candidates: tuple[str, ...] | list[str], nonce: bytes,
                         timestamp: int) -> bytes:
    """The canonical encoding the proof covers."""
    return _canonical(_REQUEST_LABEL, invite_id, public_key, name, list(host_candidates),
                      nonce, timestamp)


def make_request(token: Token, public_key: bytes, name: str, host_candidates: list[str],
                 now: float, nonce: bytes | None = None) -> EnrollmentRequest:
    """Build a signed request (ValueError for an invalid name, key or candidate)."""
    validate_name(name)
    candidates = tuple(validate_candidates(host_candidates))
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise ValueError("the joiner's public key must be 32 bytes")
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    timestamp = int(now)
    signed = request_signed_bytes(token.invite_id, public_key, name, candidates, nonce, timestamp)
    return EnrollmentRequest(token.invite_id, public_key, name, candidates, nonce, timestamp,
                             hmac.new(token.secret, signed, hashlib.sha256).digest())


def verify_request(request: EnrollmentRequest, secret: bytes, now: float) -> InviteRefusal | None:
    """Check the proof, then the timestamp window; return the refusal or None."""
    expected = hmac.new(secret, request.signed_bytes(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, request.proof):
        return InviteRefusal(REFUSAL_FORGED, "the request's proof does not match the invite "
                                             "(wrong secret: damaged or forged token)")
    skew = request.timestamp - now
    if abs(skew) > CLOCK_SKEW:
        return InviteRefusal(REFUSAL_REPLAYED,
                             f"the request timestamp is {abs(skew):.0f} s "
                             f"{'ahead of' if skew > 0 else 'behind'} the rendezvous clock "
                             f"(limit {CLOCK_SKEW:.0f} s): replayed request or wrong clock")
    return None


# ---------------------------------------------------------------- response


@dataclass(frozen=True)
class EnrollmentResult:
    """What an accepted joiner learns, authenticated with the invite secret."""

    address: str
    network: str
    zone: str
    rendezvous_public_key: bytes
    rendezvous_endpoint: str
    mesh_id: str
    dns_address: str
    dns_port: int


_RESULT_FIELDS = ("address", "network", "zone", "rendezvous_public_key",
                  "rendezvous_endpoint", "mesh_id", "dns_address", "dns_port")


def response_signed_bytes(nonce: bytes, status: str, reason: str, message: str,
                          result: EnrollmentResult | None) -> bytes:
    """The canonical encoding the response mac covers (request nonce first)."""
    values: list[bytes | str | int] = []
    if result is not None:
        values = [getattr(result, f) for f in _RESULT_FIELDS]
    return _canonical(_RESPONSE_LABEL, nonce, status, reason, message, *values)


def encode_response(nonce: bytes, secret: bytes | None, refusal: InviteRefusal | None,
                    result: EnrollmentResult | None) -> bytes:
    """Serialize a response; mac it when `secret` is given."""
    status = "ok" if refusal is None else "refused"
    reason = "" if refusal is None else refusal.code
    message = "" if refusal is None else refusal.message
    doc: dict[str, Any] = {"v": PROTOCOL_VERSION, "status": status, "reason": reason,
                           "message": message}
    if result is not None:
        for f in _RESULT_FIELDS:
            value = getattr(result, f)
            doc[f] = _b64(value) if isinstance(value, bytes) else value
    if secret is not None:
        signed = response_signed_bytes(nonce, status, reason, message, result)
        doc["mac"] = _b64(hmac.new(secret, signed, hashlib.sha256).digest())
    return _dump_json_line(doc)


def parse_response(line: bytes, request: EnrollmentRequest, token: Token,
                   where: str = "") -> EnrollmentResult:
    """Verify a response to `request`; return the result or raise EnrollmentRefused/Error."""
    at = f" from {where}" if where else ""
    try:
        doc = _load_json_line(line)
        status, reason, message = doc.get("status"), doc.get("reason"), doc.get("message")
        if status not in ("ok", "refused") or not isinstance(reason, str) \
                or not isinstance(message, str):
            raise MalformedMessage("status/reason/message missing or of the wrong type")
        mac = _unb64(doc["mac"], "mac", 32) if "mac" in doc else None
        result = _result_from_doc(doc) if status == "ok" else None
    except MalformedMessage as exc:
        raise EnrollmentError(f"invalid response{at}: {exc}") from None
    if mac is not None:
        signed = response_signed_bytes(request.nonce, status, reason, message, result)
        expected = hmac.new(token.secret, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise EnrollmentError(f"the response{at} failed authentication "
                                  f"(tampered in transit, or not the rendezvous)")
    if status == "refused":
        if reason not in REFUSAL_CODES:
            reason = "other"
        raise EnrollmentRefused(reason, message[:300] or reason, mac is not None, where)
    if mac is None:
        raise EnrollmentError(f"the response{at} is not authenticated (no mac)")
    assert result is not None
    if result.rendezvous_public_key != token.rendezvous_public_key:
        raise EnrollmentError(f"the response{at} names a rendezvous public key different "
                              f"from the token's")
    if result.mesh_id != token.mesh_id:
        raise EnrollmentError(f"the response{at} names mesh id {result.mesh_id}, "
                              f"the token {token.mesh_id}")
    return result


def _result_from_doc(doc: dict[str, Any]) -> EnrollmentResult:
    values: dict[str, Any] = {}
    for f in _RESULT_FIELDS:
        if f not in doc:
            raise MalformedMessage(f"response lacks {f!r}")
        values[f] = doc[f]
    values["rendezvous_public_key"] = _unb64(values["rendezvous_public_key"],
                                             "rendezvous_public_key", KEY_SIZE)
    for f in ("address", "network", "zone", "rendezvous_endpoint", "mesh_id", "dns_address"):
        if not isinstance(values[f], str):
            raise MalformedMessage(f"{f} must be a string")
    port = values["dns_port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise MalformedMessage("dns_port must be an integer in 1..65535")
    try:
        net = ipaddress.ip_network(values["network"])
        if ipaddress.ip_address(values["address"]) not in net:
            raise MalformedMessage(f"address {values['address']} is outside {net}")
        ipaddress.ip_address(values["dns_address"])
        parse_endpoint(values["rendezvous_endpoint"])
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from None
    return EnrollmentResult(**values)


# ---------------------------------------------------------------- rendezvous side (no sockets)


class RendezvousEnrollment:
    """Applies enrollment requests to a RendezvousState. Thread-safe."""

    def __init__(self, state: RendezvousState):
        self.state = state
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    def count(self, outcome: str) -> None:
        with self._stats_lock:
            self.stats[outcome] += 1

    def handle(self, line: bytes, now: float) -> tuple[bytes, Member | None]:
        """Answer one request line at time `now`: (response line, new member or None)."""
        try:
            request = EnrollmentRequest.from_wire(line)
        except MalformedMessage as exc:
            self.count(REFUSAL_MALFORMED)
            return encode_response(b"", None, InviteRefusal(
                REFUSAL_MALFORMED, f"malformed enrollment request: {exc}"), None), None
        invite = self.state.invite(request.invite_id)
        if invite is None:
            self.count(REFUSAL_UNKNOWN_INVITE)
            return encode_response(request.nonce, None, InviteRefusal(
                REFUSAL_UNKNOWN_INVITE, "the rendezvous does not know this invite "
                                        "(revoked, or a token for another mesh)"), None), None
        refusal = verify_request(request, invite.secret, now)
        if refusal is not None and refusal.code == REFUSAL_FORGED:
            self.count(refusal.code)
            return encode_response(request.nonce, None, refusal, None), None
        if refusal is None:
            try:
                member = self.state.redeem_invite(request.invite_id, request.nonce, request.name,
                                                  request.public_key,
                                                  list(request.host_candidates), now)
            except InviteRefusal as exc:
                refusal = exc
        if refusal is not None:
            self.count(refusal.code)
            return encode_response(request.nonce, invite.secret, refusal, None), None
        self.count("enrolled")
        st = self.state
        result = EnrollmentResult(
            address=member.mesh_address, network=st.network, zone=st.zone,
            rendezvous_public_key=st.public_key, rendezvous_endpoint=st.endpoint,
            mesh_id=st.mesh_id, dns_address=st.address, dns_port=st.dns_port)
        return encode_response(request.nonce, invite.secret, None, result), member


# ---------------------------------------------------------------- TCP transport


def _read_line(sock: socket.socket, limit: int, deadline: float) -> bytes | None:
    """Read up to and including b"\\n"; None on EOF, timeout or more than `limit` bytes."""
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(4096, limit + 1 - len(buf)))
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        buf += chunk
        end = buf.find(b"\n")
        if end >= 0:
            return bytes(buf[:end + 1])
        if len(buf) > limit:
            return None


class EnrollmentServer:
    """Threaded TCP enrollment service (default port: the rendezvous's WireGuard port)."""

    def __init__(self, state: RendezvousState, address: str = "0.0.0.0", port: int | None = None,
                 on_member_added: Callable[[Member], None] | None = None, *,
                 clock: Callable[[], float] = time.time, timeout: float = 5.0,
                 max_connections: int = 32):
        self.core = RendezvousEnrollment(state)
        self.address = address
        self._requested_port = state.enroll_port if port is None else port
        self.on_member_added = on_member_added
        self.clock = clock
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()

    @property
    def stats(self) -> Counter[str]:
        """Counts per outcome: enrolled, each refusal code, dropped_* for unanswered input."""
        return self.core.stats

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("enrollment server is not started")
        return self._listener.getsockname()[1]

    def start(self) -> "EnrollmentServer":
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
            sock.bind((self.address, self._requested_port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise EnrollmentError(f"cannot listen for enrollments on tcp "
                                  f"{format_endpoint(self.address, self._requested_port)}: "
                                  f"{exc.strerror}") from None
        sock.setblocking(False)
        self._listener = sock
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name="enroll-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wait for in-flight requests (bounded by the timeout)."""
        if self._thread is None:
            return
        assert self._wake_w is not None
        self._wake_w.send(b"x")
        self._thread.join()
        with self._workers_lock:
            workers = list(self._workers)
        for w in workers:
            w.join(self.timeout + 1.0)
        for s in (self._listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._thread = None

    def __enter__(self) -> "EnrollmentServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        conn, peer = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        log.warning("enrollment accept failed: %s", exc)
                        continue
                    if not self._slots.acquire(blocking=False):
                        self.core.count("dropped_busy")
                        conn.close()
                        continue
                    t = threading.Thread(target=self._serve, args=(conn, peer),
                                         name="enroll-conn", daemon=True)
                    with self._workers_lock:
                        self._workers.add(t)
                    t.start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        try:
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                line = _read_line(conn, MAX_MESSAGE, time.monotonic() + self.timeout)
                if line is None:
                    self.core.count("dropped_unreadable")
                    return
                response, member = self.core.handle(line, self.clock())
                if member is not None:
                    log.info("enrolled %s (%s) from %s", member.name, member.mesh_address, peer[0])
                    if self.on_member_added is not None:
                        try:
                            self.on_member_added(member)
                        except Exception:
                            log.exception("on_member_added failed for %s", member.name)
                conn.settimeout(self.timeout)
                try:
                    conn.sendall(response)
                except OSError:
                    self.core.count("dropped_send_failed")
        finally:
            self._slots.release()
            with self._workers_lock:
                self._workers.discard(threading.current_thread())


def enroll(token: Token, public_key: bytes, name: str, host_candidates: list[str],
           timeout: float = 5.0, *, address: tuple[str, int] | None = None,
           clock: Callable[[], float] = time.time) -> EnrollmentResult:
    """Ask the rendezvous named in `token` to admit `public_key` as `name`.

    `address` overrides (host, port) of the enrollment service (default: the token's
    endpoint host and enroll port). Raises ValueError for bad arguments,
    EnrollmentRefused with the rendezvous's reason, EnrollmentError for network or
    response problems.
    """
    request = make_request(token, public_key, name, host_candidates, clock())
    host, port = address or token.enroll_address
    where = f"tcp {format_endpoint(host, port)}"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request.to_wire())
            line = _read_line(sock, MAX_MESSAGE, deadline)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EnrollmentError(f"cannot reach the rendezvous enrollment service at {where}: "
                              f"{reason}") from None
    if line is None:
        raise EnrollmentError(f"no complete response from the rendezvous at {where} "
                              f"within {timeout:g} s")
    return parse_response(line, request, token, where)
