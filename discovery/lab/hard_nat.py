"""The hard-NAT lab: two members, one behind an endpoint-dependent ("symmetric") NAT and
one behind an endpoint-independent one, with a rendezvous (and its relay) on the fake
internet; for hard-NAT traversal by birthday-paradox probing (discovery.traversal.birthday).

    rendezvous 198.18.0.10 --+-- HARD 198.18.3.1 (symmetric) -- hard 10.3.0.10
                             +-- EASY 198.18.2.1 (keep | rewrite) -- easy 10.2.0.10

Each member's netcheck runs before it joins (``meshwg netcheck --rendezvous ... --json``,
kept in its state directory as ``meshwg netcheck --state`` keeps it), so each knows its NAT
kind. The rendezvous namespace counts the datagrams reaching its relay port (an iptables
rule without a target), to show that a pair no longer uses the relay.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from discovery.lab.mesh import (
    INTERNET, INTERNET_GATEWAY, MESH_NETWORK, RENDEZVOUS_ADDRESS, RENDEZVOUS_PORT, ZONE, MeshLab,
    Node, _node,
)
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import Cleanup, LabError, Namespace, poll
from discovery.netcheck.facts import save_report

RELAY_PORT = RENDEZVOUS_PORT + 1
HARD_SITE = ("198.18.3.1", "10.3.0.0/24")
EASY_SITE = ("198.18.2.1", "10.2.0.0/24")


@dataclass
class HardNatLab:
    mesh: MeshLab
    hard: Node
    easy: Node

    def netcheck(self, node: Node) -> dict:
        """Run netcheck in the member's namespace and keep the report in its state."""
        out = node.meshwg("netcheck", "--rendezvous", f"{RENDEZVOUS_ADDRESS}:{RENDEZVOUS_PORT}",
                          "--json", timeout=30).stdout
        report = json.loads(out)
        node.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_report(node.state_dir, report, time.time())
        return report

    def start_members(self, tokens: dict[str, str] | None = None) -> None:
        """Start both members at once (joining with `tokens` by label, else resuming)."""
        tokens = tokens or {}
        for node in (self.hard, self.easy):
            self.mesh.join(node, tokens.get(node.label), wait=False)
        for node in (self.hard, self.easy):
            self.mesh.wait_joined(node)

    def stop_members(self) -> None:
        for node in (self.hard, self.easy):
            if node.daemon is not None:
                node.daemon.stop()
                node.daemon = None

    def flush_mappings(self) -> None:
        """Forget every NAT mapping on both routers (a fresh start for the next trial)."""
        for node in (self.hard, self.easy):
            node.router.flush_mappings()

    def paths(self) -> tuple[str | None, str | None]:
        """(the hard member's path to the easy one, the easy member's to the hard one)."""
        row_h = self.hard.peers_by_name().get(self.easy.label, {})
        row_e = self.easy.peers_by_name().get(self.hard.label, {})
        return row_h.get("path"), row_e.get("path")

    def wait_direct(self, timeout: float) -> float:
        """Seconds until both ends show a direct path (LabError naming the paths after
        `timeout`)."""
        started = time.monotonic()
        poll(lambda: self.paths() == ("direct", "direct"), timeout,
             lambda: f"a direct path between the hard and the easy member (paths {self.paths()})",
             interval=0.25)
        return time.monotonic() - started

    def endpoint_of(self, node: Node, peer: Node) -> str | None:
        """`node`'s engine endpoint for `peer` ("IP:port"), from `meshwg status`."""
        return node.peers_by_name().get(peer.label, {}).get("endpoint")

    def relay_datagrams(self) -> int:
        """Datagrams that reached the rendezvous's relay port so far."""
        out = self.mesh.rendezvous.ns.run(["iptables", "-nvxL", "INPUT"]).stdout
        for line in out.splitlines():
            if f"dpt:{RELAY_PORT}" in line:
                return int(line.split()[0])
        raise LabError(f"no counting rule for UDP port {RELAY_PORT} in\n{out}")


def build(cleanup: Cleanup, workdir: Path, easy_mode: str = "keep", interval: float = 1.0) -> HardNatLab:
    """The namespaces, the running rendezvous and both members' netcheck reports; the
    members are not started (start_members with the tokens returned in .tokens)."""
    internet = Internet(cleanup, INTERNET, INTERNET_GATEWAY)
    rv_ns = Namespace(cleanup, "rdv")
    internet.attach(rv_ns, RENDEZVOUS_ADDRESS)
    rv_ns.run(["ip", "route", "add", "default", "via", INTERNET_GATEWAY])
    rv_ns.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(RELAY_PORT)])   # counts only
    rendezvous = _node(cleanup, workdir, "rendezvous", rv_ns, RENDEZVOUS_PORT)
    routers = {"hard": NatRouter(cleanup, internet, *HARD_SITE, "symmetric", tag="hardnat"),
               "easy": NatRouter(cleanup, internet, *EASY_SITE, easy_mode, tag="easynat")}
    members = {}
    for label, port in (("hard", 51824), ("easy", 51823)):
        ns, address = routers[label].add_host(label)
        members[label] = _node(cleanup, workdir, label, ns, port, routers[label], address)
    mesh = MeshLab(cleanup, workdir, internet, routers, rendezvous, members, interval, True)
    rendezvous.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rendezvous.meshwg("rendezvous", "init", "--state", rendezvous.state_dir, "--network",
                      MESH_NETWORK, "--endpoint", f"{RENDEZVOUS_ADDRESS}:{RENDEZVOUS_PORT}",
                      "--zone", ZONE, "--listen-port", RENDEZVOUS_PORT, "--interface",
                      rendezvous.interface)
    mesh.start_rendezvous()
    return HardNatLab(mesh, members["hard"], members["easy"])

