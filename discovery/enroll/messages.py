"""Enrollment messages: the request a joiner sends and the response the rendezvous
returns, their wire form and their signatures. No I/O.

Wire form (one newline-terminated JSON object each way, one exchange per connection;
at most MAX_MESSAGE bytes):

  request  {"v":1, "invite":HEX, "public_key":B64, "name":STR, "candidates":[HOST:PORT...],
            "nonce":B64(16), "timestamp":INT, "proof":B64}
           proof = HMAC-SHA256(invite secret, canonical(request fields))
  response {"v":1, "status":"ok"|"refused", "reason":CODE, "message":STR,
            "address", "network", "zone", "rendezvous_public_key", "rendezvous_endpoint",
            "mesh_id", "dns_address", "dns_port", "mac":B64}
           mac = HMAC-SHA256(invite secret, canonical(request nonce, response fields))
           optional: "rendezvous":[{"public_key":B64, "endpoint":HOST:PORT, "enroll_port":INT,
            "mesh_address":IP, "pin":HEX, "relay_tcp_port":INT}...] (every rendezvous of the
            mesh, at most MAX_RENDEZVOUS) with "rendezvous_mac" = HMAC-SHA256(invite secret,
            canonical(request nonce, the list)); a member that predates it ignores both

The invite secret never crosses the network; the joiner's private key never leaves
the joiner. Refusals before the proof is verified (malformed, unknown invite, forged
proof) carry no mac, since the rendezvous cannot or must not use the secret then.
Refusal codes: discovery.stores.invites.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import struct
from dataclasses import dataclass, replace
from typing import Any

from meshwg.core.keys import KEY_SIZE, KeyFormatError, decode_key, encode_key
from meshwg.util.endpoint import parse_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.jsonbound import JSONLimitError, loads_bounded

from discovery.enroll.tokens import MAX_OTHERS, PIN_SIZE, RendezvousRef, Token
from discovery.stores.invites import REFUSAL_CODES, REFUSAL_FORGED, REFUSAL_REPLAYED, InviteRefusal
from discovery.stores.validate import check_strong_key, validate_candidates, validate_name

PROTOCOL_VERSION = 1
MAX_MESSAGE = 8192          # bytes, newline included
CLOCK_SKEW = 120.0          # seconds a request timestamp may differ from the rendezvous clock
NONCE_SIZE = 16
MAC_SIZE = hashlib.sha256().digest_size
_REQUEST_LABEL = b"meshwg enroll request v1"
_RESPONSE_LABEL = b"meshwg enroll response v1"
_RENDEZVOUS_LABEL = b"meshwg enroll rendezvous v1"
MAX_RENDEZVOUS = MAX_OTHERS + 1     # rendezvous a response may list


class EnrollmentError(MeshwgError):
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


class MalformedMessage(MeshwgError, ValueError):
    """A message that does not follow the protocol; the message says which field."""


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
    """Base64 of a nonce, proof or mac (keys use meshwg.core.keys.encode_key)."""
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str, size: int) -> bytes:
    """`size` bytes from the base64 text of field `what`; MalformedMessage otherwise."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise MalformedMessage(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _key(value: Any, what: str) -> bytes:
    """A 32-byte key from the base64 text of field `what`; MalformedMessage otherwise
    (the message does not echo the hostile value)."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a base64 string")
    try:
        return decode_key(value, what)
    except KeyFormatError:
        raise MalformedMessage(f"{what} is not the base64 text of a {KEY_SIZE}-byte key") from None


def _mac(secret: bytes, signed: bytes) -> bytes:
    """HMAC-SHA256 of canonical bytes with the invite secret (proofs and response macs)."""
    return hmac.new(secret, signed, hashlib.sha256).digest()


def _load_json_line(line: bytes) -> dict[str, Any]:
    try:
        doc = loads_bounded(line, MAX_MESSAGE)
    except JSONLimitError as exc:
        raise MalformedMessage(f"not an acceptable JSON message: {exc}") from None
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
    """A joiner's signed request: invite id (32 hex digits), its public key (32 bytes),
    member name, host candidates ("HOST:PORT"), a 16-byte nonce, unix seconds and the
    HMAC-SHA256 proof over all of them with the invite secret."""

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
            "v": PROTOCOL_VERSION, "invite": self.invite_id, "public_key": encode_key(self.public_key),
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
        public_key = _key(doc.get("public_key"), "public_key")
        try:
            check_strong_key(public_key)
        except ValueError as exc:
            raise MalformedMessage(f"public_key: {exc}") from None
        return cls(invite_id=invite_id, public_key=public_key,
                   name=name, host_candidates=candidates,
                   nonce=_unb64(doc.get("nonce"), "nonce", NONCE_SIZE),
                   timestamp=timestamp,
                   proof=_unb64(doc.get("proof"), "proof", MAC_SIZE))


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
                             _mac(token.secret, signed))


def verify_request(request: EnrollmentRequest, secret: bytes, now: float) -> InviteRefusal | None:
    """Check the proof, then the timestamp window; return the refusal or None."""
    if not hmac.compare_digest(_mac(secret, request.signed_bytes()), request.proof):
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
    rendezvous: tuple[RendezvousRef, ...] = ()   # every rendezvous of the mesh (optional)


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
            doc[f] = encode_key(value) if isinstance(value, bytes) else value
    if secret is not None:
        signed = response_signed_bytes(nonce, status, reason, message, result)
        doc["mac"] = _b64(_mac(secret, signed))
        if result is not None and result.rendezvous:
            listed = [_ref_doc(ref) for ref in result.rendezvous[:MAX_RENDEZVOUS]]
            doc["rendezvous"] = listed
            doc["rendezvous_mac"] = _b64(_mac(secret, _rendezvous_signed(nonce, listed)))
    return _dump_json_line(doc)


def _ref_doc(ref: RendezvousRef) -> dict[str, Any]:
    return {"public_key": encode_key(ref.public_key), "endpoint": ref.endpoint,
            "enroll_port": ref.enroll_port, "mesh_address": ref.mesh_address,
            "pin": ref.pin.hex(), "relay_tcp_port": ref.relay_tcp_port}


def _rendezvous_signed(nonce: bytes, listed: list[dict[str, Any]]) -> bytes:
    return _canonical(_RENDEZVOUS_LABEL, nonce, json.dumps(listed, separators=(",", ":"),
                                                           sort_keys=True))


def _ref_from_doc(doc: Any) -> RendezvousRef:
    """One listed rendezvous; MalformedMessage naming the field otherwise."""
    if not isinstance(doc, dict):
        raise MalformedMessage("a listed rendezvous is not an object")
    key = _key(doc.get("public_key"), "rendezvous public_key")
    endpoint, enroll_port, address = doc.get("endpoint"), doc.get("enroll_port"), doc.get("mesh_address")
    pin, relay_port = doc.get("pin", ""), doc.get("relay_tcp_port", 0)
    if not isinstance(endpoint, str) or not isinstance(address, str) or not isinstance(pin, str):
        raise MalformedMessage("a listed rendezvous's endpoint, mesh_address and pin are strings")
    for value, low in ((enroll_port, 1), (relay_port, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
            raise MalformedMessage("a listed rendezvous's port is out of range")
    try:
        parse_endpoint(endpoint)
        if address:
            address = str(ipaddress.ip_address(address))
        pin_bytes = bytes.fromhex(pin)
    except ValueError as exc:
        raise MalformedMessage(f"a listed rendezvous: {exc}") from None
    if len(pin_bytes) not in (0, PIN_SIZE):
        raise MalformedMessage("a listed rendezvous's pin is not 32 bytes")
    return RendezvousRef(key, endpoint, enroll_port, address, pin_bytes, relay_port)


def _listed_rendezvous(doc: dict[str, Any], nonce: bytes, secret: bytes) -> tuple[RendezvousRef, ...]:
    """The response's optional list of rendezvous, when its own mac verifies (else none)."""
    listed = doc.get("rendezvous")
    if listed is None:
        return ()
    if not isinstance(listed, list) or len(listed) > MAX_RENDEZVOUS:
        raise MalformedMessage(f"rendezvous must be a list of at most {MAX_RENDEZVOUS}")
    mac = _unb64(doc.get("rendezvous_mac"), "rendezvous_mac", MAC_SIZE)
    if not hmac.compare_digest(_mac(secret, _rendezvous_signed(nonce, listed)), mac):
        raise MalformedMessage("the list of rendezvous failed authentication")
    return tuple(_ref_from_doc(item) for item in listed)


