"""WireGuard's cross-platform control protocol, the one `wg` speaks over IFACE.sock.

The I/O-free part (parse_set, format_get) turns request lines into a DeviceUpdate and a
DeviceStatus into reply text. UapiServer is the thin socket layer: one Unix stream socket
per interface, one thread per connection, several requests per connection.

Error codes are negative errno values, as wireguard-go's device/uapi.go and ipc/uapi_unix.go
report them and wireguard-tools' ipc-uapi.h expects ("errno=-22" for an invalid value).
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import re
import socket
import stat
import threading
from typing import Callable

from meshwg.device.api import DeviceStatus, DeviceUpdate, Network, PeerUpdate
from meshwg.util.endpoint import format_endpoint, parse_endpoint
from meshwg.util.prefix import parse_network

log = logging.getLogger("meshwg.uapi")

DEFAULT_DIRECTORY = "/var/run/wireguard"

# The codes wireguard-go sends (ipc/uapi_unix.go).
ERR_IO = -_errno.EIO                   # -5
ERR_PROTOCOL = -_errno.EPROTO          # -71
ERR_INVALID = -_errno.EINVAL           # -22
ERR_PORT_IN_USE = -_errno.EADDRINUSE   # -98
ERR_UNKNOWN = -55                      # ENOANO

MAX_LINE = 4096  # longer request lines are a protocol error

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]+")


class UapiError(Exception):
    """A request that failed; `.errno` is the (negative) value to send back as errno=N."""

    def __init__(self, message: str, errno: int = ERR_INVALID):
        super().__init__(message)
        self.errno = errno


class UapiServerError(Exception):
    """The control socket could not be set up (one-line message naming the socket)."""


# ---------------------------------------------------------------- set: text -> DeviceUpdate

def _hex_key(key: str, value: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        raise UapiError(f"{key}: not a 64-digit hex key: {value!r}")
    return bytes.fromhex(value)


def _uint(key: str, value: str, maximum: int) -> int:
    if not _DIGITS.fullmatch(value) or int(value) > maximum:
        raise UapiError(f"{key}: not a number in 0-{maximum}: {value!r}")
    return int(value)


def _true(key: str, value: str) -> bool:
    if value != "true":
        raise UapiError(f"{key}: only 'true' is allowed, got {value!r}")
    return True


def parse_uapi_endpoint(value: str) -> tuple[str, int]:
    """"IP:port" or "[IPv6]:port" (IP literals only) -> (IP string, port)."""
    try:
        return parse_endpoint(value, ip_only=True)
    except ValueError:
        raise UapiError(f"endpoint: not IP:PORT or [IPv6]:PORT: {value!r}") from None


def _network(key: str, value: str) -> Network:
    try:
        return parse_network(value)
    except ValueError:
        raise UapiError(f"{key}: not a CIDR prefix: {value!r}") from None


def _device_line(update: DeviceUpdate, key: str, value: str) -> None:
    if key == "private_key":
        update.private_key = _hex_key(key, value)
    elif key == "listen_port":
        update.listen_port = _uint(key, value, 0xFFFF)
    elif key == "fwmark":
        update.fwmark = _uint(key, value, 0xFFFFFFFF)
    elif key == "replace_peers":
        update.replace_peers = _true(key, value)
    else:
        raise UapiError(f"invalid device key {key!r}")


def _peer_line(peer: PeerUpdate, key: str, value: str) -> None:
    if key == "remove":
        peer.remove = _true(key, value)
    elif key == "update_only":
        peer.update_only = _true(key, value)
    elif key == "preshared_key":
        peer.preshared_key = _hex_key(key, value)
    elif key == "endpoint":
        peer.endpoint = parse_uapi_endpoint(value)
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive = _uint(key, value, 0xFFFF)
    elif key == "replace_allowed_ips":
        peer.replace_allowed_ips = _true(key, value)
    elif key == "allowed_ip":
        if value.startswith("-"):
            peer.remove_allowed_ips.append(_network(key, value[1:]))
        else:
            peer.allowed_ips.append(_network(key, value))
    elif key == "probe_endpoint":
        # meshwg extension (discovery): send a handshake initiation to this candidate
        # without changing the endpoint; roaming adopts it only if the answer authenticates
        peer.probe_endpoints.append(parse_uapi_endpoint(value))
    elif key == "protocol_version":
        if value != "1":
            raise UapiError(f"protocol_version: only 1 is supported, got {value!r}")
    else:
        raise UapiError(f"invalid peer key {key!r}")


def parse_set(lines: list[str]) -> DeviceUpdate:
    """Validate the key=value lines of a set request (after "set=1"); stops at a blank line.

    Everything is checked before anything is returned, so a request that raises UapiError
    must change nothing.
    """
    update = DeviceUpdate()
    peer: PeerUpdate | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(f"line without '=': {line!r}", ERR_PROTOCOL)
        if key == "public_key":
            peer = PeerUpdate(public_key=_hex_key(key, value))
            update.peers.append(peer)
        elif peer is None:
            _device_line(update, key, value)
        else:
            _peer_line(peer, key, value)
    return update


# ---------------------------------------------------------------- get: DeviceStatus -> text

def format_get(status: DeviceStatus) -> str:
    """The reply to get=1, in wireguard-go's key order, ending "errno=0\\n\\n"."""
    out: list[str] = []
    if status.private_key and any(status.private_key):
        out.append(f"private_key={status.private_key.hex()}")
    if status.listen_port:
        out.append(f"listen_port={status.listen_port}")
    if status.fwmark:
        out.append(f"fwmark={status.fwmark}")
    for peer in status.peers:
        out.append(f"public_key={peer.public_key.hex()}")
        out.append(f"preshared_key={(peer.preshared_key or bytes(32)).hex()}")
        out.append("protocol_version=1")
        if peer.endpoint is not None:
            out.append(f"endpoint={format_endpoint(peer.endpoint)}")
        out.append(f"last_handshake_time_sec={peer.last_handshake_sec}")
        out.append(f"last_handshake_time_nsec={peer.last_handshake_nsec}")
        out.append(f"tx_bytes={peer.tx_bytes}")
        out.append(f"rx_bytes={peer.rx_bytes}")
        out.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        out.extend(f"allowed_ip={net}" for net in peer.allowed_ips)
    out.append("errno=0")
    return "\n".join(out) + "\n\n"


