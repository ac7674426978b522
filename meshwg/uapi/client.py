"""A client for the control socket, the way `wg` talks to it (used by `meshwg show`/`down`
and by discovery to drive a running interface)."""

from __future__ import annotations

import os
import socket

from meshwg.device.api import DeviceStatus
from meshwg.uapi.codec import DEFAULT_DIRECTORY, UapiError, parse_get, socket_path
from meshwg.util.errors import MeshwgError


class ControlError(MeshwgError):
    """The control socket is missing, unreachable, or refused the request."""


def list_interfaces(directory: str = DEFAULT_DIRECTORY) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".sock"))


def _request(interface: str, text: str, directory: str, timeout: float) -> list[str]:
    path = socket_path(interface, directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        raise ControlError(f"no interface {interface}: {path} does not exist") from None
    except OSError as exc:
        raise ControlError(f"cannot reach {path}: {exc.strerror}") from None
    try:
        sock.sendall(text.encode())
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        sock.close()
    lines = buf.decode().split("\n")
    return [line for line in lines if line]


def get(interface: str, directory: str = DEFAULT_DIRECTORY, timeout: float = 5.0) -> DeviceStatus:
    """The interface's status through a get=1 request; raises ControlError when it is
    unreachable, refuses, or answers something malformed."""
    lines = _request(interface, "get=1\n\n", directory, timeout)
    if not lines or lines[-1] != "errno=0":
        raise ControlError(f"{interface}: get failed ({lines[-1] if lines else 'no answer'})")
    try:
        return parse_get(lines[:-1])
    except UapiError as exc:
        raise ControlError(f"{interface}: malformed get reply: {exc}") from None


def set_(interface: str, lines: list[str], directory: str = DEFAULT_DIRECTORY, timeout: float = 5.0) -> None:
    """Send a set=1 request; raises ControlError when the device refuses it."""
    text = "set=1\n" + "".join(line + "\n" for line in lines) + "\n"
    reply = _request(interface, text, directory, timeout)
    if reply != ["errno=0"]:
        raise ControlError(f"{interface}: set refused ({', '.join(reply) or 'no answer'})")
