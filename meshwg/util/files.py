"""Atomic file writes: readers see the old file or the new one, never a part of either.
Everything written here is mode 0600 whatever the umask (state, status, counters and pid
files name peers and endpoints); the pid files of running commands and their liveness."""

from __future__ import annotations

import json
import os

from meshwg.util.numbers import bounded_int


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


def pid_path(name: str, directory: str = RUN_DIRECTORY) -> str:
    """DIRECTORY/NAME.pid"""
    return os.path.join(directory, f"{name}.pid")


def write_pid_file(name: str, directory: str = RUN_DIRECTORY) -> str:
    """Record this process as DIRECTORY/NAME.pid (atomically, mode 0600); its path.
    Raises OSError."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = pid_path(name, directory)
    atomic_write(path, f"{os.getpid()}\n")
    return path


def read_pid_file(name: str, directory: str = RUN_DIRECTORY) -> int | None:
    """The pid DIRECTORY/NAME.pid names, or None (no such file, or not a pid)."""
    try:
        with open(pid_path(name, directory)) as f:
            text = f.read(32).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return bounded_int(text, (1 << 32) - 1, low=1)


def process_running(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


class JsonFile:
    """A JSON document in a file that readers poll (`meshwg show`, `meshwg status`),
    rewritten atomically and only when the document changed, so an idle writer writes
    nothing. `extra` fields (a timestamp) are written but do not count as a change."""

    def __init__(self, path: str | os.PathLike, mode: int = 0o600) -> None:
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