def format_errno(code: int) -> str:
    return f"errno={code}\n\n"


# ---------------------------------------------------------------- the socket server

def socket_path(interface: str, directory: str = DEFAULT_DIRECTORY) -> str:
    return os.path.join(directory, f"{interface}.sock")


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
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._inode: tuple[int, int] | None = None
        self._closing = False

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
        except BaseException:
            listener.close()
            raise
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._listener = listener
        self._closing = False
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"uapi-{self.interface}")
        self._accept_thread.start()

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
        """Stop serving, close every connection and remove the socket file."""
        with self._state_lock:
            if self._listener is None:
                return
            self._closing = True
            listener, self._listener = self._listener, None
            conns = list(self._conns.items())
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for conn, thread in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for conn, thread in conns:
            thread.join(timeout=5)
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

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            with self._state_lock:
                if self._closing:
                    conn.close()
                    return
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                          name=f"uapi-{self.interface}-conn")
                self._conns[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                while True:
                    op = reader.readline(MAX_LINE + 1)
                    if not op:
                        return
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
            pass  # client went away, or close() shut the connection down
        finally:
            with self._state_lock:
                self._conns.pop(conn, None)

    @staticmethod
    def _read_request(reader) -> tuple[list[str], bool]:
        """Lines up to the blank line (or EOF, which wireguard-go also accepts)."""
        lines: list[str] = []
        while True:
            raw = reader.readline(MAX_LINE + 1)
            if not raw:
                return lines, True
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                return lines, False
            if raw == b"\n":
                return lines, True
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def handle_get(self) -> str:
        """The reply text to one get request."""
        with self._request_lock:
            try:
                return format_get(self._on_get())
            except UapiError as exc:
                log.error("%s: get failed: %s", self.path, exc)
                return format_errno(exc.errno)
            except Exception:
                log.exception("%s: get failed", self.path)
                return format_errno(ERR_IO)

    def handle_set(self, lines: list[str]) -> str:
        """The reply text to one set request (its key=value lines)."""
        with self._request_lock:
            try:
                self._on_set(parse_set(lines))
                return format_errno(0)
            except UapiError as exc:
                log.warning("%s: set rejected: %s", self.path, exc)
                return format_errno(exc.errno)
            except Exception:
                log.exception("%s: set failed", self.path)
                return format_errno(ERR_IO)
