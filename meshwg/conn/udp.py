"""The device's UDP socket: dual-stack, batched receive, endpoints as (host, port).

With offloads (the default; off with offload=False) the socket uses UDP GRO on receive
(one recvmsg returns many coalesced datagrams and their segment size) and UDP GSO on send
(one sendmsg carries many equal-size datagrams to one endpoint; meshwg.conn.gso). Either
falls back to one datagram per system call where the kernel refuses it. Endpoints are
(IP string, port) with IPv4-mapped IPv6 sources written as IPv4."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, Sequence

from meshwg.conn.gso import SEGMENT_SIZE, SOL_UDP, UDP_GRO, UDP_SEGMENT, gro_segment_size
from meshwg.util.errors import MeshwgError
from meshwg.util.sockbuf import grow_buffers

log = logging.getLogger("meshwg.conn")

SO_MARK = 36
SOCKET_BUFFER = 7 << 20   # 7 MB, as wireguard-go found pays off
# errors of a send to one endpoint that say nothing about the socket: drop like a router
_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT, errno.EINVAL,
                errno.ECONNREFUSED, errno.EPERM, errno.EADDRNOTAVAIL)
# errors of a receive caused by an earlier send (ICMP reports)
_RECEIVE_REPORTS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
# errors of a UDP_SEGMENT send: this kernel or route cannot segment
_NO_GSO = (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EMSGSIZE)


class BindError(MeshwgError):
    """The UDP port cannot be bound (in use, or not permitted); one line naming it."""


class UdpSocket:
    """One UDP socket for IPv4 and IPv6 (an AF_INET6 socket with V6ONLY off, or AF_INET
    where the host has no IPv6)."""

    def __init__(self, port: int = 0, fwmark: int = 0, offload: bool = True):
        self.sock = self._bind(port)
        self.family = self.sock.family
        self.port = self.sock.getsockname()[1]
        self.fwmark = 0
        if fwmark:
            self.set_fwmark(fwmark)
        self._sockaddrs: dict[tuple[str, int], tuple] = {}
        self.offload = offload
        self.gso = offload           # cleared at the first send the kernel refuses
        self.gro = False
        if offload:
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                log.info("UDP GRO unavailable: receiving one datagram per call")
        self._ancsize = socket.CMSG_SPACE(4)

    @staticmethod
    def _bind(port: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            address = ("0.0.0.0", port)
        grow_buffers(sock, SOCKET_BUFFER)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"UDP port {port} is already in use") from None
            raise BindError(f"cannot bind UDP port {port}: {exc.strerror}") from None
        sock.setblocking(False)
        return sock

    def set_fwmark(self, mark: int) -> None:
        """SO_MARK to `mark` (0..0xffffffff); Python passes an int as a signed C int, so a
        mark with the top bit set goes as its two's complement (0x80000000 and above were a
        TypeError: `wg set IFACE fwmark 0xffffffff` answered EIO)."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark - (1 << 32) if mark >= 1 << 31 else mark)
        self.fwmark = mark

    def fileno(self) -> int:
        return self.sock.fileno()

    def sockaddr(self, endpoint: tuple[str, int]):
        cached = self._sockaddrs.get(endpoint)
        if cached is None:
            host, port = endpoint
            if self.family == socket.AF_INET6 and ":" not in host:
                cached = ("::ffff:" + host, port)
            else:
                cached = (host, port)
            if len(self._sockaddrs) > 65536:
                self._sockaddrs.clear()
            self._sockaddrs[endpoint] = cached
        return cached

    def recv_runs(self, limit: int = 16, stop_at: int = 0,
                  stop_prefix: bytes = b"") -> list[tuple[bytes, int, tuple[str, int]]]:
        """What is ready now, at most `limit` system calls' worth, as (data, size, source):
        datagrams of one sender back to back, each `size` bytes but the last (with GRO one
        call may return many; without, each datagram is its own run). `stop_at` > 0 ends
        the batch after a call that returned one datagram of at most that many bytes
        starting with `stop_prefix` (the device: transport data, a ping or an ACK; not
        handshake messages, so a flood of them is still read in batches): it is handled
        before the datagrams behind it, and a lone one costs no call that ends in EAGAIN."""
        out: list[tuple[bytes, int, tuple[str, int]]] = []
        try:
            if self.gro:
                recvmsg = self.sock.recvmsg
                ancsize = self._ancsize
                for _ in range(limit):
                    data, anc, _flags, addr = recvmsg(65535, ancsize)
                    host = addr[0]
                    if host.startswith("::ffff:"):
                        host = host[7:]
                    out.append((data, gro_segment_size(anc) or len(data), (host, addr[1])))
                    if len(data) <= stop_at and data.startswith(stop_prefix):
                        break
            else:
                recv = self.sock.recvfrom
                for _ in range(limit):
                    data, addr = recv(65535)
                    host = addr[0]
                    if host.startswith("::ffff:"):
                        host = host[7:]
                    out.append((data, len(data), (host, addr[1])))
                    if len(data) <= stop_at and data.startswith(stop_prefix):
                        break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in _RECEIVE_REPORTS:
                raise
        return out

    def recv_one(self) -> tuple[bytes, int, tuple[str, int]] | None:
        """One receive call, as recv_runs returns it: (data, size, source), or None when
        nothing is ready or the call reported an earlier send's ICMP error (the device's
        lone-datagram path; recv_runs takes whatever comes after it)."""
        try:
            if self.gro:
                data, anc, _flags, addr = self.sock.recvmsg(65535, self._ancsize)
                size = gro_segment_size(anc) or len(data)
            else:
                data, addr = self.sock.recvfrom(65535)
                size = len(data)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno not in _RECEIVE_REPORTS:
                raise
            return None
        host = addr[0]
        return data, size, (host[7:] if host.startswith("::ffff:") else host, addr[1])

    def send_runs(self, runs: Sequence[tuple[Any, int, Any]]) -> None:
        """Send runs (buffer, size, endpoint): datagrams for one endpoint back to back,
        each `size` bytes but the last; with GSO one system call per run."""
        sendmsg = self.sock.sendmsg
        sendto = self.sock.sendto
        pack = SEGMENT_SIZE.pack
        for buf, size, endpoint in runs:
            address = self.sockaddr(endpoint)
            n = len(buf)
            try:
                if n <= size:
                    sendto(buf, address)
                elif self.gso:
                    try:
                        sendmsg((buf,), ((SOL_UDP, UDP_SEGMENT, pack(size)),), 0, address)
                    except OSError as exc:
                        if exc.errno not in _NO_GSO:
                            raise
                        log.info("UDP GSO send failed (%s): sending one datagram per call",
                                 exc.strerror)
                        self.gso = False
                        for i in range(0, n, size):
                            self.send(buf[i:i + size], endpoint)
                else:
                    for i in range(0, n, size):
                        sendto(buf[i:i + size], address)
            except (BlockingIOError, InterruptedError):
                pass  # socket buffer full: drop like a router
            except OSError as exc:
                if exc.errno not in _UNREACHABLE:
                    raise

    def send(self, datagram: bytes, endpoint: tuple[str, int]) -> None:
        """Send one datagram; a full buffer or an unreachable endpoint drops it."""
        try:
            self.sock.sendto(datagram, self.sockaddr(endpoint))
        except (BlockingIOError, InterruptedError):
            pass  # socket buffer full: drop like a router
        except OSError as exc:
            if exc.errno not in _UNREACHABLE:
                raise

    def close(self) -> None:
        self.sock.close()
