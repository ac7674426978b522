"""The connectivity matrix: member situations with real Linux NAT, paired in cells.

A member situation is one mesh node (a member in its namespace, behind its NAT); a cell is
a pair of nodes. One fake internet, one rendezvous and every node are built once and all
members join at the same moment, so the namespaces and daemons are shared by every cell::

    rendezvous 198.18.0.10 + fd5e:1ab::10 (dual stack, named rdv.matrix.test for members)
    open 198.18.0.20 + fd5e:1ab::20 (dual stack), open2 198.18.0.21   (public addresses)
    v6            fd5e:1ab::30, IPv6 only (no IPv4 at all)
    cone, lan     behind 198.18.1.1  port-rewriting cone, one LAN 10.1.0.0/24
    cone2         behind 198.18.2.1  port-rewriting cone
    keep          behind 198.18.3.1  port-preserving cone
    sym, sym2     behind 198.18.4.1, 198.18.5.1  symmetric (a public port per destination)
    double(2)     behind a home NAT behind a carrier NAT (100.64.x.0/24 between them)
    hp, hp2       two segments of one hairpinning NAT 198.18.8.1 (no mDNS, no routing across)
    nh, nh2       two segments of one NAT 198.18.9.1 that does not hairpin
    blocked       behind 198.18.10.1, which drops all UDP (TCP passes: 443 and enrollment)
    short         behind 198.18.11.1, whose UDP mappings expire after 20 s idle

For each cell the matrix records the time to first packet (from both members' ``meshwg
join`` launched to the first ping reply between their mesh addresses) and the path each
end holds, judged from ``wg show IFACE endpoints`` against the lab's known addresses:
``lan`` (the peer's LAN address, same LAN), ``direct`` (the peer's public address: its own
or its NAT's; or, behind a symmetric NAT, the loopback proxy of the port birthday probing
found, as the member's status file names it), ``relay`` (127.0.0.1, the member's proxy to
a relay). The members run netcheck by themselves (``meshwg join`` without
``--no-netcheck``), so each learns its NAT kind as a user's member does.
:func:`run_matrix` builds, runs and removes it; ``discovery.lab.demo`` prints it and
``tests/discovery/lab/test_matrix.py`` asserts every cell.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from meshwg.core.keys import encode_key
from meshwg.util.endpoint import split_hostport

from discovery.daemons.member_status import status_path
from discovery.lab.mesh import (INTERNET, INTERNET_GATEWAY, RENDEZVOUS_ADDRESS, MeshLab, Node,
                                _node, init_rendezvous, lab_registry)
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.nat_types import (SegmentedRouter, add_ipv6, block_udp, double_nat,
                                     ipv6_only_host, set_udp_timeouts)
from discovery.lab.netns import (Cleanup, Daemon, LabError, Namespace, PollTimeout, ProcessExited,
                                 poll)
from discovery.stores.errors import StateError
from discovery.stores.member import MemberState

RELAY_HOST = "127.0.0.1"          # a relayed peer's endpoint: the member's relay proxy
RENDEZVOUS_NAME = "rdv.matrix.test"   # the members' /etc/hosts: both its addresses
RENDEZVOUS_V6 = "fd5e:1ab::10"
OPEN_V6 = "fd5e:1ab::20"
V6_ONLY = "fd5e:1ab::30"
SHORT_UDP_TIMEOUT = 20            # seconds, the short-mapping NAT's UDP conntrack timeouts
FIRST_PORT = 51830                # members listen on FIRST_PORT, FIRST_PORT + 1, ...

# The situations: label -> what it is (shown in the table)
SITUATIONS = {
    "open": "public address, dual stack (IPv4 + IPv6)",
    "open2": "public address",
    "cone": "port-rewriting cone NAT",
    "cone2": "port-rewriting cone NAT",
    "lan": "same LAN as cone",
    "keep": "port-preserving cone NAT",
    "sym": "symmetric NAT",
    "sym2": "symmetric NAT",
    "double": "double NAT (home + carrier)",
    "double2": "double NAT (home + carrier)",
    "hp": "same NAT as hp2, other segment, hairpinning",
    "hp2": "same NAT as hp, other segment, hairpinning",
    "nh": "same NAT as nh2, other segment, no hairpinning",
    "nh2": "same NAT as nh, other segment, no hairpinning",
    "blocked": "all UDP blocked (TLS relay on TCP 443)",
    "short": f"cone NAT, UDP mappings expire after {SHORT_UDP_TIMEOUT} s",
    "v6": "IPv6 only, public address",
}

# The cells and the path each should settle on, both ends agreeing. Each situation meets
# open, cone and sym, plus sym-sym, double-double and the same-LAN / same-NAT pairs.
# Expected is what main does today; cells other slices of issue 8 will change:
# * symmetric vs an endpoint-independent NAT (cone, keep, double, lan, hp, nh, short):
#   direct by birthday-paradox probing (discovery.traversal.birthday), each member having
#   learnt its NAT kind by its own netcheck (discovery.daemons.netcheck_schedule).
# * blocked: no UDP leaves at all: the member reaches the rendezvous (its tunnel, the
#   directory) and every peer through the rendezvous's relay over TLS on TCP 443.
CELLS: dict[tuple[str, str], str] = {
    ("open", "open2"): "direct",
    ("open", "cone"): "direct",
    ("open", "sym"): "direct",        # the open side answers the symmetric NAT's mapping
    ("cone", "cone2"): "direct",
    ("cone", "sym"): "direct",        # birthday probing
    ("keep", "open"): "direct",
    ("keep", "cone"): "direct",
    ("keep", "sym"): "direct",        # birthday probing
    ("sym", "sym2"): "relay",         # no technique makes two symmetric NATs meet
    ("double", "open"): "direct",
    ("double", "cone"): "direct",
    ("double", "sym"): "direct",      # birthday probing
    ("double", "double2"): "direct",
    ("lan", "cone"): "lan",
    ("lan", "open"): "direct",
    ("lan", "sym"): "direct",         # birthday probing
    ("hp", "hp2"): "direct",          # through the NAT's public address, hairpinned
    ("hp", "open"): "direct",
    ("hp", "cone"): "direct",
    ("hp", "sym"): "direct",          # birthday probing
    ("nh", "nh2"): "relay",           # no hairpin, no route between the segments
    ("nh", "open"): "direct",
    ("nh", "cone"): "direct",
    ("nh", "sym"): "direct",          # birthday probing
    ("blocked", "open"): "relay",     # over TLS on TCP 443: no UDP leaves its network
    ("blocked", "cone"): "relay",
    ("blocked", "sym"): "relay",
    ("short", "open"): "direct",
    ("short", "cone"): "direct",
    ("short", "sym"): "direct",       # birthday probing
    ("v6", "open"): "direct",         # over IPv6 (the dual-stack member's IPv6 candidate)
}


def select(keys: list[str], cells: dict[tuple[str, str], str] = CELLS
           ) -> dict[tuple[str, str], str]:
    """The cells named "A-B" (as :attr:`Cell.key`); LabError naming unknown ones."""
    by_key = {f"{a}-{b}": (a, b) for a, b in cells}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise LabError(f"unknown cell {', '.join(unknown)}; the cells: {', '.join(by_key)}")
    return {by_key[key]: cells[by_key[key]] for key in keys}


@dataclass
class Situation:
    """A member node and what the lab knows of its addresses."""

    node: Node
    public_addresses: tuple[str, ...]    # its own (open) or its outermost NAT's
    lan_network: str | None = None       # the LAN segment it sits on (None: public host)


@dataclass
class Cell:
    """One pair's result: the path each end holds and the time to first packet."""

    a: str
    b: str
    expected: str
    path_ab: str = "none"                # a's endpoint for b, judged
    path_ba: str = "none"
    endpoint_ab: str = "(none)"
    endpoint_ba: str = "(none)"
    first_packet_s: float | None = None  # from both joins launched to the first ping reply
    after_join_s: float | None = None    # from both members joined to the first ping reply
    settled_s: float | None = None       # from both joins launched to path == expected
    ping_ok: bool = False
    status_ab: str = "?"                 # the PATH `meshwg status` of a shows for b
    status_ba: str = "?"

    @property
    def key(self) -> str:
        return f"{self.a}-{self.b}"

    @property
    def path(self) -> str:
        """The cell's path: one label when both ends agree, else both ("direct/relay")."""
        return self.path_ab if self.path_ab == self.path_ba else f"{self.path_ab}/{self.path_ba}"

    @property
    def ok(self) -> bool:
        return self.ping_ok and self.path == self.expected

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.key, "a": self.a, "b": self.b, "expected": self.expected,
                "path": self.path, "endpoint_ab": self.endpoint_ab,
                "endpoint_ba": self.endpoint_ba, "first_packet_s": self.first_packet_s,
                "after_join_s": self.after_join_s,
                "status": (self.status_ab if self.status_ab == self.status_ba
                           else f"{self.status_ab}/{self.status_ba}"),
                "settled_s": self.settled_s, "ping_ok": self.ping_ok, "ok": self.ok}


