"""LAN announcements provably from the member they name (issue 9 case 3). No I/O but the
key file.

mDNS is unauthenticated: anyone on the LAN can announce a member's WireGuard key with its
own address and relay the handshake, so that a working LAN link moves onto it. So each
member has an Ed25519 *LAN key* (RFC 8032, through ``cryptography``): its private half is
``lan.key`` in the member's state directory (0600, base64 of the 32-byte seed, made at the
first start after joining), its public half goes to the rendezvous in the candidate report
(which the rendezvous takes only through the tunnel, from that member's mesh address) and
is published in the member's directory TXT as ``lk=BASE64``. The directory is members-only
and read through the tunnel from the rendezvous: that is the vouching.

A member's mDNS TXT then carries ``ip=A,B,...`` (the LAN addresses it announces, without
scope, at most MAX_SIGNED_ADDRESSES), ``ts=SECONDS`` (wall clock when signed) and
``sig=BASE64`` (64 bytes), an Ed25519 signature over :func:`signed_payload`: the mesh id,
WireGuard key, port, those addresses and ``ts``. The announcer signs again every
RESIGN_PERIOD seconds.

:class:`LanVerifier` (in the member daemon, where LAN peers meet the directory) accepts a
LAN peer K only when that signature verifies under K's directory-published LAN key, and
uses only the heard A/AAAA addresses that are in the signed set. Everything else is
dropped and counted by reason: ``no_key`` (the directory has no LAN key for K: not yet
read, or published by a rendezvous that predates LAN keys), ``unsigned``,
``bad_signature``, ``stale`` (``ts`` older than MAX_AGE, more than MAX_SKEW ahead of our
clock, or older than one already accepted for K: a replay) and ``unsigned_address`` (a
heard address outside the signed set, ignored; with no signed address heard at all, the
announcement is not used). An unverifiable announcement never
replaces the last one verified for K: that one is kept while the browser still lists K and
it is younger than MAX_AGE, so a stranger announcing in K's name cannot move or break a
working LAN link (it can make K's LAN records disappear from caches, as any mDNS host
can; then the link falls back to the directory's endpoint or a relay).

Without a directory that vouches for K (no rendezvous ever answered since the key was
made, or one that publishes no LAN keys) K gets no LAN candidate at all: K stays reachable
at its directory endpoint or through a relay, never at an address a stranger announced.
Members only ever become peers from the directory; the directory is cached on disk, so
with the rendezvous down the LAN keys it last published keep working.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshwg.core.keys import KEY_SIZE, KeyFormatError, decode_key, encode_key

from discovery.stores.errors import StateError
from discovery.stores.private_dir import save_private_file

LAN_KEY_FILE = "lan.key"
LAN_KEY_TXT = "lk"           # the directory TXT key carrying a member's LAN key
SIGNATURE_SIZE = 64
MAX_SIGNED_ADDRESSES = 8     # addresses one announcement signs (the rest are not announced)
MAX_IP_TXT = 250             # bytes of the ``ip=`` value (one TXT string is 255)
MAX_AGE = 3600.0             # seconds a signature is good for
MAX_SKEW = 300.0             # seconds a signature may be ahead of our clock
RESIGN_PERIOD = 900.0        # seconds between two signatures of an unchanged announcement
MAX_TIMESTAMP = 2**40        # bound on ``ts`` (seconds)
_DOMAIN = b"meshwg lan announcement v1\0"


# ----------------------------------------------------------------------------- the key file

def ensure_lan_key(state_dir: str | os.PathLike) -> Ed25519PrivateKey:
    """This member's LAN key from ``lan.key`` in `state_dir`, made (0600) when missing or
    damaged. StateError naming the file when it cannot be written."""
    path = Path(state_dir) / LAN_KEY_FILE
    try:
        return Ed25519PrivateKey.from_private_bytes(decode_key(path.read_text(), str(path)))
    except (OSError, KeyFormatError, ValueError):
        pass                        # none yet (an older member) or damaged: make one
    key = Ed25519PrivateKey.generate()
    try:
        save_private_file(path, (encode_key(key.private_bytes_raw()) + "\n").encode())
    except OSError as exc:
        raise StateError(f"{path}: cannot save the LAN announcement key: {exc.strerror or exc}") from None
    return key


def public_lan_key(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a LAN key's public half."""
    return key.public_key().public_bytes_raw()


