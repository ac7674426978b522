"""Rendered DNS answers kept for one directory serial, so repeated queries skip parsing
and rendering. No I/O; thread-safe (the server's UDP and TCP threads share one)."""

from __future__ import annotations

import threading

CACHE_LIMIT = 100_000


class ResponseCache:
    """Rendered answers keyed by (transport, query bytes after the 2-byte ID), valid for
    one directory serial. ``Directory.answer`` is a pure function of the query and the
    snapshot, so identical query bytes get identical answers; a hit skips parsing and
    rendering and only carries the query's ID over (messages rendered by dnspython).
    At most `limit` entries: the cache starts afresh when full."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.hits = 0
        self._serial = -1
        self._data: dict[tuple[str, bytes], list[bytes]] = {}
        self._lock = threading.Lock()

    def get(self, serial: int, transport: str, query_wire: bytes) -> list[bytes] | None:
        """The cached response messages re-stamped with this query's ID, or None."""
        with self._lock:
            if serial != self._serial:
                self._serial, self._data = serial, {}
                return None
            bodies = self._data.get((transport, query_wire[2:]))
            if bodies is None:
                return None
            self.hits += 1
        query_id = query_wire[:2]
        return [query_id + body[2:] for body in bodies]

    def put(self, serial: int, transport: str, query_wire: bytes, wires: list[bytes]) -> None:
        """Keep `wires` as the answer to `query_wire` while the serial stays `serial`."""
        with self._lock:
            if serial != self._serial:
                return
            if len(self._data) >= self.limit:
                self._data = {}
            self._data[(transport, query_wire[2:])] = wires