def parse_response(line: bytes, request: EnrollmentRequest, token: Token,
                   where: str = "", rendezvous_key: bytes | None = None) -> EnrollmentResult:
    """Verify a response to `request` from the rendezvous with `rendezvous_key` (default:
    the token's first); return the result or raise EnrollmentRefused/Error."""
    at = f" from {where}" if where else ""
    try:
        doc = _load_json_line(line)
        status, reason, message = doc.get("status"), doc.get("reason"), doc.get("message")
        if status not in ("ok", "refused") or not isinstance(reason, str) \
                or not isinstance(message, str):
            raise MalformedMessage("status/reason/message missing or of the wrong type")
        mac = _unb64(doc["mac"], "mac", MAC_SIZE) if "mac" in doc else None
        result = _result_from_doc(doc) if status == "ok" else None
    except MalformedMessage as exc:
        raise EnrollmentError(f"invalid response{at}: {exc}") from None
    if mac is not None:
        signed = response_signed_bytes(request.nonce, status, reason, message, result)
        if not hmac.compare_digest(_mac(token.secret, signed), mac):
            raise EnrollmentError(f"the response{at} failed authentication "
                                  f"(tampered in transit, or not the rendezvous)")
    if status == "refused":
        if reason not in REFUSAL_CODES:
            reason = "other"
        raise EnrollmentRefused(reason, message[:300] or reason, mac is not None, where)
    if mac is None:
        raise EnrollmentError(f"the response{at} is not authenticated (no mac)")
    assert result is not None
    if result.rendezvous_public_key != (rendezvous_key or token.rendezvous_public_key):
        raise EnrollmentError(f"the response{at} names a rendezvous public key different "
                              f"from the token's")
    try:
        listed = _listed_rendezvous(doc, request.nonce, token.secret)
    except MalformedMessage as exc:
        raise EnrollmentError(f"invalid response{at}: {exc}") from None
    if listed:
        result = replace(result, rendezvous=listed)
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
    values["rendezvous_public_key"] = _key(values["rendezvous_public_key"],
                                           "rendezvous_public_key")
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