# ----------------------------------------------------------------------------- the directory

def lan_key_txt(public: bytes) -> str:
    """The directory TXT value for a member's LAN key (base64 of 32 bytes)."""
    return encode_key(public)


def parse_lan_key(value: object) -> bytes | None:
    """A report's or TXT's LAN key: None when absent; ValueError when not base64 of 32
    bytes."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("lk is not base64 of 32 bytes")
    try:
        return decode_key(value, "lk")
    except KeyFormatError:
        raise ValueError("lk is not base64 of 32 bytes") from None


def directory_lan_keys(directory: Mapping[bytes, object]) -> dict[bytes, bytes]:
    """WireGuard key -> LAN key for the members whose directory record (a MemberRecord)
    carries a well-formed ``lk``."""
    out = {}
    for key, record in directory.items():
        try:
            lk = parse_lan_key(getattr(record, "extra", {}).get(LAN_KEY_TXT))
        except ValueError:
            continue
        if lk is not None:
            out[key] = lk
    return out


# ----------------------------------------------------------------------------- signing

def bare_address(text: str) -> str:
    """An address without its ``%scope`` (the scope is the hearer's interface)."""
    return text.split("%", 1)[0]


def signable_addresses(addresses: Iterable[str]) -> list[str]:
    """The addresses an announcement signs: unscoped, in order, without repeats, at most
    MAX_SIGNED_ADDRESSES and MAX_IP_TXT bytes as ``a,b,c``."""
    out: list[str] = []
    size = -1
    for text in addresses:
        bare = bare_address(text)
        if bare in out or len(out) >= MAX_SIGNED_ADDRESSES or size + 1 + len(bare) > MAX_IP_TXT:
            continue
        out.append(bare)
        size += 1 + len(bare)
    return out


def signed_payload(mesh_id: str, public_key: bytes, port: int, addresses: Iterable[str],
                   timestamp: int) -> bytes:
    """What a LAN key signs: a domain tag, then mesh id, WireGuard key, port, ``ts`` and
    the addresses, each length-prefixed (no two announcements share a payload)."""
    parts = [mesh_id.encode(), public_key, struct.pack("!HQ", port, timestamp),
             ",".join(addresses).encode()]
    return _DOMAIN + b"".join(struct.pack("!H", len(p)) + p for p in parts)


def signed_txt(key: Ed25519PrivateKey, mesh_id: str, public_key: bytes, port: int,
               addresses: list[str], timestamp: int) -> dict[str, str]:
    """TXT properties ``ip``, ``ts``, ``sig`` for an announcement of `addresses` (already
    :func:`signable_addresses`)."""
    signature = key.sign(signed_payload(mesh_id, public_key, port, addresses, timestamp))
    return {"ip": ",".join(addresses), "ts": str(timestamp),
            "sig": base64.b64encode(signature).decode()}


@dataclass(frozen=True)
class Signature:
    """The signed part of a heard announcement: the addresses (unscoped), ``ts`` and the
    64-byte signature."""

    addresses: tuple[str, ...]
    timestamp: int
    signature: bytes


def parse_signature(ip: str | None, ts: str | None, sig: str | None) -> Signature | None:
    """The ``ip``/``ts``/``sig`` TXT values of an announcement: None when it carries no
    ``sig``; ValueError (naming the key) when they are malformed or too long."""
    if sig is None:
        return None
    if ip is None or ts is None:
        raise ValueError("TXT sig without ip and ts")
    if len(sig) > 100:
        raise ValueError("TXT sig too long")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("TXT sig is not base64") from None
    if len(raw) != SIGNATURE_SIZE:
        raise ValueError(f"TXT sig is not {SIGNATURE_SIZE} bytes")
    if len(ip) > MAX_IP_TXT:
        raise ValueError("TXT ip too long")
    addresses = tuple(a for a in ip.split(",") if a) if ip else ()
    if len(addresses) > MAX_SIGNED_ADDRESSES:
        raise ValueError("TXT ip lists too many addresses")
    for text in addresses:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"TXT ip {text[:40]!r} is not an IP address") from None
    if not ts.isascii() or not ts.isdigit() or len(ts) > 13 or int(ts) > MAX_TIMESTAMP:
        raise ValueError("TXT ts is not a timestamp")
    return Signature(addresses, int(ts), raw)


