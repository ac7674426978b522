"""Invite tokens: one copy-pasteable string that lets a machine join a mesh.

Layout: ``mwg1.`` + unpadded base64url of a packed binary record::

    version u8 (=1)
    rendezvous WireGuard public key   32 bytes
    mesh id                           16 bytes
    invite id                         16 bytes
    invite secret                     32 bytes
    expiry, unix seconds, 0 = never   u64
    enrollment TCP port               u16
    endpoint length                   u8, then the endpoint "HOST:PORT" in UTF-8
    (version 2 only) relay TCP port   u16, then the pin of the relay's TLS certificate,
                                      32 bytes (discovery.relay.tls.spki_pin)
    (version 3 only) relay TCP port   u16 and pin, 32 bytes (port 0 and zeros: none), then
                                      the other rendezvous of the mesh: count u8 (at most
                                      MAX_OTHERS), each as
        public key 32 bytes, enrollment TCP port u16, relay TCP port u16, pin length u8
        (0 or 32) + pin, mesh address length u8 (4 or 16) + packed address,
        endpoint length u8 + "HOST:PORT" in UTF-8
    checksum                          first 4 bytes of SHA-256 of everything above

A token without other rendezvous is written as version 2 (with a relay pin) or 1, as
before; all three versions decode.

The checksum only catches copy-paste damage; authenticity comes from the invite
secret, which the rendezvous checks (see discovery.enroll.messages).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from meshwg.core.keys import KEY_SIZE
from meshwg.util.endpoint import EndpointError, parse_endpoint
from meshwg.util.errors import MeshwgError

TOKEN_PREFIX = "mwg1."
TOKEN_VERSION = 1
TOKEN_VERSION_RELAY = 2         # with the relay's TCP port and TLS pin
TOKEN_VERSION_OTHERS = 3        # and the other rendezvous of the mesh
MAX_OTHERS = 8                  # other rendezvous a token may name
PIN_SIZE = 32
_RELAY = struct.Struct(f">H{PIN_SIZE}s")
SECRET_SIZE = 32
ID_SIZE = 16
_HEADER = struct.Struct(f">B{KEY_SIZE}s{ID_SIZE}s{ID_SIZE}s{SECRET_SIZE}sQHB")
_CHECKSUM_SIZE = 4
_MAX_ENDPOINT = 255


_OTHER = struct.Struct(f">{KEY_SIZE}sHH")


class TokenError(MeshwgError, ValueError):
    """A token string could not be decoded; the message is one line for the user."""


@dataclass(frozen=True)
class RendezvousRef:
    """One rendezvous of a mesh, as a token or an enrollment response names it."""

    public_key: bytes             # its WireGuard public key, 32 bytes
    endpoint: str                 # its public "HOST:PORT" (WireGuard UDP)
    enroll_port: int              # TCP port of its enrollment service (on the endpoint's host)
    mesh_address: str = ""        # its address inside the mesh ("": not known yet)
    pin: bytes = b""              # SHA-256 of its TLS certificate's public key, or none
    relay_tcp_port: int = 0       # its relay over TLS on TCP (0: none known)

    @property
    def enroll_address(self) -> tuple[str, int]:
        return parse_endpoint(self.endpoint)[0], self.enroll_port


@dataclass(frozen=True)
class Token:
    """What a joiner needs to find the rendezvous and prove it was invited."""

    endpoint: str                 # rendezvous public "HOST:PORT" (WireGuard UDP)
    rendezvous_public_key: bytes  # 32 bytes
    invite_id: str                # 32 hex digits
    secret: bytes                 # 32 random bytes; never sent over the network
    expires_at: int | None        # unix seconds, None = never
    mesh_id: str                  # 32 hex digits
    enroll_port: int              # TCP port of the enrollment service
    relay_tcp_port: int = 0       # the relay over TLS on TCP (0: none known)
    relay_pin: bytes = b""        # SHA-256 of its certificate's public key (32 bytes, or none)
    others: tuple[RendezvousRef, ...] = ()   # the mesh's other rendezvous (format 3)

    @property
    def rendezvous(self) -> tuple[RendezvousRef, ...]:
        """Every rendezvous the token names, the first one first."""
        first = RendezvousRef(self.rendezvous_public_key, self.endpoint, self.enroll_port,
                              pin=self.relay_pin, relay_tcp_port=self.relay_tcp_port)
        return (first,) + tuple(self.others)

    @property
    def enroll_address(self) -> tuple[str, int]:
        """(host, port) of the enrollment service: the endpoint's host, the enroll port."""
        return parse_endpoint(self.endpoint)[0], self.enroll_port

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (f"Token(endpoint={self.endpoint!r}, invite_id={self.invite_id!r}, "
                f"mesh_id={self.mesh_id!r}, expires_at={self.expires_at!r}, "
                f"enroll_port={self.enroll_port!r}, others={len(self.others)})")


