"""State directories only their owner can enter, and durable writes into them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from meshwg.util.files import atomic_write

from discovery.stores.errors import StateError


def prepare_private_dir(path: Path) -> None:
    """Create `path` as 0700, or accept an existing directory that only its owner can
    enter (an empty one open to others is tightened). StateError naming the path."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as exc:
        raise StateError(f"{path}: cannot create state directory: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path}: exists and is not a directory")
    if st.st_mode & 0o077:
        if any(path.iterdir()):
            raise StateError(f"{path}: state directory is accessible by group/others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 700 on it")
        os.chmod(path, 0o700)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or link into it) to disk. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data` (mode 0600) and make the rename durable.
    Raises OSError."""
    atomic_write(path, data, 0o600)
    fsync_dir(path.parent)