# ----------------------------------------------------------------------------- verifying

@dataclass
class LanCounters:
    """LAN announcements of our mesh, by verdict (each distinct announcement once)."""

    accepted: int = 0
    no_key: int = 0
    unsigned: int = 0
    bad_signature: int = 0
    stale: int = 0
    unsigned_address: int = 0     # verified, with heard addresses outside the signed set
                                  # (ignored; kept the last one when none was signed)


class LanVerifier:
    """Which LAN peers (discovery.lan.records.LanPeer, from the browser) may give candidate
    endpoints: see the module docstring. I/O-free; one caller (the member's loop)."""

    def __init__(self) -> None:
        self.counters = LanCounters()
        self._accepted: dict[bytes, tuple] = {}        # K -> (last verified LanPeer, its LAN key)
        self._newest: dict[bytes, int] = {}            # K -> newest ts accepted (replays)
        self._verdicts: dict[bytes, tuple] = {}        # K -> (fingerprint, lan key, good)
        self._counted: dict[bytes, tuple] = {}         # K -> (fingerprint, reason) counted last

    def verify(self, peers: Mapping[bytes, object], lan_keys: Mapping[bytes, bytes],
               now: float) -> dict:
        """The LAN peers to use, by WireGuard key: each verified under its LAN key from
        `lan_keys`, with only its signed addresses; the last verified one where the
        current announcement is not (while the browser lists K). `now`: wall-clock
        seconds."""
        out = {}
        for key, peer in peers.items():
            lan_key = lan_keys.get(key)
            reason, good = self._judge(key, peer, lan_key, now)
            self._count(key, peer, reason)
            if good is not None:
                self._accepted[key] = (good, lan_key)
                self._newest[key] = good.signature.timestamp
            kept, under = self._accepted.get(key, (None, None))
            if kept is None:
                continue
            if under != lan_key or now - kept.signature.timestamp > MAX_AGE:
                del self._accepted[key]         # K's LAN key changed, or the signature aged
                continue
            out[key] = kept
        for gone in [k for k in self._accepted if k not in peers]:
            del self._accepted[gone]            # K left the LAN (or its records expired)
        for table in (self._newest, self._verdicts, self._counted):
            for gone in [k for k in table if k not in lan_keys and k not in peers]:
                del table[gone]
        return out

    def _judge(self, key: bytes, peer, lan_key: bytes | None, now: float) -> tuple[str, object | None]:
        """(reason, the peer with its signed addresses only, or None)."""
        sig = peer.signature
        if sig is None:
            return "unsigned", None
        if lan_key is None:
            return "no_key", None
        if sig.timestamp > now + MAX_SKEW or now - sig.timestamp > MAX_AGE \
                or sig.timestamp < self._newest.get(key, 0):
            return "stale", None
        fingerprint = (peer.mesh_id, peer.port, sig)
        cached = self._verdicts.get(key)
        if cached is not None and cached[0] == fingerprint and cached[1] == lan_key:
            good = cached[2]
        else:
            good = _valid(lan_key, sig.signature,
                          signed_payload(peer.mesh_id, key, peer.port, sig.addresses, sig.timestamp))
            self._verdicts[key] = (fingerprint, lan_key, good)
        if not good:
            return "bad_signature", None
        signed = set(sig.addresses)
        used = [a for a in peer.addresses if bare_address(a) in signed]
        if not used:        # e.g. K's TXT with a stranger's SRV and address: nothing to use
            return "unsigned_address", None
        reason = "accepted" if len(used) == len(peer.addresses) else "unsigned_address"
        return reason, replace(peer, addresses=used)

    def _count(self, key: bytes, peer, reason: str) -> None:
        """Count `reason` once per distinct announcement of K (not at every round)."""
        mark = (peer.signature, tuple(peer.addresses), peer.port, reason)
        if self._counted.get(key) == mark:
            return
        self._counted[key] = mark
        setattr(self.counters, reason, getattr(self.counters, reason) + 1)


def _valid(lan_key: bytes, signature: bytes, payload: bytes) -> bool:
    if len(lan_key) != KEY_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(lan_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
