"""The Linux TUN device: open, read batches of packets, write packets.

With offloads (the default; off with offload=False) the device is opened with
IFF_VNET_HDR and TUNSETOFFLOAD (checksum offload, TSO for IPv4 and IPv6): the kernel
hands over TCP segments of up to 64 KiB, which are split into MTU-sized packets here
(meshwg.tun.tso), and takes coalesced TCP segments with a GSO header (meshwg.tun.gro).
Where the kernel refuses, the device runs as a plain TUN, one packet per read/write.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from typing import Iterator, Sequence

from meshwg.tun.checksum import compiled_module
from meshwg.tun.gro import coalesce_packets
from meshwg.tun.tso import OffloadError, split_frame_in_place
from meshwg.tun.vnet import VNET_HDR_SIZE, ZERO_VNET_HDR
from meshwg.util.errors import MeshwgError

log = logging.getLogger("meshwg.tun")

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
IFNAMSIZ = 16
MAX_PACKET = 65535
READ_SIZE = MAX_PACKET + VNET_HDR_SIZE


class TunError(MeshwgError):
    """The TUN device could not be created; the message says why in one line."""


class TunDevice:
    """A TUN interface (IFF_TUN | IFF_NO_PI, plus IFF_VNET_HDR with offloads) whose file
    descriptor is non-blocking.

    The interface disappears when the descriptor is closed.
    """

    def __init__(self, name: str, offload: bool = True):
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise TunError(f"invalid interface name {name!r} (1-15 characters, no '/' or spaces)")
        self.vnet_hdr = False        # True: every read and write carries a virtio_net_hdr
        self.stats = {"offload_errors": 0}
        self._frame_buffer: bytearray | None = None
        self._pending: bytes | int = 0   # read by read_lone, not lone: iter_packets' first
        fd, self.name = self._open(name, IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0))
        if offload:
            try:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                self.vnet_hdr = True
            except OSError as exc:
                log.info("%s: TUN offloads unavailable (%s): one packet per read", self.name,
                         exc.strerror)
                os.close(fd)     # the interface goes with it; make it again without headers
                fd, self.name = self._open(name, IFF_TUN | IFF_NO_PI)
        os.set_blocking(fd, False)
        self.fd = fd

    @staticmethod
    def _open(name: str, flags: int) -> tuple[int, str]:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunError("/dev/net/tun does not exist: this kernel or container has no TUN support") from None
        except PermissionError:
            raise TunError("cannot open /dev/net/tun: permission denied (run as root or with CAP_NET_ADMIN)") from None
        try:
            ifr = struct.pack("16sH", name.encode(), flags)
            result = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise TunError(f"cannot create interface {name}: operation not permitted (need root or CAP_NET_ADMIN)") from None
            if exc.errno == errno.EBUSY:
                raise TunError(f"cannot create interface {name}: it already exists and is in use") from None
            raise TunError(f"cannot create interface {name}: {exc.strerror}") from None
        return fd, result[:IFNAMSIZ].rstrip(b"\x00").decode()

    def fileno(self) -> int:
        return self.fd

    def iter_packets(self, limit: int = 64, stop_at: int = 0) -> Iterator:
        """Read what is ready now (at most `limit` reads) and yield its IP packets, one
        per read without offloads. With offloads a TCP segment of up to 64 KiB is split
        in place (tso.split_frame_in_place): each packet is a view valid only until the
        next is taken; with the compiled path its segments come as one (segments, size)
        tuple (meshwg.core.send.segments_of). Reads happen as the packets are taken.

        `stop_at` > 0 ends the batch after a packet of at most that many bytes (a ping,
        an ACK): it goes out at once instead of after the reads behind it, and a lone
        packet costs no read that ends in EAGAIN (the caller's poll says whether more
        is queued)."""
        fd = self.fd
        pending, self._pending = self._pending, 0
        if not self.vnet_hdr:
            read = os.read
            for _ in range(limit):
                if pending:
                    packet, pending = pending, 0
                else:
                    try:
                        packet = read(fd, MAX_PACKET)
                    except BlockingIOError:
                        return
                yield packet
                if len(packet) <= stop_at:
                    return
            return
        readv = os.readv
        buf = self._frame_buffer          # one is enough: packets are taken one by one
        if buf is None:
            buf = self._frame_buffer = bytearray(READ_SIZE)
        split = split_frame_in_place
        for _ in range(limit):
            if pending:
                n, pending = pending, 0
            else:
                try:
                    n = readv(fd, (buf,))
                except BlockingIOError:
                    return
            try:
                packets = split(buf, 0, n)
            except (OffloadError, IndexError, struct.error):
                self.stats["offload_errors"] += 1
                continue
            yield from packets
            if n <= stop_at + VNET_HDR_SIZE:
                return

    def read_lone(self, stop_at: int) -> bytes | memoryview | None:
        """One read: the IP packet when it is a lone one, at most `stop_at` bytes that
        need no offload work (no GSO, no checksum to complete), as bytes or a view of the
        frame buffer valid until the next read; else None. A packet or frame read but not
        lone is kept for the next iter_packets, which yields it first (`pending` says
        so); None with nothing pending: nothing was ready."""
        fd = self.fd
        if not self.vnet_hdr:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return None
            if len(packet) <= stop_at:
                return packet
            self._pending = packet
            return None
        buf = self._frame_buffer
        if buf is None:
            buf = self._frame_buffer = bytearray(READ_SIZE)
        try:
            n = os.readv(fd, (buf,))
        except BlockingIOError:
            return None
        if VNET_HDR_SIZE < n <= stop_at + VNET_HDR_SIZE and not buf[0] and not buf[1]:
            return memoryview(buf)[VNET_HDR_SIZE:n]   # flags 0, GSO_NONE: the packet as is
        self._pending = n
        return None

    def frame_buffer(self) -> bytearray:
        """The buffer frames are read into (READ_SIZE bytes: virtio header and packet),
        made on first use: the compiled lone crossing (meshwg.accel Crossing) reads into
        it too, and hands a frame it does not take back with keep()."""
        buf = self._frame_buffer
        if buf is None:
            buf = self._frame_buffer = bytearray(READ_SIZE)
        return buf

    def keep(self, n: int) -> None:
        """A frame of n bytes (with its virtio header when vnet_hdr) was read into
        frame_buffer() by someone else: iter_packets yields it first. ValueError for a
        size outside 1..READ_SIZE; RuntimeError when a frame is kept already (it would
        be lost: nothing may read into the buffer while `pending`)."""
        if not 0 < n <= READ_SIZE:
            raise ValueError(f"frame of {n} bytes")
        if self._pending:
            raise RuntimeError("a frame is kept already: it would be lost")
        self._pending = n if self.vnet_hdr else bytes(self.frame_buffer()[:n])

    @property
    def pending(self) -> bool:
        """Did read_lone keep a packet for the next iter_packets?"""
        return bool(self._pending)

    def write_batch(self, packets: Sequence) -> None:
        """Write IP packets (bytes or views); with offloads consecutive TCP segments of a
        flow are merged into one write (meshwg.tun.gro; in one call with the compiled data
        path, meshwg.accel coalesce, which gives the same writes)."""
        if self.vnet_hdr:
            if len(packets) == 1:          # nothing to coalesce: header and packet as is
                self._writev_raw((ZERO_VNET_HDR, packets[0]))
                return
            fast = compiled_module()
            for frame in (fast.coalesce(packets, True) if fast is not None
                          else coalesce_packets(packets)):
                self._write_raw(frame)
        else:
            for packet in packets:
                self._write_raw(packet)

    def _write_raw(self, packet: bytes) -> None:
        self._writev_raw((packet,))

    def _writev_raw(self, parts: Sequence) -> None:
        try:
            os.writev(self.fd, parts)
        except BlockingIOError:
            pass  # the kernel queue is full: drop, as a router would
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EINVAL, errno.ENOBUFS):
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
