"""The control socket under hostile or broken clients (issue 9, case 9): running out of
file descriptors pauses accepting and serving goes on afterwards; a request that never
ends, trickles or stalls is cut off by its size and time limits without being applied;
close() is prompt whatever clients do. Real Unix sockets in a temp directory; the
descriptor case runs the server in a child process with a low RLIMIT_NOFILE."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from discovery.lab.netns import poll
from meshwg.device.api import DeviceStatus, PeerStatus
from meshwg.uapi import client
from meshwg.uapi import server as uapi_server
from meshwg.uapi.codec import ERR_PROTOCOL, format_errno
from meshwg.uapi.server import UapiServer
from meshwg.util.prefix import parse_network
from tests import REPO

NOFILE = 48      # the child server's descriptor limit

SERVER = r"""
import logging, resource, signal, sys, threading
logging.basicConfig(level=logging.INFO, format="%(message)s")
from meshwg.device.api import DeviceStatus
from meshwg.uapi.server import UapiServer
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
server = UapiServer("mwlim0", lambda: DeviceStatus(None, 4242, 0, []), lambda u: None,
                    directory=sys.argv[1])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server.start()
print("ready", flush=True)
stop.wait()
server.close()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def exhaust_descriptors(path: str, pid: int, limit: int, clients: list) -> None:
    """Idle clients of the Unix socket at `path` until process `pid` has `limit`
    descriptors open, then a few more waiting in its backlog (so its accept() fails with
    EMFILE); each is appended to `clients`, for the caller to close."""
    def fill() -> bool:
        if open_fds(pid) >= limit:
            return True
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
            clients.append(s)
        except OSError:             # backlog full until the server accepts
            s.close()
        return False
    poll(fill, 60, f"process {pid} at its descriptor limit", interval=0.01)
    for _ in range(4):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        clients.append(s)
        try:
            s.connect(path)
        except OSError:
            pass


def test_running_out_of_descriptors_pauses_accepting_then_serves_again(tmp_path) -> None:
    directory = str(tmp_path / "wg")
    log_path = tmp_path / "server.log"
    log_file = open(log_path, "w")
    child = subprocess.Popen([sys.executable, "-c", SERVER, directory, str(NOFILE)],
                             stdout=subprocess.PIPE, stderr=log_file, text=True,
                             cwd=str(REPO))
    clients: list[socket.socket] = []
    try:
        assert child.stdout.readline().strip() == "ready"
        path = os.path.join(directory, "mwlim0.sock")
        exhaust_descriptors(path, child.pid, NOFILE, clients)
        poll(lambda: "pausing accepts" in log_path.read_text(), 30,
             lambda: f"the server's accept failing\n{log_path.read_text()[-2000:]}")
        cpu_before = cpu_seconds(child.pid)
        time.sleep(2)           # a window to measure in, not a wait for anything
        spent = cpu_seconds(child.pid) - cpu_before
        assert spent < 1.0, f"the accept loop spun for want of descriptors ({spent:.2f} s CPU)"

        for s in clients:
            s.close()
        clients.clear()
        status = poll(lambda: client.get("mwlim0", directory, timeout=5), 30,
                      "a get answered once descriptors are free")
        assert status.listen_port == 4242
        assert client.get("mwlim0", directory, timeout=5).listen_port == 4242
    finally:
        for s in clients:
            s.close()
        child.terminate()
        child.communicate(timeout=30)
        log_file.close()
    err = log_path.read_text()
    assert "pausing accepts" in err, err[-2000:]
    assert "accepting connections again" in err, err[-2000:]
    # one warning per spell, not one per failed accept
    assert err.count("pausing accepts") <= 3, err[-2000:]


