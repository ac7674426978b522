"""Noticing that another process changed the rendezvous's SQLite store (`meshwg remove`).

SQLite's `PRAGMA data_version` (https://www.sqlite.org/pragma.html#pragma_data_version)
changes on a connection whenever another connection committed to the database since the
connection last asked. StoreWatch keeps a read-only connection of its own, so every commit
counts, the daemon's own and other processes'; one look costs a few microseconds, so the
rendezvous can afford one a second while idle.
"""

from __future__ import annotations

import os
import sqlite3


class StoreWatch:
    """changed() is True when the database at `path` was committed to since the last call
    (or since construction). Raises sqlite3.Error if the file cannot be opened."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        self._version = self._data_version()

    def _data_version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def changed(self) -> bool:
        """True once per batch of commits made since the last call. A database that cannot
        be read any more counts as changed (the caller's read will report why)."""
        try:
            version = self._data_version()
        except sqlite3.Error:
            return True
        if version == self._version:
            return False
        self._version = version
        return True

    def close(self) -> None:
        self._db.close()
