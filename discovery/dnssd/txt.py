"""A member's TXT record: key=value character-strings (RFC 6763 section 6). No I/O.

``txtvers=1``, ``pub=BASE64`` (the public key), ``allowed=CIDR,CIDR`` (wgsd's keys), then
meshwg's: ``name=``, ``addr=`` (mesh address), ``cand=IP:port,[v6]:port`` (host
candidates) and any ``extra`` key=value (``relay=PORT``: the member offers a relay,
discovery.dnssd.relays). List-valued keys (``allowed``, ``cand``) longer
than one 255-byte string are split over repeated keys; the parser joins them.
"""

from __future__ import annotations

import functools
from typing import Iterable

from meshwg.core.keys import KeyFormatError, decode_key, encode_key

from discovery.dnssd.member import (
    PARSE_CACHE, MemberRecord, format_published, is_cidr, parse_published,
)

TXT_STRING_MAX = 255
RESERVED_TXT_KEYS = frozenset({"txtvers", "pub", "allowed", "name", "addr", "cand", "ep"})
LIST_TXT_KEYS = frozenset({"allowed", "cand"})


def txt_pair(key: str, value: str) -> bytes:
    """One ``key=value`` string (UTF-8); ValueError when it exceeds 255 bytes."""
    data = f"{key}={value}".encode("utf-8")
    if len(data) > TXT_STRING_MAX:
        raise ValueError(f"TXT {key}: '{key}=value' is {len(data)} bytes, limit {TXT_STRING_MAX}")
    return data


def _pack_list(key: str, items: list[str]) -> list[bytes]:
    """``key=a,b,c`` strings of at most 255 bytes; the key repeats when it overflows."""
    prefix = f"{key}=".encode()
    if not items:
        return [prefix]
    out: list[bytes] = []
    current = b""
    for item in items:
        piece = item.encode()
        if len(prefix) + len(piece) > TXT_STRING_MAX:
            raise ValueError(f"TXT {key}: item {item!r} is too long")
        candidate = piece if not current else current + b"," + piece
        if len(prefix) + len(candidate) > TXT_STRING_MAX:
            out.append(prefix + current)
            candidate = piece
        current = candidate
    out.append(prefix + current)
    return out


def txt_strings(record: MemberRecord) -> list[bytes]:
    """The TXT character-strings for one member, wgsd keys first (``txtvers`` then
    ``pub``). Raises ValueError for a value that cannot be encoded (naming the key)."""
    strings = [b"txtvers=1", txt_pair("pub", encode_key(record.public_key))]
    strings += _pack_list("allowed", list(record.allowed_ips))
    if record.name:
        strings.append(txt_pair("name", record.name))
    if record.mesh_address:
        strings.append(txt_pair("addr", record.mesh_address))
    if record.host_candidates:
        strings += _pack_list("cand", [format_published(h, p) for h, p in record.host_candidates])
    for key in sorted(record.extra):
        if not key or "=" in key or not key.isascii() or not key.isprintable():
            raise ValueError(f"TXT extra key {key!r} must be printable ASCII without '='")
        if key.lower() in RESERVED_TXT_KEYS:
            raise ValueError(f"TXT extra key {key!r} is reserved")
        strings.append(txt_pair(key, record.extra[key]))
    return strings


def parse_txt(strings: Iterable[bytes]) -> dict[str, str]:
    """Key=value pairs (keys lowercased). The first occurrence of a key wins (RFC 6763
    6.4), except list keys (``allowed``, ``cand``) whose repeats are joined with ','.
    Strings that are not UTF-8 are skipped; a bare key maps to ''."""
    out: dict[str, str] = {}
    for raw in strings:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            continue
        key, _, value = text.partition("=")
        key = key.lower()
        if not key:
            continue
        if key in out:
            if key in LIST_TXT_KEYS and value:
                out[key] = f"{out[key]},{value}" if out[key] else value
            continue
        out[key] = value
    return out


@functools.lru_cache(maxsize=PARSE_CACHE)
def decode_pub(text: str) -> bytes | None:
    """The 32-byte key of a ``pub=`` value, or None when it is not one (remembered, as
    keys repeat at every read of the directory)."""
    try:
        return decode_key(text, "pub")
    except KeyFormatError:
        return None


def member_from_fields(key: bytes, endpoint: tuple[str, int] | None,
                       fields: dict[str, str]) -> MemberRecord:
    """A MemberRecord from parsed TXT fields; invalid CIDRs and candidates are skipped
    (hostile input is dropped, not fatal)."""
    allowed = [c.strip() for c in fields.get("allowed", "").split(",") if c.strip()]
    allowed = [c for c in allowed if is_cidr(c)]
    candidates: list[tuple[str, int]] = []
    for text in fields.get("cand", "").split(","):
        if text.strip():
            try:
                candidates.append(parse_published(text))
            except ValueError:
                continue
    extra = {k: v for k, v in fields.items() if k not in RESERVED_TXT_KEYS}
    return MemberRecord(
        public_key=key,
        endpoint=endpoint,
        allowed_ips=allowed,
        name=fields.get("name", ""),
        mesh_address=fields.get("addr", ""),
        host_candidates=candidates,
        extra=extra,
    )