# ----------------------------------------------------------------------------- building

def _public_host(cleanup: Cleanup, internet: Internet, tag: str, address: str) -> Namespace:
    ns = Namespace(cleanup, tag)
    internet.attach(ns, address)
    ns.run(["ip", "route", "add", "default", "via", INTERNET_GATEWAY])
    return ns


@dataclass
class Matrix:
    """The built lab: the shared mesh (rendezvous, members) and each member's situation."""

    mesh: MeshLab
    situations: dict[str, Situation]
    cells: dict[tuple[str, str], str]
    started_at: float = 0.0              # time.time() when the last join was launched
    joined_s: dict[str, float] = field(default_factory=dict)   # member -> joined, from then
    notes: list[str] = field(default_factory=list)             # what timed out, and why

    def judge(self, a: str, endpoint: str, b: str, birthday: dict[str, str] | None = None
              ) -> str:
        """What a's endpoint for b is: lan, direct, relay, none or "other HOST".
        ``birthday``: a's birthday proxies (peer public key -> "127.0.0.1:PORT", from
        :meth:`birthday_proxies`): that loopback endpoint is a's own socket on the port of
        its symmetric NAT that b's probe reached, so direct; any other is a relay proxy."""
        if endpoint in ("", "(none)"):
            return "none"
        host = split_hostport(endpoint)[0]
        me, peer = self.situations[a], self.situations[b]
        if host == RELAY_HOST:
            found = (birthday or {}).get(peer.node.public_key or "")
            return "direct" if found == endpoint else "relay"
        if host == peer.node.lan_address and me.lan_network == peer.lan_network:
            return "lan"
        if host in peer.public_addresses:
            return "direct"
        return f"other {host}"

    def endpoints(self) -> dict[str, dict[str, str]]:
        """member -> peer public key -> endpoint (``wg show IFACE endpoints``)."""
        out = {}
        for label in {name for pair in self.cells for name in pair}:
            try:
                out[label] = self.situations[label].node.wg.endpoints()
            except LabError:
                out[label] = {}             # busy or not up yet: "none" this round
        return out

    def birthday_proxies(self, label: str) -> dict[str, str]:
        """The member's birthday proxies (peer public key -> "127.0.0.1:PORT"), read from
        its status file (``hard_nat.proxies``; a file, so no process): {} when it has none
        or the file is not there yet."""
        try:
            doc = json.loads(Path(status_path(self.situations[label].node.interface)).read_text())
            return dict((doc.get("hard_nat") or {}).get("proxies") or {})
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def read_paths(self, results: dict[tuple[str, str], Cell]) -> None:
        """Fill every cell's endpoints and paths from one round of ``wg show`` (and the
        members' status files for their birthday proxies)."""
        seen = self.endpoints()
        proxies = {label: self.birthday_proxies(label) for label in seen}
        for (a, b), cell in results.items():
            key_a = self.situations[a].node.public_key or ""
            key_b = self.situations[b].node.public_key or ""
            cell.endpoint_ab = seen[a].get(key_b, "(none)")
            cell.endpoint_ba = seen[b].get(key_a, "(none)")
            cell.path_ab = self.judge(a, cell.endpoint_ab, b, proxies[a])
            cell.path_ba = self.judge(b, cell.endpoint_ba, a, proxies[b])


    def read_status(self, results: dict[tuple[str, str], Cell]) -> None:
        """Fill every cell's PATH labels from each member's ``meshwg status --json`` (one
        Python process per member, so once, at the end): what a user would be told."""
        labels: dict[str, dict[str, str]] = {}
        for label in {name for pair in results for name in pair}:
            try:
                peers = self.situations[label].node.peers_by_name()
            except (LabError, ValueError):
                peers = {}
            labels[label] = {name: str(row.get("path")) for name, row in peers.items()}
        for (a, b), cell in results.items():
            cell.status_ab = labels[a].get(b, "?")
            cell.status_ba = labels[b].get(a, "?")


