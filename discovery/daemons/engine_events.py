"""The engine's events (meshwg.core.events: HandshakeCompleted, EndpointChanged) delivered
to a daemon's loop, which also waits for other things (NOTIFY, mDNS, netlink, deadlines).

One thread blocks in Device.wait_events (without a timeout) and hands every non-empty
batch to `on_events` (from that thread); nothing runs while the engine is quiet. Stopping
the device ends the wait, and with it the thread once stop() was called.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("meshwg.engine-events")

WAIT = None     # wait_events blocks until events come or the device stops


class EngineEvents:
    """Delivers `device.wait_events(...)` batches to `on_events(list)`."""

    def __init__(self, device: Any, on_events: Callable[[list], None], name: str = "engine-events"):
        self.device = device
        self.on_events = on_events
        self.name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EngineEvents":
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self.device.wait_events(WAIT)
            except Exception:               # noqa: BLE001 -- a stopped or failing engine
                if self._stopping.is_set():
                    break
                log.exception("%s: waiting for engine events failed", self.name)
                self._stopping.wait(1.0)
                continue
            if events and not self._stopping.is_set():
                try:
                    self.on_events(events)
                except Exception:           # noqa: BLE001 -- the next batch still comes
                    log.exception("%s: handling engine events failed", self.name)

    def stop(self, timeout: float = 0.0) -> None:
        """Ask the thread to end; wait up to `timeout` s for it (it ends by itself once the
        device stops, so callers that stop the device next need not wait)."""
        self._stopping.set()
        if self._thread is not None and timeout > 0:
            self._thread.join(timeout)
