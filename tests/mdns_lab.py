"""Self-contained LAN lab for the mDNS tests, and the node driver they run inside namespaces.

As a library: :class:`Lan` builds one LAN (a bridge in its own namespace, one namespace per
host on a veth), :class:`Node` runs ``python tests/mdns_lab.py node ...`` inside a host's
namespace (zeroconf binds its sockets in the namespace its process lives in) and follows the
JSON lines it prints.

As a program (``node`` sub-command): runs MdnsAnnouncer + MdnsBrowser sharing one
MdnsService, prints one JSON line per event on stdout and obeys commands read from stdin:
``update`` (update_addresses), ``stop-announcer``, ``counters``, ``quit``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, raising with its stderr on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = f"mwprobe{os.getpid()}"
    if run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "ip netns add failed (no network namespace support)"
    run("ip", "netns", "del", probe, check=False)
    return None


class Lan:
    """One LAN: bridge namespace + host namespaces ``eth0`` 10.77.0.N/24. Delete with close()."""

    SUBNET = "10.77.0"

    def __init__(self, tag: str = "") -> None:
        self.tag = f"{tag}{os.getpid()}"
        self.bridge_ns = f"mwbr{self.tag}"
        self.hosts: dict[str, str] = {}  # label -> namespace
        self.namespaces: list[str] = []
        self._add_ns(self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge",
            "mcast_snooping", "0")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def add_host(self, label: str, host_number: int | None, ipv6: bool = True) -> str:
        """Add a host namespace on the bridge with 10.77.0.<host_number>/24 (None: no IPv4)."""
        ns = f"mw{self.tag}{label}"
        self._add_ns(ns)
        # New interfaces in this namespace skip IPv6 DAD, so link-local addresses work at once.
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        if not ipv6:
            run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        port = f"p{label}"
        run("ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        if host_number is not None:
            run("ip", "-n", ns, "addr", "add", f"{self.SUBNET}.{host_number}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        if host_number is not None:
            run("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts[label] = ns
        return ns

    def link_local(self, label: str) -> str:
        """The IPv6 link-local address of a host's eth0 (waits until it exists)."""
        ns = self.hosts[label]

        def find() -> str | None:
            out = run("ip", "-n", ns, "-6", "-j", "addr", "show", "dev", "eth0", "scope", "link").stdout
            for link in json.loads(out or "[]"):
                for info in link.get("addr_info", []):
                    if not info.get("tentative"):
                        return info["local"]
            return None

        return poll(find, 10, f"link-local address on {ns}")

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def poll(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call fn until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node:
    """The node driver running in one namespace; follows its JSON events."""

    def __init__(self, ns: str, mesh: str, key: bytes, name: str, mesh_address: str, port: int,
                 ipv6: bool = True) -> None:
        self.ns, self.key, self.name = ns, key, name
        cmd = ["ip", "netns", "exec", ns, str(PYTHON), str(Path(__file__).resolve()), "node",
               "--mesh", mesh, "--key", base64.b64encode(key).decode(), "--name", name,
               "--mesh-address", mesh_address, "--port", str(port), "--interface", "eth0"]
        if not ipv6:
            cmd.append("--no-ipv6")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.peers: dict[str, dict] = {}  # latest table, by base64 key
        self.last: dict[str, dict] = {}   # latest event of each kind
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

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait_event(self, kind: str, timeout: float = 15, after: float = 0.0) -> dict:
        """Wait for an event of this kind stamped later than ``after``."""
        def get() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited: {''.join(self._stderr)[-2000:]}")
            with self._lock:
                event = self.last.get(kind)
            return event if event and event["t"] > after else None
        return poll(get, timeout, f"{kind} from {self.name}")

    def wait_peers(self, predicate: Callable[[dict[str, dict]], bool], timeout: float, what: str) -> dict:
        def check() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited: {''.join(self._stderr)[-2000:]}")
            with self._lock:
                table = dict(self.peers)
            return table if predicate(table) else None
        try:
            return poll(check, timeout, f"{self.name}: {what}")
        except AssertionError as exc:
            with self._lock:
                raise AssertionError(f"{exc}; last table: {self.peers}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=8)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

AVAHI_CONFIG = """[server]
host-name={host}
use-ipv4=yes
use-ipv6=yes
allow-interfaces=eth0
enable-dbus=yes
disallow-other-stacks=no
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""


def avahi_unavailable() -> str | None:
    """Why the avahi observer cannot run here, or None."""
    for tool in ("dbus-daemon", "avahi-daemon", "avahi-browse"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


class AvahiObserver:
    """avahi-daemon in a namespace, on a private system bus; browse with avahi-browse.

    The bus is a private dbus-daemon listening on a socket in ``workdir``
    (DBUS_SYSTEM_BUS_ADDRESS points avahi-daemon and avahi-browse at it). avahi-daemon runs
    with a tmpfs on /run inside its own mount namespace (``ip netns exec`` gives one), so its
    pid file and socket never meet the host's.
    """

    def __init__(self, ns: str, workdir: Path, host: str) -> None:
        self.ns = ns
        self.socket = workdir / "bus"
        (workdir / "dbus.conf").write_text(DBUS_CONFIG.format(socket=self.socket))
        (workdir / "avahi.conf").write_text(AVAHI_CONFIG.format(host=host))
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.socket}")
        self.procs: list[subprocess.Popen] = []
        self.log = workdir / "avahi.log"
        self.procs.append(subprocess.Popen(
            ["dbus-daemon", f"--config-file={workdir / 'dbus.conf'}", "--nofork"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        poll(lambda: self.socket.exists(), 10, "private dbus-daemon socket")
        with open(self.log, "w") as log_file:
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "sh", "-c",
                 "mount -t tmpfs none /run && exec avahi-daemon --no-drop-root --no-chroot "
                 f"--no-rlimits -f {workdir / 'avahi.conf'}"],
                env=self.env, stdout=log_file, stderr=subprocess.STDOUT))

        def started() -> bool:
            if self.procs[-1].poll() is not None:
                raise AssertionError(f"avahi-daemon exited: {self.log.read_text()[-2000:]}")
            return "Server startup complete" in self.log.read_text()
        poll(started, 15, "avahi-daemon startup")

    def browse(self, service_type: str) -> list[list[str]]:
        """Resolved entries of ``avahi-browse -rpt``: one field list per '=' line."""
        proc = subprocess.run(["ip", "netns", "exec", self.ns, "avahi-browse", "-rpt", service_type],
                              env=self.env, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError(f"avahi-browse failed: {proc.stderr.strip()}")
        return [line.split(";") for line in proc.stdout.splitlines() if line.startswith("=;")]

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ---------------------------------------------------------------------------------------------
# The node driver (runs inside a namespace)
# ---------------------------------------------------------------------------------------------

def _node_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from discovery.lan.mdns import MdnsAnnouncer, MdnsBrowser, MdnsService

    out_lock = threading.Lock()

    def emit(event: str, **fields: Any) -> None:
        with out_lock:
            print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)

    def on_change(peers: dict) -> None:
        emit("peers", peers=[
            {"pub": base64.b64encode(p.public_key).decode(), "name": p.name, "mesh": p.mesh_id,
             "mesh_address": p.mesh_address, "addresses": p.addresses, "port": p.port}
            for p in peers.values()])

    key = base64.b64decode(args.key)
    service = MdnsService(interfaces=args.interface, ipv6=args.ipv6)
    announcer = MdnsAnnouncer(args.mesh, key, args.name, args.mesh_address, args.port,
                              service=service)
    browser = MdnsBrowser(args.mesh, key, on_change, service=service)
    announcer.start()
    browser.start()
    emit("started", addresses=announcer.addresses)
    for line in sys.stdin:
        command = line.strip()
        if command == "update":
            announcer.update_addresses()
            emit("updated", addresses=announcer.addresses)
        elif command == "stop-announcer":
            announcer.stop()
            emit("announcer-stopped")
        elif command == "counters":
            c = browser.counters
            emit("counters", malformed=c.malformed, other_mesh=c.other_mesh, own=c.own,
                 unresolved=c.unresolved)
        elif command == "quit":
            break
    announcer.stop()
    browser.stop()


def _rogue_main(args: argparse.Namespace) -> None:
    """Publish instances that break our layout; print 'registered'; wait for stdin to close."""
    from zeroconf import ServiceInfo, Zeroconf
    sys.path.insert(0, str(ROOT))
    from discovery.lan.mdns import SERVICE_TYPE, encode_txt

    zc = Zeroconf(interfaces=[args.address])
    key = b"R" * 32
    bad = [
        # pub is not base64
        ("mwg-notbase64", {"v": "1", "pub": "%%%", "mesh": args.mesh, "addr": "100.64.9.1",
                           "name": "rogue1"}),
        # well-formed TXT, but the instance name is not the one derived from mesh and key
        ("mwg-borrowedname", encode_txt(args.mesh, key, "rogue2", "100.64.9.2")),
        # unknown TXT version
        ("mwg-version9", {**encode_txt(args.mesh, b"S" * 32, "rogue3", "100.64.9.3"), "v": "9"}),
    ]
    infos = [ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=4000, properties=txt,
                         server=f"{label}.local.", parsed_addresses=[args.address])
             for label, txt in bad]
    for info in infos:
        zc.register_service(info)
    print(json.dumps({"event": "registered", "t": time.time(), "count": len(infos)}), flush=True)
    sys.stdin.read()
    zc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="announce and browse, JSON events on stdout")
    node.add_argument("--mesh", required=True)
    node.add_argument("--key", required=True, help="base64 public key")
    node.add_argument("--name", required=True)
    node.add_argument("--mesh-address", required=True)
    node.add_argument("--port", type=int, required=True)
    node.add_argument("--interface", action="append", help="interface to use (repeatable)")
    node.add_argument("--no-ipv6", dest="ipv6", action="store_false")
    rogue = sub.add_parser("rogue", help="publish malformed instances")
    rogue.add_argument("--mesh", required=True)
    rogue.add_argument("--address", required=True, help="IPv4 address to bind and announce")
    args = parser.parse_args()
    if args.command == "node":
        _node_main(args)
    else:
        _rogue_main(args)


if __name__ == "__main__":
    main()
