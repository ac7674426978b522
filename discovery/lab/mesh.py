"""The NAT lab that proves the mesh (``meshwg lab``, ``make demo``).

Topology, all in network namespaces (``discovery.netns``)::

    rendezvous 198.18.0.10 --+
                             |  fake internet: bridge, 198.18.0.0/15, gateway 198.18.0.1
    NAT1 198.18.1.1 ---------+---- NAT2 198.18.2.1 ---- [NAT3 198.18.3.1, symmetric]
      home LAN 10.1.0.0/24         LAN 10.2.0.0/24        LAN 10.3.0.0/24
      A1 10.1.0.10, A2 10.1.0.11   B 10.2.0.10            C 10.3.0.10

NAT1 and NAT2 rewrite ports (endpoint-independent mapping, ``--to-ports 40000-40100``),
NAT3 maps per destination (``--random-fully``). Every router drops unsolicited inbound
traffic like a home router and does no hairpinning. The rendezvous has a public address
and ``net.ipv4.ip_forward=0``.

The lab runs the real daemons through the CLI (``meshwg rendezvous init/run``, ``invite``,
``join``), waits for the mesh to form (``meshwg status --json``), prints a ping matrix,
every node's status and ``wg show`` endpoints, then removes everything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from discovery.lab import netns
from discovery.lab.netns import Cleanup, Daemon, Internet, NatRouter, Namespace, PollTimeout, poll

INTERNET = "198.18.0.0/15"
INTERNET_GATEWAY = "198.18.0.1"
RENDEZVOUS_ADDRESS = "198.18.0.10"
RENDEZVOUS_PORT = 51820
MESH_NETWORK = "10.99.0.0/24"
ZONE = "mesh.internal."
DEFAULT_INTERVAL = 1.0
# site label -> (public address, LAN, NAT mode)
SITES = {
    "nat1": ("198.18.1.1", "10.1.0.0/24", "rewrite"),
    "nat2": ("198.18.2.1", "10.2.0.0/24", "rewrite"),
    "nat3": ("198.18.3.1", "10.3.0.0/24", "symmetric"),
}
# member label -> (site, listen port)
MEMBERS = {"a1": ("nat1", 51821), "a2": ("nat1", 51822), "b": ("nat2", 51823),
           "c": ("nat3", 51824)}
DIRECT_PATHS = ("lan", "direct")


class LabError(RuntimeError):
    """The lab could not be built or the mesh did not form; one line for the user."""


def meshwg_argv(*args: str) -> list[str]:
    """The meshwg CLI run with this interpreter (works from a checkout or an install)."""
    return [sys.executable, "-m", "meshwg", *[str(a) for a in args]]


# ----------------------------------------------------------------------------- nodes

@dataclass
class Node:
    """One mesh node: its namespace, interface, state directory and daemon."""

    label: str
    ns: Namespace
    interface: str
    listen_port: int
    state_dir: Path
    log_dir: Path
    router: NatRouter | None = None
    lan_address: str | None = None
    daemon: Daemon | None = None
    token: str | None = None
    public_key: str | None = None
    mesh_address: str | None = None

    def meshwg(self, *args: str, check: bool = True, timeout: float = 30.0
               ) -> subprocess.CompletedProcess[str]:
        """Run ``meshwg ARGS`` inside this node's namespace."""
        return self.ns.run(meshwg_argv(*args), check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """``meshwg status --interface IF --json`` of this member."""
        out = self.meshwg("status", "--interface", self.interface, "--json", timeout=15).stdout
        return json.loads(out)

    def peers_by_name(self) -> dict[str, dict[str, Any]]:
        return {p.get("name"): p for p in self.status().get("peers", [])}

    def wg_show(self, what: str) -> dict[str, list[str]]:
        """``wg show IF WHAT`` as public key -> remaining fields."""
        out = self.ns.run(["wg", "show", self.interface, what]).stdout
        rows = (line.split("\t") for line in out.splitlines())
        return {row[0]: row[1:] for row in rows if len(row) >= 2}

    def wg_endpoints(self) -> dict[str, str]:
        """public key -> endpoint text ('(none)' when unknown)."""
        return {key: fields[0] for key, fields in self.wg_show("endpoints").items()}

    def wg_transfer(self) -> dict[str, tuple[int, int]]:
        """public key -> (rx bytes, tx bytes)."""
        return {key: (int(f[0]), int(f[1])) for key, f in self.wg_show("transfer").items()}

    def ping(self, address: str, count: int = 3, wait: float = 1.0, interval: float = 0.2
             ) -> float | None:
        """Average RTT in ms of ``count`` pings, or None when no reply came."""
        proc = self.ns.ping(address, count=count, wait=wait, interval=interval)
        match = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
        return float(match.group(1)) if proc.returncode == 0 and match else None


@dataclass
class MeshLab:
    """A built lab; see the module docstring for the topology."""

    cleanup: Cleanup
    workdir: Path
    internet: Internet
    routers: dict[str, NatRouter]
    rendezvous: Node
    members: dict[str, Node]
    interval: float
    symmetric: bool

    # ---- the rendezvous

    def rendezvous_state(self) -> str:
        return str(self.rendezvous.state_dir)

    def rendezvous_cli(self, *args: str, check: bool = True
                       ) -> subprocess.CompletedProcess[str]:
        """``meshwg ARGS`` against the rendezvous state (run in its namespace)."""
        return self.rendezvous.meshwg(*args, check=check)

    def start_rendezvous(self) -> Daemon:
        """``meshwg rendezvous run`` in the rendezvous namespace; waits for its interface."""
        rv = self.rendezvous
        if rv.daemon is not None and rv.daemon.alive:
            raise LabError("the rendezvous is already running")
        netns.remove_uapi_socket(rv.interface)
        rv.daemon = rv.ns.popen(
            meshwg_argv("rendezvous", "run", "--state", rv.state_dir,
                        "--interval", self.interval),
            "rendezvous", log_dir=str(rv.log_dir))
        # ready once fully started (DNS-SD, enrollment, signal handling), not just its interface
        poll(lambda: self._interface_ready(rv) and "running" in rv.daemon.stderr(), 30,
             lambda: f"the rendezvous to start\n{rv.daemon.output()}")
        if not rv.public_key:
            rv.public_key = rv.ns.run(["wg", "show", rv.interface, "public-key"]).stdout.strip()
        return rv.daemon

    def stop_rendezvous(self) -> int | None:
        """SIGTERM the rendezvous and wait for it to exit; its exit code."""
        daemon = self.rendezvous.daemon
        return daemon.stop() if daemon else None

    def invite(self, reusable: bool = False, expires: str | None = None) -> str:
        """A join token from ``meshwg invite``."""
        args = ["invite", "--state", self.rendezvous_state()]
        if reusable:
            args.append("--reusable")
        if expires:
            args += ["--expires", expires]
        token = self.rendezvous_cli(*args).stdout.strip()
        if not token or "\n" in token:
            raise LabError(f"`meshwg invite` printed {token!r}, expected one line")
        return token

    def remove_member(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.rendezvous_cli("remove", "--state", self.rendezvous_state(), name)

    def dns_server(self) -> tuple[str, int]:
        """(mesh address, port) of the rendezvous's DNS-SD server, from a member's state."""
        for node in self.members.values():
            doc = node.state_dir / "member.json"
            if doc.exists():
                saved = json.loads(doc.read_text())
                return saved["dns_address"], int(saved["dns_port"])
        raise LabError("no member has joined yet, so the DNS-SD address is unknown")

    # ---- members

    def join(self, node: Node, token: str | None = None, wait: bool = True) -> Daemon:
        """``meshwg join TOKEN`` (or resume from state) in the node's namespace."""
        args = ["join"] + ([token] if token else []) + [
            "--state", node.state_dir, "--interface", node.interface,
            "--listen-port", node.listen_port, "--name", node.label,
            "--interval", self.interval]
        netns.remove_uapi_socket(node.interface)
        node.token = token or node.token
        node.daemon = node.ns.popen(meshwg_argv(*args), f"member-{node.label}",
                                    log_dir=str(node.log_dir))
        if wait:
            self.wait_joined(node)
        return node.daemon

    def wait_joined(self, node: Node, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the member's status answers; record its key and mesh address."""
        def joined() -> dict[str, Any] | None:
            if node.daemon is not None and not node.daemon.alive:
                raise LabError(f"member {node.label} exited\n{node.daemon.output()}")
            status = node.status()
            return status if status.get("self", {}).get("mesh_address") else None
        try:
            status = poll(joined, timeout, f"member {node.label} to join")
        except PollTimeout as exc:
            raise LabError(f"{exc}\n{node.daemon.output() if node.daemon else ''}") from None
        node.public_key = status["self"]["public_key"]
        node.mesh_address = status["self"]["mesh_address"]
        return status

    def expected_path(self, a: str, b: str) -> str:
        """The path a pair should settle on: lan (same NAT), none (a symmetric NAT), direct."""
        site_a, site_b = MEMBERS[a][0], MEMBERS[b][0]
        if site_a == site_b:
            return "lan"
        if SITES[site_a][2] == "symmetric" or SITES[site_b][2] == "symmetric":
            return "none"
        return "direct"

    def pairs(self) -> list[tuple[str, str]]:
        labels = list(self.members)
        return [(a, b) for a in labels for b in labels if a != b]

    def mesh_view(self) -> dict[str, dict[str, dict[str, Any]]]:
        """member -> peer name -> its status row (only members, not the rendezvous)."""
        return {label: {name: row for name, row in node.peers_by_name().items()
                        if name in self.members}
                for label, node in self.members.items()}

    def mesh_formed(self) -> bool:
        """Every pair shows its expected path (pairs with a symmetric NAT: listed at all)."""
        view = self.mesh_view()
        for a, b in self.pairs():
            row = view[a].get(b)
            if row is None:
                return False
            expected = self.expected_path(a, b)
            if expected != "none" and row.get("path") != expected:
                return False
        return True

    def wait_mesh(self, timeout: float = 60.0) -> dict[str, dict[str, dict[str, Any]]]:
        """Wait until :meth:`mesh_formed`; LabError naming the pairs that are not there."""
        try:
            poll(self.mesh_formed, timeout, "the mesh to form", interval=0.5)
        except PollTimeout as exc:
            raise LabError(f"{exc}: {self.describe_paths()}") from None
        return self.mesh_view()

    def describe_paths(self) -> str:
        try:
            view = self.mesh_view()
        except Exception as exc:  # noqa: BLE001 - only for an error message
            return f"(status failed: {exc})"
        return "; ".join(f"{a}->{b}: {view[a].get(b, {}).get('path', 'missing')} "
                         f"(want {self.expected_path(a, b)})" for a, b in self.pairs())

    def add_host(self, site: str, tag: str) -> tuple[Namespace, str]:
        """One more (non-member) host on a site's LAN, e.g. an observer."""
        return self.routers[site].add_host(tag)

    # ---- what the demo prints

    def ping_matrix(self, count: int = 3) -> dict[tuple[str, str], float | None]:
        """Each member pings every other member's mesh address (in parallel)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = {(a, b): pool.submit(self.members[a].ping, self.members[b].mesh_address,
                                           count)
                       for a, b in self.pairs()}
            return {pair: future.result() for pair, future in futures.items()}

    def directness(self) -> list[dict[str, Any]]:
        """For each pair: the endpoint ``wg show`` holds and whether it is what a direct
        path needs (the peer's NAT public address, or its LAN address behind the same NAT)."""
        rows = []
        endpoints = {label: node.wg_endpoints() for label, node in self.members.items()}
        for a, b in self.pairs():
            peer = self.members[b]
            endpoint = endpoints[a].get(peer.public_key or "", "(none)")
            host = endpoint.rsplit(":", 1)[0] if endpoint != "(none)" else ""
            expected = self.expected_path(a, b)
            if expected == "lan":
                want = peer.lan_address
            elif expected == "direct":
                want = peer.router.public_address if peer.router else None
            else:
                want = None
            rows.append({"from": a, "to": b, "endpoint": endpoint, "expected": expected,
                         "want_host": want, "ok": want is not None and host == want})
        return rows

    def report(self) -> dict[str, Any]:
        """Everything the demo shows, as one JSON-able document."""
        matrix = self.ping_matrix()
        statuses = {}
        for label, node in self.members.items():
            try:
                statuses[label] = node.status()
            except Exception as exc:  # noqa: BLE001 - shown, not fatal
                statuses[label] = {"error": str(exc)}
        rv = self.rendezvous
        return {
            "ping_ms": {f"{a}->{b}": rtt for (a, b), rtt in matrix.items()},
            "expected_path": {f"{a}->{b}": self.expected_path(a, b) for a, b in self.pairs()},
            "status": statuses,
            "wg_endpoints": {label: node.wg_endpoints() for label, node in
                             [("rendezvous", rv), *self.members.items()]},
            "directness": self.directness(),
            "rendezvous": {"ip_forward": rv.ns.read_sysctl("net.ipv4.ip_forward"),
                           "forwarded_datagrams": rv.ns.forwarded_datagrams()},
            "routers": {name: {"public_address": r.public_address, "mode": r.mode,
                               "lan": str(r.lan)} for name, r in self.routers.items()},
            "members": {label: {"mesh_address": n.mesh_address, "lan_address": n.lan_address,
                                "public_key": n.public_key, "interface": n.interface}
                        for label, n in self.members.items()},
        }

    @staticmethod
    def _interface_ready(node: Node) -> bool:
        if node.daemon is not None and not node.daemon.alive:
            raise LabError(f"{node.label} exited\n{node.daemon.output()}")
        return node.ns.run(["wg", "show", node.interface], check=False).returncode == 0


# ----------------------------------------------------------------------------- probing

_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

_ECHO_CLIENT = """
import socket, sys, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
target, interval = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
def receive():
    while True:
        data = s.recv(2048)
        seq, sent = data.decode().split()
        print(seq, sent, repr(time.time()), flush=True)
threading.Thread(target=receive, daemon=True).start()
seq = 0
while True:
    try:
        s.sendto(f"{seq} {time.time()!r}".encode(), target)
    except OSError:
        pass
    seq += 1
    time.sleep(interval)
"""


class EchoProbe:
    """A continuous UDP echo between two members' mesh addresses, one reply per line.

    Unlike ``ping`` writing to a file (block-buffered), every reply is flushed at once, so
    a test can poll for traffic resuming and measure the gap precisely.
    """

    PORT = 7077

    def __init__(self, source: Node, target: Node, interval: float = 0.05):
        self.server = target.ns.popen([sys.executable, "-c", _ECHO_SERVER, target.mesh_address,
                                       self.PORT], f"echo-server-{target.label}",
                                      log_dir=str(target.log_dir))
        poll(lambda: "ready" in self.server.stdout(), 10,
             lambda: f"echo server on {target.label}\n{self.server.output()}")
        self.client = source.ns.popen([sys.executable, "-c", _ECHO_CLIENT, target.mesh_address,
                                       self.PORT, interval], f"echo-client-{source.label}",
                                      log_dir=str(source.log_dir))
        self.interval = interval

    def replies(self) -> list[tuple[int, float, float]]:
        """(sequence number, sent at, received at) of every reply so far (unix times)."""
        rows = []
        for line in self.client.stdout().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
        return rows

    def replies_sent_after(self, when: float) -> list[tuple[int, float, float]]:
        return [r for r in self.replies() if r[1] > when]

    def gap(self, change_started: float, change_done: float) -> float | None:
        """Seconds from the last reply received before a change started to the first reply
        to a probe sent after it was done (None while traffic has not resumed)."""
        rows = self.replies()
        before = [r[2] for r in rows if r[2] <= change_started]
        after = [r[2] for r in rows if r[1] > change_done]
        if not after:
            return None
        return min(after) - (max(before) if before else change_started)

    def lost(self) -> int:
        rows = self.replies()
        return (max(r[0] for r in rows) + 1 - len(rows)) if rows else 0

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()


# ----------------------------------------------------------------------------- building

def _node(cleanup: Cleanup, workdir: Path, label: str, ns: Namespace, port: int,
          router: NatRouter | None = None, lan_address: str | None = None) -> Node:
    interface = netns.unique_name(f"mw{label[:2]}")
    cleanup.push(f"remove socket {interface}", lambda: netns.remove_uapi_socket(interface))
    return Node(label=label, ns=ns, interface=interface, listen_port=port,
                state_dir=workdir / label / "state", log_dir=workdir / label,
                router=router, lan_address=lan_address)


def build_topology(cleanup: Cleanup, workdir: Path, symmetric: bool = False,
                   interval: float = DEFAULT_INTERVAL) -> MeshLab:
    """Namespaces, bridges, routers and hosts; no daemons yet."""
    internet = Internet(cleanup, INTERNET, INTERNET_GATEWAY)
    rv_ns = Namespace(cleanup, "rdv")
    internet.attach(rv_ns, RENDEZVOUS_ADDRESS)
    rv_ns.run(["ip", "route", "add", "default", "via", INTERNET_GATEWAY])
    rv_ns.sysctl("net.ipv4.ip_forward", 0)
    rendezvous = _node(cleanup, workdir, "rendezvous", rv_ns, RENDEZVOUS_PORT)
    sites = [s for s in SITES if symmetric or SITES[s][2] != "symmetric"]
    routers = {site: NatRouter(cleanup, internet, SITES[site][0], SITES[site][1],
                               SITES[site][2], tag=site) for site in sites}
    members = {}
    for label, (site, port) in MEMBERS.items():
        if site not in routers:
            continue
        ns, address = routers[site].add_host(label)
        members[label] = _node(cleanup, workdir, label, ns, port, routers[site], address)
    return MeshLab(cleanup, workdir, internet, routers, rendezvous, members, interval,
                   symmetric)


def start_mesh(lab: MeshLab, timeout: float = 90.0) -> None:
    """Init and run the rendezvous, invite and join every member, wait for the mesh."""
    rv = lab.rendezvous
    rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network", MESH_NETWORK,
              "--endpoint", f"{RENDEZVOUS_ADDRESS}:{RENDEZVOUS_PORT}", "--zone", ZONE,
              "--listen-port", RENDEZVOUS_PORT, "--interface", rv.interface)
    lab.start_rendezvous()
    for node in lab.members.values():
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        lab.join(node, lab.invite(), wait=False)
    for node in lab.members.values():
        lab.wait_joined(node)
    rv.mesh_address = lab.dns_server()[0]
    lab.wait_mesh(timeout)


@contextlib.contextmanager
def build_lab(symmetric: bool = False, interval: float = DEFAULT_INTERVAL,
              start: bool = True, workdir: str | None = None) -> Iterator[MeshLab]:
    """Build the lab (and, with ``start``, the running mesh); remove everything on exit,
    also on exceptions and KeyboardInterrupt."""
    reason = netns.unavailable_reason()
    if reason:
        raise LabError(f"cannot build the lab: {reason}")
    cleanup = Cleanup()
    path = Path(workdir or tempfile.mkdtemp(prefix=f"mwlab{netns.PID}-"))
    cleanup.push(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    try:
        lab = build_topology(cleanup, path, symmetric, interval)
        if start:
            start_mesh(lab)
        yield lab
    finally:
        cleanup.close()


# ----------------------------------------------------------------------------- printing

def _fmt_rtt(rtt: float | None) -> str:
    return "FAIL" if rtt is None else f"{rtt:.2f} ms"


def format_report(doc: dict[str, Any]) -> str:
    """The human-readable report of :meth:`MeshLab.report`."""
    members = list(doc["members"])
    lines = ["== topology =="]
    for name, r in doc["routers"].items():
        hosts = [f"{m} {doc['members'][m]['lan_address']}" for m in members
                 if MEMBERS[m][0] == name]
        lines.append(f"  {name}: public {r['public_address']} ({r['mode']} NAT), "
                     f"LAN {r['lan']}: {', '.join(hosts)}")
    lines.append(f"  rendezvous: public {RENDEZVOUS_ADDRESS}:{RENDEZVOUS_PORT}, "
                 f"ip_forward={doc['rendezvous']['ip_forward']}, "
                 f"forwarded datagrams={doc['rendezvous']['forwarded_datagrams']}")
    lines.append("")
    lines.append("== ping matrix (row pings column's mesh address) ==")
    width = 12
    lines.append(" " * 6 + "".join(m.ljust(width) for m in members))
    for a in members:
        cells = ["-".ljust(width) if a == b else _fmt_rtt(doc["ping_ms"][f"{a}->{b}"]).ljust(width)
                 for b in members]
        lines.append(a.ljust(6) + "".join(cells))
    lines.append("")
    lines.append("== meshwg status ==")
    for label, status in doc["status"].items():
        if "error" in status:
            lines.append(f"  {label}: status failed: {status['error']}")
            continue
        me = status.get("self", {})
        lines.append(f"  {label} ({me.get('mesh_address')}, {status.get('interface')}, "
                     f"port {me.get('listen_port')}):")
        for p in status.get("peers", []):
            reason = f"  ({p['reason']})" if p.get("reason") else ""
            lines.append(f"    {str(p.get('name')):<12} {str(p.get('mesh_address')):<14} "
                         f"{str(p.get('path')):<11} {str(p.get('endpoint')):<22}{reason}")
    lines.append("")
    lines.append("== wg show endpoints: is each path direct? ==")
    for row in doc["directness"]:
        if row["expected"] == "none":
            verdict = "no direct path expected (symmetric NAT)"
        else:
            where = "its LAN address" if row["expected"] == "lan" else "its NAT's public address"
            verdict = (f"{'OK' if row['ok'] else 'NOT'} {row['expected']}: "
                       f"{row['want_host']} is {where}")
        lines.append(f"  {row['from']:>3} -> {row['to']:<3} endpoint {row['endpoint']:<22} {verdict}")
    return "\n".join(lines)


def verdict(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a report (empty: the mesh is proven)."""
    problems = []
    for key, expected in doc["expected_path"].items():
        if expected != "none" and doc["ping_ms"][key] is None:
            problems.append(f"ping {key} failed")
    problems += [f"{r['from']}->{r['to']} endpoint {r['endpoint']} is not {r['want_host']}"
                 for r in doc["directness"] if r["expected"] != "none" and not r["ok"]]
    if doc["rendezvous"]["forwarded_datagrams"] != 0:
        problems.append("the rendezvous forwarded packets")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``meshwg lab``: build the lab, run the mesh, print the proof, clean up."""
    parser = argparse.ArgumentParser(prog="meshwg lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab running until Ctrl-C (namespaces are listed)")
    parser.add_argument("--symmetric", action="store_true",
                        help="add member C behind a symmetric (--random-fully) NAT")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"daemon update interval in seconds (default {DEFAULT_INTERVAL})")
    args = parser.parse_args(list(argv) if argv is not None else None)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    started = time.monotonic()
    try:
        with build_lab(symmetric=args.symmetric, interval=args.interval) as lab:
            doc = lab.report()
            doc["formed_in_s"] = round(time.monotonic() - started, 2)
            problems = verdict(doc)
            doc["problems"] = problems
            if args.json:
                print(json.dumps(doc, indent=2, sort_keys=True))
            else:
                print(format_report(doc))
                print()
                print("RESULT: " + ("the mesh is direct everywhere it can be"
                                    if not problems else "; ".join(problems)))
            if args.keep:
                print("\nlab running; namespaces: " + ", ".join(
                    [lab.rendezvous.ns.name] + [n.ns.name for n in lab.members.values()])
                    + f"\nstate and logs in {lab.workdir}. Ctrl-C removes everything.",
                    file=sys.stderr, flush=True)
                while True:
                    time.sleep(3600)
            return 1 if problems else 0
    except KeyboardInterrupt:
        print("lab removed", file=sys.stderr)
        return 130 if not args.keep else 0
    except (LabError, netns.NetnsError, PollTimeout) as exc:
        print(f"meshwg lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