def _pack_endpoint(endpoint: str) -> bytes:
    raw = endpoint.encode("utf-8")
    parse_endpoint(endpoint)
    if len(raw) > _MAX_ENDPOINT:
        raise ValueError(f"endpoint {endpoint!r} is longer than {_MAX_ENDPOINT} bytes")
    return bytes([len(raw)]) + raw


def _pack_other(ref: RendezvousRef) -> bytes:
    if len(ref.public_key) != KEY_SIZE:
        raise ValueError("a rendezvous public key is 32 bytes")
    if not 1 <= ref.enroll_port <= 65535 or not 0 <= ref.relay_tcp_port <= 65535:
        raise ValueError(f"rendezvous {ref.endpoint!r}: port out of range")
    if len(ref.pin) not in (0, PIN_SIZE):
        raise ValueError("a rendezvous pin is 32 bytes")
    address = ipaddress.ip_address(ref.mesh_address).packed if ref.mesh_address else b""
    return (_OTHER.pack(ref.public_key, ref.enroll_port, ref.relay_tcp_port)
            + bytes([len(ref.pin)]) + ref.pin + bytes([len(address)]) + address
            + _pack_endpoint(ref.endpoint))


class _Reader:
    """Bounded reads from the token's tail; running short is copy-paste damage."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise TokenError("invite token is damaged: its list of rendezvous is cut short")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]


def _unpack_other(reader: _Reader) -> RendezvousRef:
    key, enroll_port, relay_port = _OTHER.unpack(reader.take(_OTHER.size))
    pin = reader.take(reader.byte())
    address = reader.take(reader.byte())
    endpoint_raw = reader.take(reader.byte())
    if len(pin) not in (0, PIN_SIZE) or len(address) not in (0, 4, 16) or enroll_port == 0:
        raise TokenError("invite token names a rendezvous with a bad pin, address or port")
    try:
        endpoint = endpoint_raw.decode("utf-8")
        parse_endpoint(endpoint)
    except (UnicodeDecodeError, EndpointError) as exc:
        raise TokenError(f"invite token names a rendezvous with an invalid endpoint: {exc}") from None
    return RendezvousRef(key, endpoint, enroll_port,
                         str(ipaddress.ip_address(address)) if address else "", pin, relay_port)


def encode_token(token: Token) -> str:
    """Pack a Token into its "mwg1.…" string. Raises ValueError (EndpointError for a bad
    endpoint) when a field does not fit the layout."""
    endpoint = token.endpoint.encode("utf-8")
    parse_endpoint(token.endpoint)
    if len(endpoint) > _MAX_ENDPOINT:
        raise ValueError(f"endpoint {token.endpoint!r} is longer than {_MAX_ENDPOINT} bytes")
    if len(token.rendezvous_public_key) != KEY_SIZE or len(token.secret) != SECRET_SIZE:
        raise ValueError("rendezvous public key and invite secret must be 32 bytes each")
    relay = b""
    if token.relay_pin:
        if len(token.relay_pin) != PIN_SIZE or not 1 <= token.relay_tcp_port <= 65535:
            raise ValueError("a relay pin is 32 bytes and needs a relay TCP port in 1..65535")
        relay = _RELAY.pack(token.relay_tcp_port, token.relay_pin)
    version = TOKEN_VERSION_RELAY if relay else TOKEN_VERSION
    if token.others:
        if len(token.others) > MAX_OTHERS:
            raise ValueError(f"a token names at most {MAX_OTHERS} other rendezvous")
        version = TOKEN_VERSION_OTHERS
        relay = (relay or _RELAY.pack(0, bytes(PIN_SIZE))) + bytes([len(token.others)]) + b"".join(
            _pack_other(ref) for ref in token.others)
    body = _HEADER.pack(
        version,
        token.rendezvous_public_key,
        bytes.fromhex(token.mesh_id),
        bytes.fromhex(token.invite_id),
        token.secret,
        token.expires_at or 0,
        token.enroll_port,
        len(endpoint),
    ) + endpoint + relay
    packed = body + hashlib.sha256(body).digest()[:_CHECKSUM_SIZE]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def decode_token(text: str) -> Token:
    """Parse a token string; raise TokenError with a one-line reason when it is not valid."""
    if not isinstance(text, str):
        raise TokenError("invite token must be text")
    text = "".join(text.split())  # tolerate line breaks from copy-paste
    if not text.startswith(TOKEN_PREFIX):
        if text.startswith("mwg") and "." in text:
            raise TokenError(f"invite token version {text.split('.', 1)[0]!r} is not supported "
                             f"(expected {TOKEN_PREFIX!r})")
        raise TokenError(f"not a meshwg invite token (it should start with {TOKEN_PREFIX!r})")
    payload = text[len(TOKEN_PREFIX):]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("invite token is damaged: it contains characters outside base64url") from None
    if len(raw) < _HEADER.size + _CHECKSUM_SIZE:
        raise TokenError(f"invite token is truncated ({len(raw)} bytes decoded, "
                         f"at least {_HEADER.size + _CHECKSUM_SIZE} expected): copy it again")
    body, checksum = raw[:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
    if hashlib.sha256(body).digest()[:_CHECKSUM_SIZE] != checksum:
        raise TokenError("invite token is damaged (checksum mismatch): copy it again")
    (version, key, mesh_id, invite_id, secret, expires, port,
     endpoint_len) = _HEADER.unpack_from(body)
    if version not in (TOKEN_VERSION, TOKEN_VERSION_RELAY, TOKEN_VERSION_OTHERS):
        raise TokenError(f"invite token format {version} is not supported (expected "
                         f"{TOKEN_VERSION} to {TOKEN_VERSION_OTHERS}: a newer meshwg wrote it)")
    endpoint_raw = body[_HEADER.size:_HEADER.size + endpoint_len]
    extra = body[_HEADER.size + endpoint_len:]
    relay_port, relay_pin, others = 0, b"", []
    if version == TOKEN_VERSION_OTHERS and len(endpoint_raw) == endpoint_len:
        reader = _Reader(extra)
        relay_port, relay_pin = _RELAY.unpack(reader.take(_RELAY.size))
        if relay_port == 0 and relay_pin == bytes(PIN_SIZE):
            relay_pin = b""
        elif relay_port == 0:
            raise TokenError("invite token carries relay TCP port 0")
        count = reader.byte()
        if count > MAX_OTHERS:
            raise TokenError(f"invite token names {count} other rendezvous, at most {MAX_OTHERS} allowed")
        others = [_unpack_other(reader) for _ in range(count)]
        if reader.at != len(extra):
            raise TokenError("invite token is damaged: bytes after its list of rendezvous")
        extra = b""
    elif version == TOKEN_VERSION_RELAY and len(extra) == _RELAY.size:
        relay_port, relay_pin = _RELAY.unpack(extra)
        extra = b""
        if relay_port == 0:
            raise TokenError("invite token carries relay TCP port 0")
    if len(endpoint_raw) != endpoint_len or extra:
        raise TokenError("invite token is damaged: endpoint length does not match")
    try:
        endpoint = endpoint_raw.decode("utf-8")
        parse_endpoint(endpoint)
    except (UnicodeDecodeError, EndpointError) as exc:
        raise TokenError(f"invite token carries an invalid rendezvous endpoint: {exc}") from None
    if port == 0:
        raise TokenError("invite token carries enrollment port 0")
    return Token(endpoint=endpoint, rendezvous_public_key=key, invite_id=invite_id.hex(),
                 secret=secret, expires_at=expires or None, mesh_id=mesh_id.hex(),
                 enroll_port=port, relay_tcp_port=relay_port, relay_pin=relay_pin,
                 others=tuple(others))
