"""Members report their host candidates (LAN addresses and port) to the rendezvous.

The report travels inside the WireGuard tunnel to the rendezvous's mesh address, so the
rendezvous knows who sent it from the source address alone: cryptokey routing only lets
a member's packets in with its own mesh address as source. One JSON line over TCP.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Callable

log = logging.getLogger("meshwg.report")

REPORT_PORT_DEFAULT = 5354   # TCP, on the rendezvous's mesh address only
MAX_REPORT = 4096
MAX_CANDIDATES = 16


class ReportError(Exception):
    pass


def parse_candidates(items) -> list[str]:
    """Validate a list of "IP:port" / "[IPv6]:port" strings; raises ValueError."""
    from discovery.enroll.tokens import parse_endpoint
    import ipaddress
    if not isinstance(items, list) or len(items) > MAX_CANDIDATES:
        raise ValueError("candidates must be a list of at most 16 endpoints")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"candidate {item!r} is not a string")
        host, port = parse_endpoint(item)
        ipaddress.ip_address(host)
        out.append(item)
    return out


class CandidateReportServer:
    """Listens on the rendezvous's mesh address; on_report(source_ip, candidates)."""

    def __init__(self, address: str, port: int, on_report: Callable[[str, list[str]], None]):
        self.address = address
        self.requested_port = port
        self.on_report = on_report
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    def start(self) -> "CandidateReportServer":
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.requested_port))
        sock.listen(64)
        sock.settimeout(0.5)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="report-server", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with conn:
                conn.settimeout(2.0)
                try:
                    data = b""
                    while b"\n" not in data and len(data) <= MAX_REPORT:
                        chunk = conn.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    message = json.loads(data.split(b"\n", 1)[0])
                    candidates = parse_candidates(message.get("candidates"))
                    self.on_report(addr[0], candidates)
                    conn.sendall(b'{"ok": true}\n')
                except (OSError, ValueError, AttributeError) as exc:
                    log.info("dropped a malformed candidate report from %s: %s", addr[0], exc)
                    try:
                        conn.sendall(b'{"ok": false}\n')
                    except OSError:
                        pass

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


def send_report(address: str, port: int, candidates: list[str], timeout: float = 3.0) -> None:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(json.dumps({"candidates": candidates}).encode() + b"\n")
            reply = sock.recv(256)
    except OSError as exc:
        raise ReportError(f"cannot report candidates to {address}:{port}: {exc}") from None
    if b'"ok": true' not in reply:
        raise ReportError(f"rendezvous refused the candidate report: {reply!r}")
