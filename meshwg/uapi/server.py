"""The control socket: serves `wg` get/set requests for one interface on
DIRECTORY/INTERFACE.sock (a Unix stream socket, mode 0600, as wireguard-go's
ipc/uapi_unix.go). Several requests per connection, one thread per connection, all on a
meshwg.util.service.Service: threads block in poll without timeouts (an idle socket costs
nothing) and close() wakes and ends every one of them.

The text of the requests and replies is meshwg.uapi.codec.

Hostile or broken clients are bounded: a request is at most MAX_REQUEST_BYTES and
MAX_REQUEST_LINES and must arrive within REQUEST_TIMEOUT (IDLE_TIMEOUT between requests
on one connection), a reply not taken within SEND_TIMEOUT ends the connection, and close()
is prompt whatever clients do (Service.stop shuts their connections down).
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import socket
import stat
import threading
import time
from typing import Callable

from meshwg.device.api import DeviceStatus, DeviceUpdate
from meshwg.uapi.codec import (DEFAULT_DIRECTORY, ERR_INVALID, ERR_IO, ERR_PROTOCOL, UapiError,
                               format_errno, format_get, parse_set, socket_path)
from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service, StreamReader

log = logging.getLogger("meshwg.uapi")

MAX_LINE = 4096  # longer request lines are a protocol error
RECEIVE_SIZE = 65536
MAX_CONNECTIONS = 1024  # concurrent `wg` clients; more are closed at once
# One set request: 1 M lines (a peer with a million allowed IPs) and 64 MiB at most, all of
# it within REQUEST_TIMEOUT seconds of its first line; more is a protocol error (errno)
MAX_REQUEST_LINES = 1 << 20
MAX_REQUEST_BYTES = 64 << 20
REQUEST_TIMEOUT = 120.0
IDLE_TIMEOUT = 60.0     # seconds a connection may wait between requests
SEND_TIMEOUT = 30.0     # seconds a client may take to read a reply


class UapiServerError(MeshwgError):
    """The control socket could not be set up (one-line message naming the socket)."""


class UapiServer:
    """Serves get/set requests for one interface on DIRECTORY/INTERFACE.sock.

    on_get returns the current DeviceStatus; on_set applies a validated DeviceUpdate and
    may raise UapiError (e.g. ERR_PORT_IN_USE). Requests are serialised by one lock.
    """

    def __init__(self, interface: str, on_get: Callable[[], DeviceStatus],
                 on_set: Callable[[DeviceUpdate], None], directory: str = DEFAULT_DIRECTORY):
        if not interface or "/" in interface or interface in (".", ".."):
            raise UapiServerError(f"invalid interface name for a control socket: {interface!r}")
        self.interface = interface
        self.directory = directory
        self.path = socket_path(interface, directory)
        self._on_get = on_get
        self._on_set = on_set
        self._request_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._service: Service | None = None
        self._inode: tuple[int, int] | None = None

    # lifecycle

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start serving in background threads."""
        if len(os.fsencode(self.path)) >= 108:
            raise UapiServerError(f"{self.path}: path too long for a Unix socket")
        try:
            if not os.path.isdir(self.directory):
                os.makedirs(self.directory, exist_ok=True)
                os.chmod(self.directory, 0o755)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise UapiServerError(f"{self.directory}: cannot create control socket directory: "
                                  f"{exc.strerror or exc}") from None
        try:
            self._bind(listener)
            listener.listen(16)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        service = Service(f"uapi-{self.interface}")
        service.on_close(listener.close)
        with self._state_lock:
            self._service = service
        service.spawn(lambda: service.serve_connections(
            listener, lambda conn, _peer: self._serve(service, conn), limit=MAX_CONNECTIONS,
            name=f"uapi-{self.interface}-conn"), name=f"uapi-{self.interface}")

    def _bind(self, listener: socket.socket) -> None:
        old_umask = os.umask(0o077)
        try:
            try:
                listener.bind(self.path)
            except OSError as exc:
                if exc.errno != _errno.EADDRINUSE:
                    raise UapiServerError(f"{self.path}: cannot bind: {exc.strerror}") from None
                self._remove_stale_socket()
                try:
                    listener.bind(self.path)
                except OSError as exc2:
                    raise UapiServerError(f"{self.path}: cannot bind: {exc2.strerror}") from None
        finally:
            os.umask(old_umask)

    def _remove_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise UapiServerError(f"{self.path}: exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            os.unlink(self.path)  # nobody listens: a leftover of a dead process
            return
        except FileNotFoundError:
            return
        finally:
            probe.close()
        raise UapiServerError(f"{self.path}: another process already serves interface "
                              f"{self.interface!r}")

    def close(self) -> None:
        """Stop serving, close every connection and remove the socket file (idempotent)."""
        with self._state_lock:
            service, self._service = self._service, None
        if service is None:
            return
        service.stop()      # wakes the accept loop and every waiting connection, shuts
                            # down each (ends a reply sent to a client that does not read)
        self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:  # not a successor's socket
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "UapiServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # serving

    def _serve(self, service: Service, conn: socket.socket) -> None:
        conn.settimeout(SEND_TIMEOUT)      # replies are sent whole; reads follow poll
        reader = StreamReader(conn, service, chunk=RECEIVE_SIZE, idle_timeout=IDLE_TIMEOUT)
        try:
            while True:
                reader.deadline = None
                op = reader.readline(MAX_LINE + 1)
                if not op:
                    return
                reader.deadline = time.monotonic() + REQUEST_TIMEOUT
                if op == b"get=1\n":
                    nxt = reader.read(1)
                    if not nxt:
                        return
                    if nxt != b"\n":
                        reply = format_errno(ERR_INVALID)
                    else:
                        reply = self.handle_get()
                elif op == b"set=1\n":
                    lines, ok = self._read_request(reader)
                    reply = self.handle_set(lines) if ok else format_errno(ERR_PROTOCOL)
                    if not ok:
                        conn.sendall(reply.encode())
                        return
                else:
                    log.warning("%s: invalid UAPI operation %r; closing connection",
                                self.path, op[:64])
                    return
                conn.sendall(reply.encode())
        except OSError:
            pass  # client went away, did not read its reply, or close() shut it down

    @staticmethod
    def _read_request(reader: StreamReader) -> tuple[list[str], bool]:
        """Lines up to the blank line (or EOF, which wireguard-go also accepts); not ok
        when a line or the request is too long, or its time is up before its end."""
        lines: list[str] = []
        size = 0
        while True:
            raw = reader.readline(MAX_LINE + 1)
            if not raw:             # complete at the end of the stream, not at a timeout
                return lines, reader.ended
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                return lines, False
            if raw == b"\n":
                return lines, True
            size += len(raw)
            if size > MAX_REQUEST_BYTES or len(lines) >= MAX_REQUEST_LINES:
                log.warning("set request over %d lines or %d bytes: refused, connection "
                            "closed", MAX_REQUEST_LINES, MAX_REQUEST_BYTES)
                return lines, False
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def handle_get(self) -> str:
        """The reply text to one get request."""
        return self._answer("get", lambda: format_get(self._on_get()))

    def handle_set(self, lines: list[str]) -> str:
        """The reply text to one set request (its key=value lines)."""
        def apply() -> str:
            self._on_set(parse_set(lines))
            return format_errno(0)
        return self._answer("set", apply)

    def _answer(self, what: str, work: Callable[[], str]) -> str:
        """work()'s reply, one request at a time: a UapiError answers with its errno, any
        other exception (an engine bug, logged with its traceback) with EIO."""
        with self._request_lock:
            try:
                return work()
            except UapiError as exc:
                log.warning("%s: %s refused: %s", self.path, what, exc)
                return format_errno(exc.errno)
            except Exception:
                log.exception("%s: %s failed", self.path, what)
                return format_errno(ERR_IO)