class Recorder:
    """on_get/on_set of a server whose get reply can be made large."""

    def __init__(self, allowed_ips: int = 0) -> None:
        self.sets = 0
        nets = [parse_network(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32")
                for i in range(allowed_ips)]
        self.peers = [PeerStatus(b"\x01" * 32, None, None, 0, 0, 0, 0, 0, nets)] if nets else []

    def status(self) -> DeviceStatus:
        return DeviceStatus(None, 4242, 0, self.peers)

    def apply(self, update) -> None:
        self.sets += 1


@pytest.fixture
def server(tmp_path):
    recorder = Recorder()
    srv = UapiServer("mwlim1", recorder.status, recorder.apply, directory=str(tmp_path / "wg"))
    srv.start()
    try:
        yield srv, recorder
    finally:
        srv.close()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent until it ended the connection (a reset ends it too: it
    closed with the rest of the request unread)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def reply_to_endless(path: str, head: bytes, body: bytes, pause: float = 0.0) -> bytes:
    """Send `head`, then `body` again and again (every `pause` seconds) on one connection
    until the server ends it; what the server sent back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        stop = threading.Event()

        def endless() -> None:
            try:
                s.sendall(head)
                while not stop.is_set():
                    s.sendall(body)
                    if pause:
                        stop.wait(pause)
            except OSError:
                pass
        sender = threading.Thread(target=endless, daemon=True)
        sender.start()
        try:
            return read_until_closed(s, 60)
        finally:
            stop.set()
            sender.join(30)


def test_a_request_over_the_size_limit_is_refused_unapplied(server, monkeypatch) -> None:
    srv, recorder = server
    monkeypatch.setattr(uapi_server, "MAX_REQUEST_LINES", 5000)
    monkeypatch.setattr(uapi_server, "MAX_REQUEST_BYTES", 200_000)
    for line in (b"listen_port=1\n", b"x" * 1000 + b"=1\n"):     # many lines; many bytes
        reply = reply_to_endless(srv.path, b"set=1\n", line * 1000)
        # the refusal, unless the close with the request's rest unread reset it first
        assert reply in (format_errno(ERR_PROTOCOL).encode(), b"")
    assert recorder.sets == 0
    assert client.get("mwlim1", srv.directory).listen_port == 4242   # others still served


def test_a_trickling_request_is_cut_at_its_deadline_unapplied(server, monkeypatch) -> None:
    srv, recorder = server
    monkeypatch.setattr(uapi_server, "REQUEST_TIMEOUT", 1.0)
    # one line every 0.1 s, never the blank line
    reply = reply_to_endless(srv.path, b"set=1\n", b"listen_port=1\n", pause=0.1)
    assert reply == format_errno(ERR_PROTOCOL).encode()
    assert recorder.sets == 0


def test_a_stalled_request_is_dropped_unapplied_at_the_idle_timeout(server, monkeypatch) -> None:
    srv, recorder = server
    monkeypatch.setattr(uapi_server, "IDLE_TIMEOUT", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(srv.path)
        s.sendall(b"set=1\nlisten_port=7\n")         # and then nothing, connection open
        assert read_until_closed(s, 60) == format_errno(ERR_PROTOCOL).encode()
    assert recorder.sets == 0
    # a request ended by end of stream is whole (wireguard-go accepts it too)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(srv.path)
        s.sendall(b"set=1\nlisten_port=7\n")
        s.shutdown(socket.SHUT_WR)
        assert read_until_closed(s, 60) == format_errno(0).encode()
    assert recorder.sets == 1


def test_close_is_prompt_whatever_clients_do(tmp_path) -> None:
    recorder = Recorder(allowed_ips=30_000)      # a get reply far larger than socket buffers
    srv = UapiServer("mwlim2", recorder.status, recorder.apply, directory=str(tmp_path / "wg"))
    srv.start()
    clients = []
    try:
        for i in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.path)
            clients.append(s)
            if i % 3 == 0:
                s.sendall(b"get=1\n\n")          # and never read the reply
            elif i % 3 == 1:
                s.sendall(b"set=1\nlisten_port=1\n")   # a request that does not end
        poll(lambda: len(os.listdir(f"/proc/{os.getpid()}/task")) > 20, 30,
             "the server's connection threads")
        started = time.monotonic()
        srv.close()
        took = time.monotonic() - started
        assert took < 10, f"close() took {took:.1f} s"
        assert not os.path.exists(srv.path)
        for s in clients:              # every connection was ended by the server
            s.settimeout(30)
            try:
                while s.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
    finally:
        srv.close()
        for s in clients:
            s.close()
