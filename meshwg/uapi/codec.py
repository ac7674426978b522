"""WireGuard's cross-platform control protocol, the one `wg` speaks over IFACE.sock: the
text, free of I/O.

parse_set turns the lines of a set request into a DeviceUpdate, format_get a DeviceStatus
into the reply to a get request (meshwg.device.api). The socket server is
meshwg.uapi.server, the client meshwg.uapi.client.

Error codes are negative errno values, as wireguard-go's device/uapi.go and ipc/uapi_unix.go
report them and wireguard-tools' ipc-uapi.h expects ("errno=-22" for an invalid value).
"""

from __future__ import annotations

import errno as _errno
import os
import re

from meshwg.core.keys import quoted
from meshwg.device.api import DeviceStatus, DeviceUpdate, Network, PeerStatus, PeerUpdate
from meshwg.util.endpoint import format_endpoint, parse_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.numbers import bounded_int
from meshwg.util.prefix import parse_network

DEFAULT_DIRECTORY = "/var/run/wireguard"

# The codes wireguard-go sends (ipc/uapi_unix.go).
ERR_IO = -_errno.EIO                   # -5
ERR_PROTOCOL = -_errno.EPROTO          # -71
ERR_INVALID = -_errno.EINVAL           # -22
ERR_PORT_IN_USE = -_errno.EADDRINUSE   # -98

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class UapiError(MeshwgError):
    """A request that failed; `.errno` is the (negative) value to send back as errno=N."""

    def __init__(self, message: str, errno: int = ERR_INVALID):
        super().__init__(message)
        self.errno = errno


# ---------------------------------------------------------------- set: text -> DeviceUpdate

def _hex_key(key: str, value: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        raise UapiError(f"{key}: not a 64-digit hex key: {quoted(key, value)}")
    return bytes.fromhex(value)


def _uint(key: str, value: str, maximum: int) -> int:
    number = bounded_int(value, maximum)
    if number is None:
        raise UapiError(f"{key}: not a number in 0-{maximum}: {value!r}")
    return number


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


def parse_get(lines: list[str]) -> DeviceStatus:
    """The reply to get=1 (its key=value lines, without the final errno) back into a
    DeviceStatus: the inverse of format_get, for clients (`meshwg show`, `meshwg status`).
    Unknown keys are skipped (newer peers); raises UapiError for a malformed value."""
    status = DeviceStatus(private_key=None, listen_port=0, fwmark=0, peers=[])
    peer: PeerStatus | None = None
    for line in lines:
        key, _, value = line.partition("=")
        if key == "public_key":
            peer = PeerStatus(public_key=_hex_key(key, value), preshared_key=None, endpoint=None,
                              last_handshake_sec=0, last_handshake_nsec=0, tx_bytes=0,
                              rx_bytes=0, persistent_keepalive=0, allowed_ips=[])
            status.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                status.private_key = _hex_key(key, value)
            elif key in ("listen_port", "fwmark"):
                setattr(status, key, _uint(key, value, 0xFFFFFFFF))
        elif key == "preshared_key":
            psk = _hex_key(key, value)
            peer.preshared_key = psk if any(psk) else None
        elif key == "endpoint":
            peer.endpoint = parse_uapi_endpoint(value)
        elif key == "allowed_ip":
            peer.allowed_ips.append(_network(key, value))
        elif key in ("last_handshake_time_sec", "last_handshake_time_nsec", "tx_bytes",
                     "rx_bytes", "persistent_keepalive_interval"):
            field = {"last_handshake_time_sec": "last_handshake_sec",
                     "last_handshake_time_nsec": "last_handshake_nsec",
                     "persistent_keepalive_interval": "persistent_keepalive"}.get(key, key)
            setattr(peer, field, _uint(key, value, 2 ** 64 - 1))
    return status


def format_errno(code: int) -> str:
    return f"errno={code}\n\n"


# ---------------------------------------------------------------- where the socket lives

def socket_path(interface: str, directory: str = DEFAULT_DIRECTORY) -> str:
    """DIRECTORY/INTERFACE.sock, where `wg` looks for an interface's control socket."""
    return os.path.join(directory, f"{interface}.sock")
