"""The counters file `meshwg show` reads: what a device dropped or noted, by reason.

The `wg` control protocol has no field for counters, so the device publishes them as JSON
in DIRECTORY/IFACE.stats.json: {"interface": IFACE, "counters": {reason: count}}, zero
counts left out. The file is rewritten only when the counters changed.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from meshwg.util.files import atomic_write

log = logging.getLogger("meshwg.device")

STATS_DIRECTORY = "/var/run/meshwg"


def merge_counters(*sources: tuple[str, Mapping[str, int]]) -> dict[str, int]:
    """One sorted dict of the non-zero counters of several (prefix, counters) sources;
    a counter gets the prefix unless its name already starts with it."""
    out: dict[str, int] = {}
    for prefix, counters in sources:
        for name, value in counters.items():
            if value:
                out[name if name.startswith(prefix) else prefix + name] = value
    return dict(sorted(out.items()))


class StatsFile:
    """DIRECTORY/INTERFACE.stats.json, written by publish() when the counters changed."""

    def __init__(self, interface: str, directory: str = STATS_DIRECTORY) -> None:
        self.interface = interface
        self.directory = directory
        self._published: dict[str, int] | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.directory, f"{self.interface}.stats.json")

    def publish(self, counters: dict[str, int]) -> bool:
        """Write `counters` unless they are what the file holds already; True when
        written. A failure is logged (the file is a convenience, not state)."""
        if counters == self._published:
            return False
        try:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            atomic_write(self.path, json.dumps({"interface": self.interface,
                                                "counters": counters}), mode=0o644)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.path, exc)
            return False
        self._published = dict(counters)
        return True

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._published = None
