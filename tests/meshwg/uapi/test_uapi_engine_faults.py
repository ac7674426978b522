"""The engine's control socket under faults (issue 9, case 9), with `meshwg up` in a
namespace: after the engine ran out of file descriptors (its limit lowered with prlimit
and filled with idle `wg` connections) `wg show` answers again once they are closed; a
request that never ends does not grow the engine without bound, and SIGTERM stops it
while that request and idle clients hang on."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from discovery.lab.engines import MeshwgUp
from discovery.lab.netns import Cleanup, Namespace, poll
from tests.meshwg.uapi.test_uapi_limits import exhaust_descriptors

pytestmark = pytest.mark.netns

NOFILE = 64


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_engine_control_socket_survives_descriptors_and_endless_requests(lab: Cleanup) -> None:
    ns = Namespace(lab, "uf")
    wg = MeshwgUp(lab, ns, "10.98.0.1/24", listen_port=51820)
    pid = wg.daemon.pid
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={NOFILE}:{NOFILE}"], check=True)
    clients: list[socket.socket] = []
    try:
        exhaust_descriptors(str(wg.socket_path), pid, NOFILE, clients)
        poll(lambda: "pausing accepts" in wg.daemon.output(20000), 30,
             lambda: f"the engine's accept failing\n{wg.daemon.output()}")
        for s in clients:
            s.close()
        clients.clear()
        poll(lambda: wg.wg("show", wg.ifname, check=False).returncode == 0, 30,
             "`wg show` answering again")

        # a request that never ends, and idle clients, while SIGTERM comes
        rss_before = rss_kib(pid)
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        clients.append(stream)
        stream.connect(str(wg.socket_path))
        sent = [0]

        def endless() -> None:
            """A set request that never ends, on `stream`."""
            chunk = b"a=1\n" * 50000          # short lines reach the line limit soonest
            try:
                stream.sendall(b"set=1\n")
                while True:
                    stream.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass
        sender = threading.Thread(target=endless, daemon=True)
        sender.start()
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(wg.socket_path))
            clients.append(s)
        poll(lambda: sent[0] >= 1 << 20, 120, "an endless request under way")
        assert wg.wg("show", wg.ifname, check=False).returncode == 0
        # the request is cut at its line limit (MAX_REQUEST_LINES): the sender's pipe breaks
        sender.join(300)
        assert not sender.is_alive(), f"the endless request was not cut ({sent[0]} bytes)"
        assert rss_kib(pid) - rss_before < 300_000, (rss_before, rss_kib(pid))
        stream.close()
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # and another one
        clients.append(stream)
        stream.connect(str(wg.socket_path))
        sent[0] = 0
        sender = threading.Thread(target=endless, daemon=True)
        sender.start()
        poll(lambda: sent[0] >= 1 << 20, 120, "a second endless request under way")
        wg.daemon.signal(15)
        assert wg.daemon.wait(30) == 0, wg.daemon.output()
    finally:
        for s in clients:
            s.close()
