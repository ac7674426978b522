"""Routes in batches, off the control socket's path (issue 9, case 13).

In namespaces: meshwg.netlink.routes.change_routes adds, finds and deletes thousands of
routes (IPv4 and IPv6, the main table or another) through a veth; `meshwg up` takes a
`wg addconf` of one peer with many allowed IPs, answers `wg show` at once, and its route
worker converges the routes to the allowed IPs, to the latest of several changes, also
after the peer is removed; a prefix the kernel routes elsewhere is left alone and added
once it is free and the allowed IPs change.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile

import pytest

from discovery.lab.engines import MeshwgUp
from discovery.lab.netns import Cleanup, Namespace, poll
from discovery.lab.wg import keypair

pytestmark = pytest.mark.netns

CHANGE = r"""
import ipaddress, json, sys
from meshwg.netlink.routes import change_routes
op, name, table, first, count = sys.argv[1:6]
nets = [ipaddress.ip_network((int(ipaddress.ip_address(first)) + i, 32)) for i in range(int(count))]
nets += [ipaddress.ip_network("fd00:77::/64"), ipaddress.ip_network("10.250.0.0/16"),
         ipaddress.ip_network("0.0.0.0/0")]
kw = {"add": nets} if op == "add" else {"delete": nets}
r = change_routes(name, table=int(table), **kw)
print(json.dumps({k: len(getattr(r, k)) for k in ("added", "deleted", "exists", "missing", "failed")}))
"""


def run_change(ns: Namespace, *args) -> dict:
    return json.loads(ns.run_python(CHANGE, *args, timeout=300).stdout.strip().splitlines()[-1])


def count_routes(ns: Namespace, *selector: str) -> int:
    out = ns.run(["ip", "-4", "route", "show", *selector]).stdout + \
        ns.run(["ip", "-6", "route", "show", *selector]).stdout
    return len(out.splitlines())


def test_change_routes_adds_finds_and_deletes_in_batches(lab: Cleanup) -> None:
    ns = Namespace(lab, "rt")
    ns.run(["ip", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])
    ns.run(["ip", "link", "set", "rt0", "up"])
    n = 5000
    for table in ("254", "1234"):
        selector = ("dev", "rt0", "table", table)
        assert run_change(ns, "add", "rt0", table, "10.64.0.0", n) == {
            "added": n + 2, "deleted": 0, "exists": 0, "missing": 0, "failed": 0}
        assert count_routes(ns, *selector) == n + 2          # /0 is left to policy routing
        assert count_routes(ns, *selector, "proto", "boot") == n + 2   # as `ip route add`
        assert "10.64.19.135 dev rt0" in ns.run(
            ["ip", "route", "show", "table", table, "10.64.19.135"]).stdout
        # again: every route is there already, each one answered
        assert run_change(ns, "add", "rt0", table, "10.64.0.0", n)["exists"] == n + 2
        assert run_change(ns, "delete", "rt0", table, "10.64.0.0", n)["deleted"] == n + 2
        assert count_routes(ns, *selector) == 0
        assert run_change(ns, "delete", "rt0", table, "10.64.0.0", 10)["missing"] == 12


def wg_addconf(ns: Namespace, ifname: str, text: str) -> None:
    fd, path = tempfile.mkstemp(prefix="mwroutes-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        ns.run(["wg", "addconf", ifname, path], timeout=300)
    finally:
        os.unlink(path)


def peer_section(public: str, nets: list[str]) -> str:
    lines = [f"[Peer]\nPublicKey = {public}\n"]
    for i in range(0, len(nets), 500):
        lines.append("AllowedIPs = " + ", ".join(nets[i:i + 500]) + "\n")
    return "".join(lines)


def hosts(first: str, count: int) -> list[str]:
    base = int(ipaddress.ip_address(first))
    return [f"{ipaddress.ip_address(base + i)}/32" for i in range(count)]


def test_engine_routes_converge_off_the_control_socket(lab: Cleanup) -> None:
    ns = Namespace(lab, "rtw")
    wg = MeshwgUp(lab, ns, "10.98.0.1/24", listen_port=51820)
    ours = ("dev", wg.ifname, "proto", "boot")
    n = 20_000
    a, b = keypair(), keypair()
    wg_addconf(ns, wg.ifname, peer_section(a.public, hosts("10.64.0.0", n)))
    assert len(wg.wg("show", wg.ifname, "allowed-ips").stdout.split()) == n + 1
    poll(lambda: count_routes(ns, *ours) == n, 120, lambda: f"{n} routes "
         f"({count_routes(ns, *ours)} so far)\n{wg.daemon.output()}", interval=0.2)

    # several changes in a row: the routes end as the last one says
    wg_addconf(ns, wg.ifname, peer_section(b.public, hosts("10.80.0.0", n)))
    wg.wg("set", wg.ifname, "peer", a.public, "remove")
    wg.wg("set", wg.ifname, "peer", b.public, "allowed-ips", "10.90.0.0/24,fd00:90::/64")
    expected = {"10.90.0.0/24", "fd00:90::/64"}

    def routes_are_expected() -> bool:
        out = ns.run(["ip", "-4", "route", "show", *ours]).stdout + \
            ns.run(["ip", "-6", "route", "show", *ours]).stdout
        return {line.split()[0] for line in out.splitlines()} == expected
    poll(routes_are_expected, 120, lambda: f"exactly {expected}\n{wg.daemon.output()}",
         interval=0.2)
    wg.wg("set", wg.ifname, "peer", b.public, "remove")
    poll(lambda: count_routes(ns, *ours) == 0, 60, "no route left", interval=0.2)
    wg.daemon.check_alive()


def test_engine_leaves_a_route_that_exists_elsewhere_until_it_is_free(lab: Cleanup) -> None:
    ns = Namespace(lab, "rte")
    ns.run(["ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1"])
    ns.run(["ip", "link", "set", "other0", "up"])
    ns.run(["ip", "route", "add", "10.55.0.0/24", "dev", "other0"])
    wg = MeshwgUp(lab, ns, "10.98.0.1/24", listen_port=51820)
    peer = keypair()
    wg.wg("set", wg.ifname, "peer", peer.public, "allowed-ips", "10.55.0.0/24,10.56.0.0/24")
    poll(lambda: "10.56.0.0/24" in ns.run(["ip", "route", "show", "dev", wg.ifname]).stdout,
         60, "the free prefix routed")
    assert "10.55.0.0/24" not in ns.run(["ip", "route", "show", "dev", wg.ifname]).stdout
    assert "10.55.0.0/24" in ns.run(["ip", "route", "show", "dev", "other0"]).stdout
    poll(lambda: "routes it elsewhere" in wg.daemon.output(), 30, "the warning")
    ns.run(["ip", "route", "del", "10.55.0.0/24", "dev", "other0"])
    wg.wg("set", wg.ifname, "peer", peer.public, "allowed-ips", "10.55.0.0/24,10.57.0.0/24")
    poll(lambda: "10.55.0.0/24" in ns.run(["ip", "route", "show", "dev", wg.ifname]).stdout,
         60, "the prefix routed once free")
    assert "10.56.0.0/24" not in ns.run(["ip", "route", "show", "dev", wg.ifname]).stdout