def build_matrix(cleanup: Cleanup, workdir: Path, cells: dict[tuple[str, str], str] = CELLS,
                 interval: float = 1.0) -> Matrix:
    """Namespaces, routers and hosts of the situations the cells use; no daemons yet."""
    wanted = {name for pair in cells for name in pair}
    internet = Internet(cleanup, INTERNET, INTERNET_GATEWAY)
    rv_ns = _public_host(cleanup, internet, "rdv", RENDEZVOUS_ADDRESS)
    rv_ns.sysctl("net.ipv4.ip_forward", 0)
    add_ipv6(rv_ns, RENDEZVOUS_V6)
    hosts = (f"127.0.0.1 localhost\n{RENDEZVOUS_ADDRESS} {RENDEZVOUS_NAME}\n"
             f"{RENDEZVOUS_V6} {RENDEZVOUS_NAME}\n")
    rendezvous = _node(cleanup, workdir, "rendezvous", rv_ns, 51820)
    routers: dict[str, NatRouter] = {}
    situations: dict[str, Situation] = {}
    ports = iter(range(FIRST_PORT, FIRST_PORT + 100))

    def member(label: str, ns: Namespace, public: str, router: NatRouter | None = None,
               address: str | None = None, lan: str | None = None) -> Node:
        node = _node(cleanup, workdir, label, ns, next(ports), router, address)
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        ns.etc_files({"hosts": hosts})
        situations[label] = Situation(node, (public,), lan)
        return node

    def behind(label: str, router: NatRouter, public: str) -> None:
        ns, address = router.add_host(label)
        member(label, ns, public, router, address, str(router.lan))

    def nat(site: str, number: int, mode: str) -> NatRouter:
        router = NatRouter(cleanup, internet, f"198.18.{number}.1", f"10.{number}.0.0/24",
                           mode, tag=site)
        routers[site] = router
        return router

    for label, address in (("open", "198.18.0.20"), ("open2", "198.18.0.21")):
        if label in wanted:
            member(label, _public_host(cleanup, internet, label, address), address)
    if "open" in wanted:
        add_ipv6(situations["open"].node.ns, OPEN_V6)
        situations["open"].public_addresses += (OPEN_V6,)
    if "v6" in wanted:
        member("v6", ipv6_only_host(cleanup, internet, V6_ONLY, tag="v6"), V6_ONLY)
    if wanted & {"cone", "lan"}:
        router = nat("cone", 1, "rewrite")
        for label in ("cone", "lan"):
            if label in wanted:
                behind(label, router, router.public_address)
    for label, number, mode in (("cone2", 2, "rewrite"), ("keep", 3, "keep"),
                                ("sym", 4, "symmetric"), ("sym2", 5, "symmetric"),
                                ("blocked", 10, "rewrite"), ("short", 11, "rewrite")):
        if label in wanted:
            router = nat(label, number, mode)
            if label == "blocked":
                block_udp(router)          # all UDP: only TCP (443, enrollment) passes
            if label == "short":
                set_udp_timeouts(router, SHORT_UDP_TIMEOUT)
            behind(label, router, router.public_address)
    for label, number in (("double", 6), ("double2", 7)):
        if label in wanted:
            carrier, home = double_nat(cleanup, internet, f"198.18.{number}.1",
                                       f"10.{number}.0.0/24",
                                       carrier_lan=f"100.64.{number}.0/24", tag=f"d{number}")
            routers[label] = home
            behind(label, home, carrier.public_address)
    for first, second, number, hairpin in (("hp", "hp2", 8, True), ("nh", "nh2", 9, False)):
        if not wanted & {first, second}:
            continue
        router = SegmentedRouter(cleanup, internet, f"198.18.{number}.1",
                                 f"10.{number}.0.0/24", f"10.{number}.1.0/24", hairpin,
                                 tag=first)
        routers[first] = router
        for label, segment in ((first, 0), (second, 1)):
            if label not in wanted:
                continue
            ns, address = (router.add_host(label) if segment == 0
                           else router.add_second_host(label))
            lan = str(router.lan if segment == 0 else router.second_lan)
            node = member(label, ns, router.public_address, router, address, lan)
            if hairpin:
                router.hairpin_port(node.listen_port, address)
    members = {label: situations[label].node for label in situations}
    mesh = MeshLab(cleanup, workdir, internet, routers, rendezvous, members, interval,
                   symmetric=False, netcheck=True)
    return Matrix(mesh, situations, dict(cells))


