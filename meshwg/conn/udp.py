"""The device's UDP socket: dual-stack, batched receive, endpoints as (host, port).

With offloads (the default; off with offload=False or MESHWG_OFFLOAD=0) the socket uses
UDP GRO on receive (one recvmsg returns many coalesced datagrams and their segment size)
and UDP GSO on send (one sendmsg carries many equal-size datagrams to one endpoint).
Either falls back to one datagram per system call where the kernel refuses it."""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys
from typing import Any, Sequence

from meshwg.tun import offload as _offload

log = logging.getLogger("meshwg.conn")
_BYTEORDER = sys.byteorder

SO_MARK = 36
SOCKET_BUFFER = 7 << 20   # 7 MB, as wireguard-go found pays off
_SEGMENT = struct.Struct("=H")   # the UDP_SEGMENT cmsg value


class BindError(Exception):
    pass


def normalize(sockaddr) -> tuple[str, int]:
    host = sockaddr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, sockaddr[1])


def format_endpoint(endpoint: tuple[str, int] | None) -> str:
    if endpoint is None:
        return "(none)"
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UdpSocket:
    """One UDP socket for IPv4 and IPv6 (an AF_INET6 socket with V6ONLY off, or AF_INET
    where the host has no IPv6)."""

    def __init__(self, port: int = 0, fwmark: int = 0, offload: bool | None = None):
        self.sock = self._bind(port)
        self.family = self.sock.family
        self.port = self.sock.getsockname()[1]
        self.fwmark = 0
        if fwmark:
            self.set_fwmark(fwmark)
        self._sockaddrs: dict[tuple[str, int], tuple] = {}
        if offload is None:
            offload = _offload.offload_enabled_from_env("udp")
        self.offload = offload
        self.gso = offload           # cleared at the first send the kernel refuses
        self.gro = False
        if offload:
            try:
                self.sock.setsockopt(_offload.SOL_UDP, _offload.UDP_GRO, 1)
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
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        for opt in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE (root only)
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
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
        self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
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

    def recv_batch(self, limit: int = 64) -> list[tuple[bytes, tuple[str, int]]]:
        """Datagrams ready now, at most `limit` system calls' worth (with GRO one call may
        return many datagrams of one sender)."""
        if self.gro:
            return self._recv_batch_gro(limit)
        out = []
        recv = self.sock.recvfrom
        try:
            for _ in range(limit):
                data, addr = recv(65535)
                host = addr[0]
                if host.startswith("::ffff:"):
                    host = host[7:]
                out.append((data, (host, addr[1])))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
        return out

    def _recv_batch_gro(self, limit: int) -> list[tuple[bytes, tuple[str, int]]]:
        out: list[tuple[bytes, tuple[str, int]]] = []
        recvmsg = self.sock.recvmsg
        ancsize = self._ancsize
        sol_udp, udp_gro = _offload.SOL_UDP, _offload.UDP_GRO
        try:
            for _ in range(limit):
                data, anc, _flags, addr = recvmsg(65535, ancsize)
                host = addr[0]
                if host.startswith("::ffff:"):
                    host = host[7:]
                source = (host, addr[1])
                size = 0
                for level, kind, value in anc:
                    if level == sol_udp and kind == udp_gro:
                        size = int.from_bytes(value[:4] if len(value) >= 4 else value, _BYTEORDER)
                if size and size < len(data):
                    for i in range(0, len(data), size):
                        out.append((data[i:i + size], source))
                else:
                    out.append((data, source))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
        return out

    def recv_runs(self, limit: int = 16) -> list[tuple[bytes, int, tuple[str, int]]]:
        """What is ready now, at most `limit` system calls' worth, as (data, size, source):
        datagrams of one sender back to back, each `size` bytes but the last (with GRO one
        call may return many; without, each datagram is its own run)."""
        out: list[tuple[bytes, int, tuple[str, int]]] = []
        try:
            if self.gro:
                recvmsg = self.sock.recvmsg
                ancsize = self._ancsize
                sol_udp, udp_gro = _offload.SOL_UDP, _offload.UDP_GRO
                for _ in range(limit):
                    data, anc, _flags, addr = recvmsg(65535, ancsize)
                    host = addr[0]
                    if host.startswith("::ffff:"):
                        host = host[7:]
                    size = 0
                    for level, kind, value in anc:
                        if kind == udp_gro and level == sol_udp:
                            size = int.from_bytes(value[:4] if len(value) >= 4 else value,
                                                  _BYTEORDER)
                    out.append((data, size or len(data), (host, addr[1])))
            else:
                recv = self.sock.recvfrom
                for _ in range(limit):
                    data, addr = recv(65535)
                    host = addr[0]
                    if host.startswith("::ffff:"):
                        host = host[7:]
                    out.append((data, len(data), (host, addr[1])))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
        return out

    def send_runs(self, runs: Sequence[tuple[Any, int, Any]]) -> None:
        """Send runs (buffer, size, endpoint): datagrams for one endpoint back to back,
        each `size` bytes but the last; with GSO one system call per run."""
        sendmsg = self.sock.sendmsg
        sendto = self.sock.sendto
        sol_udp, udp_segment = _offload.SOL_UDP, _offload.UDP_SEGMENT
        pack = _SEGMENT.pack
        for buf, size, endpoint in runs:
            address = self.sockaddr(endpoint)
            n = len(buf)
            try:
                if n <= size:
                    sendto(buf, address)
                elif self.gso:
                    try:
                        sendmsg((buf,), ((sol_udp, udp_segment, pack(size)),), 0, address)
                    except OSError as exc:
                        if exc.errno not in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP,
                                             errno.ENOPROTOOPT, errno.EMSGSIZE):
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
                if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT,
                                     errno.EINVAL, errno.ECONNREFUSED, errno.EPERM,
                                     errno.EADDRNOTAVAIL):
                    raise

    def send_many(self, datagrams: Sequence[tuple[bytes, Any]]) -> None:
        """Send (datagram, endpoint) pairs in order; with GSO, runs of equal-size
        datagrams to one endpoint go out in one system call each."""
        if not self.gso:
            send = self.send
            for datagram, endpoint in datagrams:
                send(datagram, endpoint)
            return
        sendmsg = self.sock.sendmsg
        sol_udp, udp_segment = _offload.SOL_UDP, _offload.UDP_SEGMENT
        pack = struct.Struct("=H").pack
        for endpoint, size, run in _offload.gso_runs(datagrams):
            if len(run) == 1:
                self.send(run[0], endpoint)
                continue
            try:
                sendmsg(run, [(sol_udp, udp_segment, pack(size))], 0, self.sockaddr(endpoint))
            except (BlockingIOError, InterruptedError):
                pass  # socket buffer full: drop like a router
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT,
                                 errno.EMSGSIZE):
                    # this kernel or route cannot segment: from now on one per call
                    log.info("UDP GSO send failed (%s): sending one datagram per call",
                             exc.strerror)
                    self.gso = False
                    for datagram in run:
                        self.send(datagram, endpoint)
                elif exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT,
                                       errno.ECONNREFUSED, errno.EPERM, errno.EADDRNOTAVAIL):
                    raise

    def send(self, datagram: bytes, endpoint: tuple[str, int]) -> None:
        try:
            self.sock.sendto(datagram, self.sockaddr(endpoint))
        except (BlockingIOError, InterruptedError):
            pass  # socket buffer full: drop like a router
        except OSError as exc:
            if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT,
                                 errno.EINVAL, errno.ECONNREFUSED, errno.EPERM, errno.EADDRNOTAVAIL):
                raise

    def close(self) -> None:
        self.sock.close()
