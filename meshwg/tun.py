"""The Linux TUN device: open, read batches of packets, write packets."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
MAX_PACKET = 65535


class TunError(Exception):
    """The TUN device could not be created; the message says why in one line."""


class TunDevice:
    """A TUN interface (IFF_TUN | IFF_NO_PI) whose file descriptor is non-blocking.

    The interface disappears when the descriptor is closed.
    """

    def __init__(self, name: str):
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise TunError(f"invalid interface name {name!r} (1-15 characters, no '/' or spaces)")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunError("/dev/net/tun does not exist: this kernel or container has no TUN support") from None
        except PermissionError:
            raise TunError("cannot open /dev/net/tun: permission denied (run as root or with CAP_NET_ADMIN)") from None
        try:
            ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            result = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise TunError(f"cannot create interface {name}: operation not permitted (need root or CAP_NET_ADMIN)") from None
            if exc.errno == errno.EBUSY:
                raise TunError(f"cannot create interface {name}: it already exists and is in use") from None
            raise TunError(f"cannot create interface {name}: {exc.strerror}") from None
        self.name = result[:IFNAMSIZ].rstrip(b"\x00").decode()
        os.set_blocking(fd, False)
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def read_batch(self, limit: int = 64) -> list[bytes]:
        """Up to `limit` packets that are ready now (empty if none)."""
        out = []
        read = os.read
        fd = self.fd
        try:
            for _ in range(limit):
                out.append(read(fd, MAX_PACKET))
        except BlockingIOError:
            pass
        return out

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            pass  # the kernel queue is full: drop, as a router would
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EINVAL, errno.ENOBUFS):
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
