"""The device's UDP socket: dual-stack, batched receive, endpoints as (host, port)."""

from __future__ import annotations

import errno
import socket

SO_MARK = 36
SOCKET_BUFFER = 7 << 20   # 7 MB, as wireguard-go found pays off


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

    def __init__(self, port: int = 0, fwmark: int = 0):
        self.sock = self._bind(port)
        self.family = self.sock.family
        self.port = self.sock.getsockname()[1]
        self.fwmark = 0
        if fwmark:
            self.set_fwmark(fwmark)
        self._sockaddrs: dict[tuple[str, int], tuple] = {}

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
