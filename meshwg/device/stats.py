"""The counters file `meshwg show` reads: what a device dropped or noted, by reason.

The `wg` control protocol has no field for counters, so the device publishes them as JSON
in DIRECTORY/IFACE.stats.json: {"interface": IFACE, "counters": {reason: count}}, zero
counts left out. The file is rewritten only when the counters changed.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

from meshwg.util.files import RUN_DIRECTORY, JsonFile

log = logging.getLogger("meshwg.device")

def merge_counters(*sources: tuple[str, Mapping[str, int]]) -> dict[str, int]:
    """One sorted dict of the non-zero counters of several (prefix, counters) sources;
    a counter gets the prefix unless its name already starts with it."""
    out: dict[str, int] = {}
    for prefix, counters in sources:
        for name, value in counters.items():
            if value:
                out[name if name.startswith(prefix) else prefix + name] = value
    return dict(sorted(out.items()))


def stats_path(interface: str, directory: str = RUN_DIRECTORY) -> str:
    """DIRECTORY/INTERFACE.stats.json"""
    return os.path.join(directory, f"{interface}.stats.json")


class StatsFile(JsonFile):
    """DIRECTORY/INTERFACE.stats.json, written by publish() when the counters changed."""

    def __init__(self, interface: str, directory: str = RUN_DIRECTORY) -> None:
        super().__init__(stats_path(interface, directory))
        self.interface = interface

    def publish(self, counters: dict[str, int]) -> bool:
        """Write `counters` unless they are what the file holds already; True when
        written. A failure is logged (the file is a convenience, not state)."""
        try:
            return self.write({"interface": self.interface, "counters": counters})
        except OSError as exc:
            log.debug("cannot write %s: %s", self.path, exc)
            return False
