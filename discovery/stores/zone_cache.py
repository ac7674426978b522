"""The last zone a rendezvous on a DNS directory read, kept in its state directory
(issue 10): a rendezvous restarted while no DNS server answers serves the membership it
read last, and says how old it is, instead of serving nobody.

The file (:data:`CACHE_NAME`, 0600, replaced atomically: meshwg.util.files.atomic_write) is
JSON: the zone, the server it was read from, when (unix seconds), the SOA serial, and every
record of the transfer as (owner, type, [rdata text]). It is a copy of what the zone's
servers hand to any holder of the transfer key, so it is kept as private as the key file
next to it. Reading is bounded (:data:`MAX_CACHE_BYTES`, :data:`MAX_CACHE_RECORDS`); a file
that is missing is no copy; one that is too big, corrupt, of another zone or another
version is ignored with one log line (the next read from a server replaces it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from meshwg.util.files import atomic_write

from discovery.dnssd.update import MAX_XFR_RECORDS, ZoneContent

CACHE_NAME = "zone-cache.json"
VERSION = 1
MAX_CACHE_BYTES = 64 << 20          # bytes of the file (10,000 members: ~5 MB)
MAX_CACHE_RECORDS = MAX_XFR_RECORDS  # the same bound as a transfer
log = logging.getLogger("meshwg.zone")


@dataclass(frozen=True)
class SavedZone:
    """A zone as read from `server` at `read_at` (unix seconds)."""

    content: ZoneContent
    server: str
    read_at: float


def cache_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / CACHE_NAME


def save_zone(path: str | os.PathLike, zone: str, content: ZoneContent, server: str,
              read_at: float | None = None) -> None:
    """Replace the copy at `path` with `content` (OSError on failure)."""
    records = [[name.to_text(), dns.rdatatype.to_text(rdtype), [r.to_text() for r in rdatas]]
               for (name, rdtype), rdatas in content.records.items()]
    doc = {"version": VERSION, "zone": dns.name.from_text(zone).to_text(), "server": server,
           "read_at": time.time() if read_at is None else read_at, "serial": content.serial,
           "records": records}
    atomic_write(path, json.dumps(doc, separators=(",", ":")), 0o600)


def load_zone(path: str | os.PathLike, zone: str) -> SavedZone | None:
    """The copy at `path` of `zone`, or None (missing; anything wrong: one log line)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the saved zone %s: %s", path, exc.strerror or exc)
        return None
    try:
        if size > MAX_CACHE_BYTES:
            raise ValueError(f"{size} bytes, over {MAX_CACHE_BYTES}")
        with open(path, "rb") as f:
            doc = json.loads(f.read(MAX_CACHE_BYTES + 1))
        return _parse(doc, dns.name.from_text(zone))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            dns.exception.DNSException) as exc:
        log.warning("ignoring the saved zone %s: %s", path, exc or type(exc).__name__)
        return None


def _parse(doc: dict, origin: dns.name.Name) -> SavedZone:
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError("not a zone copy of this version")
    if dns.name.from_text(doc["zone"]) != origin:
        raise ValueError(f"a copy of zone {doc['zone']}, not {origin}")
    serial, read_at, server = doc["serial"], doc["read_at"], doc["server"]
    if not (isinstance(serial, int) and 0 <= serial < 1 << 32 and
            isinstance(read_at, (int, float)) and 0 <= read_at < 1e11 and isinstance(server, str)):
        raise ValueError("bad serial, time or server")
    records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
    count = 0
    for owner, type_text, texts in doc["records"]:
        name = dns.name.from_text(owner)
        if not name.is_subdomain(origin):
            raise ValueError(f"{owner} is outside the zone")
        rdtype = dns.rdatatype.from_text(type_text)
        count += len(texts)
        if count > MAX_CACHE_RECORDS:
            raise ValueError(f"over {MAX_CACHE_RECORDS} records")
        records.setdefault((name, rdtype), []).extend(
            dns.rdata.from_text(dns.rdataclass.IN, rdtype, text) for text in texts)
    return SavedZone(ZoneContent(serial, records), server[:300], float(read_at))
