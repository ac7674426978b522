"""The status file a member daemon keeps for `meshwg status`: who it is, whether the
directory answers, and each peer's path ('lan', 'direct', 'none') with the reason.

Written atomically (meshwg.util.files) and only when its content changed, so an idle
member does not write. Counters that change all the time (rx/tx bytes, last handshake)
are not in it: `meshwg status` reads those live from the engine.
"""

from __future__ import annotations

import os
import time
from typing import Any

from meshwg.util.files import RUN_DIRECTORY, JsonFile

def status_path(interface: str, directory: str = RUN_DIRECTORY) -> str:
    """/var/run/meshwg/INTERFACE.status.json"""
    return os.path.join(directory, f"{interface}.status.json")


class StatusFile(JsonFile):
    """write(doc) replaces the file when `doc` differs from what was written last; the
    time of that write is added as "updated_at" (wall-clock seconds). Raises OSError."""

    def write(self, doc: dict[str, Any], extra: dict[str, Any] | None = None) -> bool:
        return super().write(doc, {"updated_at": time.time(), **(extra or {})})