# ----------------------------------------------------------------------------- running

PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from", re.MULTILINE)


class FirstReply:
    """``ping -D -c 1 -w DEADLINE`` from a's namespace to b's mesh address: sends every
    ``interval`` until the first reply, whose wall-clock time it reads from ping's -D
    timestamp. A ping that exits early (no route yet) is started again."""

    def __init__(self, ns: Namespace, address: str, deadline: float, interval: float = 0.1):
        self.ns, self.address, self.interval = ns, address, interval
        self.deadline = deadline             # time.time() after which it gives up
        self.at: float | None = None
        self._proc: Daemon | None = None
        self._start()

    def _start(self) -> None:
        left = max(1, int(self.deadline - time.time()))
        self._proc = self.ns.popen(["ping", "-D", "-n", "-c", 1, "-i", self.interval,
                                    "-W", 1, "-w", left, self.address], name="ping")

    def check(self) -> float | None:
        """The first reply's time.time(), or None while there is none."""
        if self.at is None and self._proc is not None:
            match = PING_REPLY.search(self._proc.stdout())
            if match:
                self.at = float(match.group(1))
            elif not self._proc.alive and time.time() < self.deadline:
                self._start()
        return self.at

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()


def _member_ready(node: Node) -> bool:
    """The member has joined (its state is saved) and its interface holds its address;
    records its public key and mesh address. Cheap: no Python process started."""
    if node.daemon is not None:
        node.daemon.check_alive()
    try:
        state = MemberState.load(node.state_dir)
    except StateError:
        return False                        # not enrolled yet
    address = state.address.split("/")[0]
    shown = node.ns.run(["ip", "-o", "addr", "show", "dev", node.interface], check=False).stdout
    if f" {address}/" not in shown:
        return False
    node.public_key, node.mesh_address = encode_key(state.public_key), address
    return True


