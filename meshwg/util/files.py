"""Atomic file writes: readers see the old file or the new one, never a part of either."""

from __future__ import annotations

import json
import os


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync it and
    rename it over `path` (POSIX rename is atomic). The file gets permission `mode`
    (0600 by default: state and secrets). Raises OSError; on failure `path` is unchanged
    and the temporary file is removed."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


RUN_DIRECTORY = "/var/run/meshwg"   # pid, counters and status files of running interfaces


class JsonFile:
    """A JSON document in a file that readers poll (`meshwg show`, `meshwg status`),
    rewritten atomically and only when the document changed, so an idle writer writes
    nothing. `extra` fields (a timestamp) are written but do not count as a change."""

    def __init__(self, path: str | os.PathLike, mode: int = 0o644) -> None:
        self.path = os.fspath(path)
        self.mode = mode
        self.writes = 0
        self._last: str | None = None

    def write(self, doc: dict, extra: dict | None = None) -> bool:
        """Write `doc` (plus `extra`) unless `doc` is what was written last; True when
        written. Creates the folder (0755). Raises OSError."""
        text = json.dumps(doc, sort_keys=True)
        if text == self._last:
            return False
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        atomic_write(self.path, json.dumps({**doc, **(extra or {})}, indent=1, sort_keys=True),
                     self.mode)
        self._last = text
        self.writes += 1
        return True

    def remove(self) -> None:
        """Delete the file if this writer wrote it (a second process that failed to start
        must not remove the running one's file); the next write writes again."""
        if self.writes:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._last = None
        self.writes = 0
