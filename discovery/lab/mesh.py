"""The mesh lab: the NAT lab running a real rendezvous and members (``meshwg lab``).

Topology, all in network namespaces (``discovery.lab.netns``, ``discovery.lab.nat``)::

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
``join``) and waits for the mesh to form (``meshwg status --json``); :func:`build_lab`
removes everything afterwards. ``discovery.lab.demo`` prints the proof.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from discovery.lab.engines import meshwg_argv
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import (PID, Cleanup, Daemon, LabError, Namespace, PollTimeout, poll,
                                 unavailable_reason, unique_name)
from discovery.lab.wg import WgView, remove_uapi_socket

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
    wg: WgView = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.wg = WgView(self.ns, self.interface)

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
    netcheck: bool = False     # members run netcheck by themselves (else `join --no-netcheck`:
                               # their NAT kind only from a report the test saved)

    # ---- the rendezvous

    def rendezvous_state(self) -> str:
        return str(self.rendezvous.state_dir)

    def rendezvous_cli(self, *args: str, check: bool = True
                       ) -> subprocess.CompletedProcess[str]:
        """``meshwg ARGS`` against the rendezvous state (run in its namespace)."""
        return self.rendezvous.meshwg(*args, check=check)

    def start_rendezvous(self, *extra: str) -> Daemon:
        """``meshwg rendezvous run [EXTRA...]`` (e.g. ``--no-relay``) in the rendezvous
        namespace; waits for its interface."""
        rv = self.rendezvous
        if rv.daemon is not None and rv.daemon.alive:
            raise LabError("the rendezvous is already running")
        remove_uapi_socket(rv.interface)
        rv.daemon = rv.ns.popen(
            meshwg_argv("rendezvous", "run", "--state", rv.state_dir,
                        "--interval", self.interval, *extra),
            "rendezvous", log_dir=str(rv.log_dir))
        # ready once fully started (DNS-SD, enrollment, signal handling), not just its interface
        poll(lambda: self._interface_ready(rv) and "running" in rv.daemon.stderr(), 30,
             lambda: f"the rendezvous to start\n{rv.daemon.output()}")
        if not rv.public_key:
            rv.public_key = rv.wg.show("public-key").strip()
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

    def join(self, node: Node, token: str | None = None, wait: bool = True,
             extra: tuple[str, ...] = ()) -> Daemon:
        """``meshwg join TOKEN [EXTRA...]`` (or resume from state) in the node's namespace
        (EXTRA: e.g. ``--relay``; ``--dns hosts`` with the namespace's own hosts file:
        Namespace.etc_files, else names stay off)."""
        args = ["join"] + ([token] if token else []) + [
            "--state", node.state_dir, "--interface", node.interface,
            "--listen-port", node.listen_port, "--name", node.label,
            "--interval", self.interval, *([] if self.netcheck else ["--no-netcheck"]),
            "--dns", "off", *extra]         # names on the host: never the machine's /etc/hosts
        remove_uapi_socket(node.interface)
        node.token = token or node.token
        node.daemon = node.ns.popen(meshwg_argv(*args), f"member-{node.label}",
                                    log_dir=str(node.log_dir))
        if wait:
            self.wait_joined(node)
        return node.daemon

    def wait_joined(self, node: Node, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the member's status answers; record its key and mesh address."""
        def joined() -> dict[str, Any] | None:
            if node.daemon is not None:
                node.daemon.check_alive()
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
        """The path a pair should settle on: lan (same NAT), relay (a symmetric NAT: through
        the rendezvous's relay), direct."""
        site_a, site_b = MEMBERS[a][0], MEMBERS[b][0]
        if site_a == site_b:
            return "lan"
        if SITES[site_a][2] == "symmetric" or SITES[site_b][2] == "symmetric":
            return "relay"
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
        """Every pair shows its expected path."""
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

    def add_public_node(self, label: str, address: str, listen_port: int) -> Node:
        """A new host with a public `address` on the internet (no NAT), ready to
        :meth:`join` as a member (e.g. one that offers a relay)."""
        ns = Namespace(self.cleanup, label)
        self.internet.attach(ns, address)
        ns.run(["ip", "route", "add", "default", "via", INTERNET_GATEWAY])
        node = _node(self.cleanup, self.workdir, label, ns, listen_port)
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        return node

    def add_node(self, site: str, label: str, listen_port: int) -> Node:
        """A new host on a site's LAN ready to :meth:`join` (state and logs in the workdir)."""
        ns, address = self.add_host(site, label)
        node = _node(self.cleanup, self.workdir, label, ns, listen_port, self.routers[site],
                     address)
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        return node

    @staticmethod
    def _interface_ready(node: Node) -> bool:
        if node.daemon is not None:
            node.daemon.check_alive()
        node.wg.show()          # LabError ("not yet") until the interface answers
        return True


# ----------------------------------------------------------------------------- building

def _node(cleanup: Cleanup, workdir: Path, label: str, ns: Namespace, port: int,
          router: NatRouter | None = None, lan_address: str | None = None) -> Node:
    interface = unique_name(f"mw{label[:2]}")
    cleanup.push(f"remove socket {interface}", lambda: remove_uapi_socket(interface))
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


def init_rendezvous(lab: MeshLab, host: str = RENDEZVOUS_ADDRESS,
                    run_args: tuple[str, ...] = ()) -> None:
    """``meshwg rendezvous init`` (its endpoint: ``host``, an address or a name, at
    RENDEZVOUS_PORT) and run it (``meshwg rendezvous run RUN_ARGS...``, e.g. ``--no-relay``)."""
    rv = lab.rendezvous
    rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network", MESH_NETWORK,
              "--endpoint", f"{host}:{RENDEZVOUS_PORT}", "--zone", ZONE,
              "--listen-port", RENDEZVOUS_PORT, "--interface", rv.interface)
    lab.start_rendezvous(*run_args)


def start_mesh(lab: MeshLab, timeout: float = 90.0) -> None:
    """Init and run the rendezvous, invite and join every member, wait for the mesh."""
    rv = lab.rendezvous
    init_rendezvous(lab)
    for node in lab.members.values():
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        lab.join(node, lab.invite(), wait=False)
    for node in lab.members.values():
        lab.wait_joined(node)
    rv.mesh_address = lab.dns_server()[0]
    lab.wait_mesh(timeout)


@contextlib.contextmanager
def lab_registry(workdir: str | None = None, prefix: str = "mwlab"
                 ) -> Iterator[tuple[Cleanup, Path]]:
    """(registry, work folder) for a lab, once the machine can run one (LabError why not);
    everything registered, and the folder, is removed on exit, also on exceptions and
    KeyboardInterrupt."""
    reason = unavailable_reason()
    if reason:
        raise LabError(f"cannot build the lab: {reason}")
    cleanup = Cleanup()
    path = Path(workdir or tempfile.mkdtemp(prefix=f"{prefix}{PID}-"))
    cleanup.push(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    try:
        yield cleanup, path
    finally:
        cleanup.close()


@contextlib.contextmanager
def build_lab(symmetric: bool = False, interval: float = DEFAULT_INTERVAL,
              start: bool = True, workdir: str | None = None) -> Iterator[MeshLab]:
    """Build the lab (and, with ``start``, the running mesh); remove everything on exit,
    also on exceptions and KeyboardInterrupt."""
    with lab_registry(workdir) as (cleanup, path):
        lab = build_topology(cleanup, path, symmetric, interval)
        if start:
            start_mesh(lab)
        yield lab