def start(matrix: Matrix) -> None:
    """Run the rendezvous, then launch every member's ``meshwg join`` at once (one reusable
    invitation); :func:`measure` waits for them."""
    mesh = matrix.mesh
    init_rendezvous(mesh, RENDEZVOUS_NAME)
    token = mesh.invite(reusable=True)
    for node in mesh.members.values():
        mesh.join(node, token, wait=False)
    matrix.started_at = time.time()


def measure(matrix: Matrix, timeout: float = 120.0) -> dict[tuple[str, str], Cell]:
    """Each cell's time to first packet, then its settled path and a ping over it.

    Waits (polling, up to ``timeout`` seconds per phase) until every cell has its first
    reply and then until every cell's path is the expected one; a cell that does not get
    there keeps what was seen last (the caller reports it). The pings run in parallel."""
    results = {pair: Cell(pair[0], pair[1], expected) for pair, expected in matrix.cells.items()}
    members = matrix.mesh.members
    deadline = time.time() + timeout
    pings: dict[tuple[str, str], FirstReply] = {}

    not_ready: dict[str, str] = {}      # member -> why it is not ready (the last error)

    def first_replies() -> bool:
        """One round: members that joined since, pings for cells whose ends both have."""
        for label, node in members.items():
            if label in matrix.joined_s:
                continue
            try:
                ready = _member_ready(node)
            except ProcessExited:
                raise
            except Exception as exc:  # noqa: BLE001 - not ready yet; kept for the report
                not_ready[label] = repr(exc)
                continue
            if ready:
                matrix.joined_s[label] = round(time.time() - matrix.started_at, 2)
                not_ready.pop(label, None)
        for a, b in results:
            if (a, b) not in pings and a in matrix.joined_s and b in matrix.joined_s:
                pings[(a, b)] = FirstReply(members[a].ns, members[b].mesh_address or "",
                                           deadline)
        return len(pings) == len(results) and all([p.check() for p in pings.values()])
    try:
        poll(first_replies, timeout, "every cell's first ping reply", interval=0.1)
    except PollTimeout as exc:
        matrix.notes.append(str(exc))
        matrix.notes += [f"member {label} never joined: {not_ready.get(label, 'no address')}"
                         for label in members if label not in matrix.joined_s]
    finally:
        for pair, ping in pings.items():
            ping.stop()
            if ping.at is not None:
                since = ping.at - matrix.started_at
                joined = max(matrix.joined_s[name] for name in pair)
                results[pair].first_packet_s = round(since, 2)
                results[pair].after_join_s = round(since - joined, 2)

    def settled() -> bool:
        matrix.read_paths(results)
        now = round(time.time() - matrix.started_at, 2)
        for cell in results.values():
            if cell.settled_s is None and cell.path == cell.expected:
                cell.settled_s = now
        return all(cell.path == cell.expected for cell in results.values())
    try:
        poll(settled, timeout, "every cell's expected path", interval=1.0)
    except PollTimeout as exc:
        matrix.notes.append(str(exc))

    def ping_cell(pair: tuple[str, str]) -> bool:
        a, b = pair
        proc = members[a].ns.ping(members[b].mesh_address or "", count=5, wait=2, interval=0.2)
        return proc.returncode == 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        for pair, ok in zip(results, pool.map(ping_cell, results)):
            results[pair].ping_ok = ok
    matrix.read_paths(results)           # the paths the pings went over
    matrix.read_status(results)
    return results


