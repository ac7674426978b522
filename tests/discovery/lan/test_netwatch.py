"""Address changes and this host's LAN addresses (discovery/lan/netwatch.py,
discovery/lan/interfaces.py), in a network namespace made for the test."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from tests import REPO

pytestmark = pytest.mark.netns

AGENT = """
import json, sys
from discovery.lan.interfaces import lan_addresses
from discovery.lan.netwatch import AddressWatcher
watcher = AddressWatcher(lambda: print("change", flush=True)).start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "addresses":
        rows = [[ip, str(net), name] for ip, net, name in lan_addresses(exclude=("wt9",))]
        print("addresses " + json.dumps(rows), flush=True)
watcher.stop()
print("stopped", flush=True)
"""


class Agent:
    """The watcher running in namespace `ns`; its output lines arrive on a queue."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", AGENT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=REPO)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = 5.0) -> str:
        """The next line starting with `prefix` (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout} s") from None
            if line.startswith(prefix):
                return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"mwgnw{os.getpid()}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_address_changes_are_reported_and_lan_addresses_listed(ns: str) -> None:
    agent = Agent(ns)
    try:
        agent.expect("ready")
        ip("-n", ns, "link", "add", "wt0", "type", "veth", "peer", "name", "wt9")
        ip("-n", ns, "addr", "add", "10.201.0.1/24", "dev", "wt0")
        ip("-n", ns, "addr", "add", "10.202.0.1/24", "dev", "wt9")      # the "tunnel": excluded
        for dev in ("wt0", "wt9"):      # interfaces that are down are not LAN (issue 9 case 21)
            ip("-n", ns, "link", "set", dev, "up")
        agent.expect("change")
        agent.send("addresses")
        rows = json.loads(agent.expect("addresses")[len("addresses "):])
        assert rows == [["10.201.0.1", "10.201.0.0/24", "wt0"]]
        while not agent.lines.empty():          # the burst above may have woken it twice
            agent.lines.get_nowait()
        ip("-n", ns, "addr", "del", "10.201.0.1/24", "dev", "wt0")
        agent.expect("change")
        began = time.monotonic()
        assert agent.proc.stdin is not None
        agent.proc.stdin.close()
        agent.expect("stopped")
        assert agent.proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 2.0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
