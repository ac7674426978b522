"""The status file a rendezvous daemon keeps for `meshwg rendezvous status`: who it is,
how many members it serves, and the health of its directory. For a rendezvous on a DNS
zone (discovery.stores.zone_rendezvous.ZoneState): the servers, the one the membership
was read from last, why none answered (``problem``) and why the primary did not
(``primary_problem``: enrollment, invites and revocation wait for it).

Kept in the state directory (STATUS_NAME, 0600) as a meshwg.util.files.JsonFile: written
atomically and only when its content changed (the daemon's loop already wakes for its
own reasons: no polling for it), removed at stop.
"""

from __future__ import annotations

import os
import time
from typing import Any

STATUS_NAME = "status.json"


def status_path(state_dir: str | os.PathLike) -> str:
    """STATE_DIR/status.json"""
    return os.path.join(os.fspath(state_dir), STATUS_NAME)


def directory_status(state: Any) -> dict[str, Any]:
    """The directory's part of the status of `state` (a RendezvousState, or a ZoneState
    with ``servers``-bearing access): {"kind": "embedded"} or {"kind": "dns", "servers",
    "read_from", "problem", "primary_problem"}; servers as given: "dns://P,dns://S"."""
    if not getattr(state, "directory", None):
        return {"kind": "embedded"}
    return {"kind": "dns", "servers": state.directory,
            "read_from": getattr(state, "read_from", "") or None,
            "problem": getattr(state, "problem", "") or None,
            "primary_problem": getattr(state, "primary_problem", "") or None}


def format_status(doc: dict[str, Any], now: float | None = None) -> list[str]:
    """The lines `meshwg rendezvous status` prints for `doc` (the file's content plus
    "running": bool)."""
    now = time.time() if now is None else now
    lines = [f"rendezvous {doc.get('interface')}: {doc.get('address')} (mesh {doc.get('network')}, "
             f"zone {doc.get('zone')}, endpoint {doc.get('endpoint')}), {doc.get('members')} members"]
    if not doc.get("running"):
        age = int(now - doc.get("updated_at", now))
        lines.append(f"  NOT RUNNING: process {doc.get('pid')} is gone (killed?); this status "
                     f"is from {age}s ago. `meshwg rendezvous run` starts it again")
    directory = doc.get("directory") or {"kind": "embedded"}
    if directory["kind"] == "embedded":
        lines.append("  directory: embedded (this rendezvous's state)")
        return lines
    lines.append(f"  directory: {directory.get('servers')}"
                 + (f", read from {directory['read_from']}" if directory.get("read_from") else ""))
    if directory.get("problem"):
        lines.append(f"  PROBLEM: no directory server answers: {directory['problem']}; "
                     "serving the membership as last read")
    if directory.get("primary_problem"):
        lines.append(f"  PROBLEM: the primary is not writable: {directory['primary_problem']}; "
                     "enrollment, invites and revocation wait for it")
    if not directory.get("problem") and not directory.get("primary_problem"):
        lines.append("  primary: answers")
    return lines
