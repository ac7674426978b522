"""The member's copy of the last directory it read, so that after a restart it links to
its peers before the rendezvous answers (or while the rendezvous is down).

A JSON list in the member's state directory, written atomically (meshwg.util.files) when
the directory changed. Keys are stored as hex, endpoints as [host, port] lists.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from meshwg.util.files import atomic_write

from discovery.dnssd.member import MemberRecord

log = logging.getLogger("meshwg.member")

DIRECTORY_CACHE = "directory.json"


def cache_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(state_dir), DIRECTORY_CACHE)


def load_directory(path: str | os.PathLike) -> dict[bytes, MemberRecord]:
    """The cached directory by public key; {} when the file is missing or unreadable (a
    damaged cache only costs the wait for the rendezvous)."""
    try:
        with open(path) as f:
            doc = json.load(f)
        out = {}
        for item in doc:
            key = bytes.fromhex(item["public_key"])
            endpoint = item.get("endpoint")
            out[key] = MemberRecord(
                public_key=key, endpoint=(str(endpoint[0]), int(endpoint[1])) if endpoint else None,
                allowed_ips=list(item.get("allowed_ips", [])), name=item.get("name", ""),
                mesh_address=item.get("mesh_address", ""),
                host_candidates=[(str(c[0]), int(c[1])) for c in item.get("host_candidates", [])],
                extra={str(k): str(v) for k, v in item.get("extra", {}).items()})
        return out
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("ignoring the directory cache %s: %s", path, exc)
        return {}


def save_directory(path: str | os.PathLike, records: Mapping[bytes, MemberRecord]) -> None:
    """Replace the cache with `records` (mode 0600). Raises OSError."""
    doc = [{"public_key": key.hex(), "endpoint": list(r.endpoint) if r.endpoint else None,
            "allowed_ips": r.allowed_ips, "name": r.name, "mesh_address": r.mesh_address,
            "host_candidates": [list(c) for c in r.host_candidates], "extra": r.extra}
           for key, r in records.items()]
    atomic_write(path, json.dumps(doc), mode=0o600)
