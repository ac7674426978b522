"""The status file a member daemon keeps for `meshwg status`: who it is, whether the
directory answers, and each peer's path ('lan', 'direct', 'none') with the reason.

Written atomically (meshwg.util.files) and only when its content changed, so an idle
member does not write. Counters that change all the time (rx/tx bytes, last handshake)
are not in it: `meshwg status` reads those live from the engine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from meshwg.util.files import atomic_write

STATUS_DIRECTORY = "/var/run/meshwg"


def status_path(interface: str, directory: str = STATUS_DIRECTORY) -> str:
    """/var/run/meshwg/INTERFACE.status.json"""
    return os.path.join(directory, f"{interface}.status.json")


class StatusFile:
    """write(doc) replaces the file when `doc` differs from what was written last; the
    time of that write is added as "updated_at" (wall-clock seconds)."""

    def __init__(self, path: str):
        self.path = path
        self.writes = 0
        self._last: str | None = None

    def write(self, doc: dict[str, Any]) -> bool:
        """True when the file was written. Raises OSError."""
        text = json.dumps(doc, sort_keys=True)
        if text == self._last:
            return False
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        atomic_write(self.path, json.dumps({**doc, "updated_at": time.time()}, indent=1), mode=0o644)
        self._last = text
        self.writes += 1
        return True

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._last = None