@contextlib.contextmanager
def built_matrix(cells: dict[tuple[str, str], str] = CELLS, workdir: str | None = None
                 ) -> Iterator[Matrix]:
    """Build the lab and start the mesh; remove everything on exit (also on exceptions and
    KeyboardInterrupt)."""
    with lab_registry(workdir, prefix="mwmatrix") as (cleanup, path):
        matrix = build_matrix(cleanup, path, cells)
        start(matrix)
        yield matrix


def run_matrix(cells: dict[tuple[str, str], str] = CELLS, timeout: float = 120.0
               ) -> dict[str, Any]:
    """Build, start and measure the matrix, then remove it: a JSON-able report."""
    began = time.monotonic()
    with built_matrix(cells) as matrix:
        results = measure(matrix, timeout)
        report = {"cells": [cell.as_dict() for cell in results.values()],
                  "notes": matrix.notes,
                  "situations": {label: {"what": SITUATIONS[label],
                                         "public_addresses": list(s.public_addresses),
                                         "lan_address": s.node.lan_address,
                                         "mesh_address": s.node.mesh_address,
                                         "joined_s": matrix.joined_s.get(label)}
                                 for label, s in matrix.situations.items()}}
    report["total_s"] = round(time.monotonic() - began, 1)
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What is wrong with a matrix report (empty: every cell as expected)."""
    out = []
    for cell in report["cells"]:
        if not cell["ping_ok"]:
            out.append(f"{cell['cell']}: no ping reply")
        if cell["path"] != cell["expected"]:
            out.append(f"{cell['cell']}: path {cell['path']}, expected {cell['expected']} "
                       f"(endpoints {cell['endpoint_ab']} / {cell['endpoint_ba']})")
    return out


def format_table(report: dict[str, Any]) -> str:
    """The situations, then the matrix as a text table: cell, path, expected, time to first
    packet (from the joins launched, and from both joined), when the path was seen, ping,
    and the PATH labels ``meshwg status`` shows on both ends (one when they agree)."""
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"
    lines = [f"{label:<8} {s['what']}" for label, s in report["situations"].items()]
    rows = [("cell", "path", "expected", "first packet", "after join", "path seen", "ping",
             "meshwg status")]
    for cell in report["cells"]:
        rows.append((cell["cell"], cell["path"], cell["expected"],
                     seconds(cell["first_packet_s"]), seconds(cell["after_join_s"]),
                     seconds(cell["settled_s"]), "ok" if cell["ping_ok"] else "FAIL",
                     cell.get("status", "?")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [""] + ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip()
                     for row in rows]
    return "\n".join(lines)
