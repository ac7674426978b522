"""A LAN for the mDNS tests: one bridge, hosts in namespaces, an mDNS member in each.

:class:`Lan` builds the segment (a bridge in its own namespace, each host's ``eth0`` on
it with 10.77.0.N/24 and IPv6 link-local addresses usable at once). :class:`MdnsNode`
runs ``python -m discovery.lab.mdns_agent node ...`` inside a host's namespace (zeroconf
binds its sockets in the namespace its process lives in) and follows the JSON events it
prints; :func:`agent_argv` starts the agent's other programs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any, Callable

from meshwg.core.keys import encode_key

from discovery.lab.netns import Bridge, Cleanup, Namespace, PollTimeout, ProcessExited, poll


def agent_argv(*args: Any) -> list[str]:
    """argv of ``python -m discovery.lab.mdns_agent ARGS`` with this interpreter."""
    return [sys.executable, "-m", "discovery.lab.mdns_agent", *[str(a) for a in args]]


class Lan:
    """One LAN: a bridge namespace and host namespaces (``eth0``, 10.77.0.N/24)."""

    SUBNET = "10.77.0"

    def __init__(self, cleanup: Cleanup) -> None:
        self.cleanup = cleanup
        self.bridge = Bridge(Namespace(cleanup, "lan"))
        self.hosts: dict[str, Namespace] = {}

    def add_host(self, label: str, host_number: int | None, ipv6: bool = True) -> Namespace:
        """A host on the bridge with 10.77.0.<host_number>/24 (None: no IPv4 address) and,
        unless ``ipv6`` is False, an IPv6 link-local address without duplicate detection."""
        ns = Namespace(self.cleanup, label)
        # New interfaces in this namespace skip IPv6 DAD, so link-local addresses work at once.
        ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        if not ipv6:
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        cidr = f"{self.SUBNET}.{host_number}/24" if host_number is not None else None
        self.bridge.attach(ns, cidr)
        if host_number is not None:
            ns.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])
        self.hosts[label] = ns
        return ns

    def link_local(self, label: str) -> str:
        """The IPv6 link-local address of a host's eth0 (waits until it exists)."""
        ns = self.hosts[label]

        def find() -> str | None:
            out = ns.run(["ip", "-6", "-j", "addr", "show", "dev", "eth0", "scope", "link"]).stdout
            for link in json.loads(out or "[]"):
                for info in link.get("addr_info", []):
                    if not info.get("tentative"):
                        return info["local"]
            return None
        return poll(find, 10, f"a link-local address on {ns.name}")


class MdnsNode:
    """The mDNS agent (announcer + browser) running in one namespace; follows its events.

    Events are JSON lines ``{"event": KIND, "t": unix time, ...}``; ``peers`` holds the
    latest peer table by base64 key, ``last`` the latest event of each kind. Commands go
    to its stdin with :meth:`send` (see ``discovery.lab.mdns_agent``).
    """

    def __init__(self, ns: Namespace, mesh: str, key: bytes, name: str, mesh_address: str,
                 port: int, ipv6: bool = True) -> None:
        self.ns, self.key, self.name = ns, key, name
        argv = agent_argv("node", "--mesh", mesh, "--key", encode_key(key), "--name", name,
                          "--mesh-address", mesh_address, "--port", port, "--interface", "eth0",
                          *([] if ipv6 else ["--no-ipv6"]))
        self.proc = subprocess.Popen(ns.argv(argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ns.cleanup.push(f"stop mDNS node {name}", self.close)
        self.peers: dict[str, dict] = {}
        self.last: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if event["event"] == "peers":
                    self.peers = {p["pub"]: p for p in event["peers"]}
                self.last[event["event"]] = event

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ProcessExited(f"mDNS node {self.name} exited: {''.join(self._stderr)[-2000:]}")

    def send(self, command: str) -> None:
        """One command line to the agent (update, stop-announcer, counters, quit)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait_event(self, kind: str, timeout: float = 15, after: float = 0.0) -> dict:
        """The latest event of this kind stamped later than ``after`` (waits for it)."""
        def get() -> dict | None:
            self._check_alive()
            with self._lock:
                event = self.last.get(kind)
            return event if event and event["t"] > after else None
        return poll(get, timeout, f"{kind} from {self.name}")

    def wait_peers(self, predicate: Callable[[dict[str, dict]], bool], timeout: float,
                   what: str) -> dict:
        """The peer table once ``predicate(table)`` holds; PollTimeout shows the last one."""
        def check() -> dict | None:
            self._check_alive()
            with self._lock:
                table = dict(self.peers)
            return table if predicate(table) else None
        try:
            return poll(check, timeout, f"{self.name}: {what}")
        except PollTimeout as exc:
            with self._lock:
                raise PollTimeout(f"{exc}; last table: {self.peers}") from None

    def close(self) -> None:
        """Ask the agent to quit (kill it after 8 s); idempotent."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=8)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
