"""A member removed by `meshwg remove` is told (issue 10): when the rendezvous stops
answering through the tunnel, the member asks it over the enrollment port whether its key
is still enrolled (discovery.enroll.membership: an answer only the rendezvous can MAC).
Only a verified "not_member" is recorded, in STATE/removed.json; `meshwg join --state`
then refuses to resume and `meshwg status` says so.

AskSchedule is I/O-free: when the next question is due (the first at once, then doubling
from ASK_FIRST to ASK_MAX while the directory keeps failing; reset when it answers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from discovery.stores.private_dir import save_private_file

REMOVED_FILE = "removed.json"
ASK_FIRST = 5.0         # seconds after a question before the next one (doubling)
ASK_MAX = 300.0         # ... up to this
CONFIRMATIONS = 2       # verified "not_member" answers in a row before it is believed: a
                        # zone read from a lagging secondary may miss a member enrolled
                        # a moment ago at another rendezvous
_MAX_FILE = 4096


class AskSchedule:
    """When to ask the rendezvous "am I a member?"; counts asked and bad answers."""

    def __init__(self):
        self.next_at = 0.0
        self.wait = ASK_FIRST
        self.in_flight = False
        self.asked = 0
        self.bad_answers = 0        # answers that did not verify (not the rendezvous)
        self.not_member = 0         # verified "not_member" answers in a row

    def answered(self, not_member: bool) -> bool:
        """A verified answer came: True when CONFIRMATIONS "not_member" came in a row."""
        self.in_flight = False
        self.not_member = self.not_member + 1 if not_member else 0
        return self.not_member >= CONFIRMATIONS

    def due(self, now: float) -> bool:
        return not self.in_flight and now >= self.next_at

    def started(self, now: float) -> None:
        self.in_flight = True
        self.asked += 1
        self.next_at = now + self.wait
        self.wait = min(ASK_MAX, self.wait * 2)

    def directory_answers(self) -> None:
        """The rendezvous answers through the tunnel again: the next failure asks at once."""
        self.next_at, self.wait, self.not_member = 0.0, ASK_FIRST, 0


def save_removed(state_dir: str, endpoint: str, at: float) -> dict[str, Any]:
    """Record the proven removal (0600, atomic). Raises OSError."""
    doc = {"by": endpoint, "at": at}
    save_private_file(Path(state_dir) / REMOVED_FILE, (json.dumps(doc) + "\n").encode())
    return doc


def load_removed(state_dir: str) -> dict[str, Any] | None:
    """The recorded removal ({"by": ENDPOINT, "at": SECONDS}), or None (none, or a file that
    is not one: it is ignored)."""
    try:
        with open(os.path.join(state_dir, REMOVED_FILE), "rb") as f:
            doc = json.loads(f.read(_MAX_FILE + 1)[:_MAX_FILE])
    except (OSError, ValueError):
        return None
    if (not isinstance(doc, dict) or not isinstance(doc.get("by"), str)
            or not isinstance(doc.get("at"), (int, float))):
        return None
    return {"by": doc["by"][:300], "at": float(doc["at"])}


def removed_line(doc: dict[str, Any]) -> str:
    """'removed from the mesh by the rendezvous at EP (at TIME)'"""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["at"]))
    return f"removed from the mesh by the rendezvous at {doc['by']} (at {when})"
