"""The NAT lab (discovery/lab): the mesh proven with real NATs, daemons and clients.

Two module-scoped labs, each built once:

* ``topology``: the lab's namespaces and NAT routers with no meshwg daemon, checked with
  plain tools (ping, conntrack, a wireguard-go pair punching through given the mappings a
  wireguard-go "rendezvous" observed). It shows the lab's NATs behave as the mesh tests
  assume: endpoint-independent port-rewriting NAT1/NAT2, symmetric NAT3, no hairpinning,
  unsolicited inbound dropped.
* ``mesh``: the same topology running the real rendezvous and members through the CLI.
  Tests run in file order; the ones that change the lab for good (renumbering NAT2,
  revoking A2) come last.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.avahi import AvahiObserver, avahi_unavailable
from discovery.lab.engines import WireguardGo, meshwg_argv
from discovery.lab.nat import PORT_RANGE, NatRouter
from discovery.lab.netns import Cleanup, change_host_address, poll, unavailable_reason, unique_name
from discovery.lab.traffic import EchoProbe
from discovery.lab.wg import PeerConfig, remove_uapi_socket
from discovery.enroll.tokens import decode_token, encode_token

pytestmark = pytest.mark.netns

PORT_LOW, PORT_HIGH = (int(p) for p in PORT_RANGE.split("-"))
MESH_TOOLS = ("ip", "iptables", "conntrack", "ping", "wg", "dig")


def _skip_unless_lab(tools: tuple[str, ...] = MESH_TOOLS) -> None:
    reason = unavailable_reason(tools)
    if reason:
        pytest.skip(reason)


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


# =============================================================================================
# The topology with plain tools
# =============================================================================================

@pytest.fixture(scope="module")
def topology():
    _skip_unless_lab(("ip", "iptables", "conntrack", "ping", "wg", "wireguard-go"))
    with Cleanup() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="mwtopo"))
        cleanup.push("workdir", lambda: shutil.rmtree(workdir, ignore_errors=True))
        yield mesh_lab.build_topology(cleanup, workdir, symmetric=True), cleanup


UDP_SEND = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
            "for host in sys.argv[2:]: s.sendto(b'probe', (host, 9))\n")


def _mappings(router: NatRouter, local_port: int) -> dict[str, int]:
    """destination -> public port the router mapped local_port to."""
    return {m["dst"]: int(m["rdport"]) for m in router.udp_mappings()
            if m.get("sport") == str(local_port)}


def test_topology_nat_mappings_rewrite_ports_independent_of_destination(topology) -> None:
    lab, _ = topology
    destinations = [mesh_lab.RENDEZVOUS_ADDRESS, lab.routers["nat2"].public_address]
    a1, c = lab.members["a1"], lab.members["c"]
    for node in (a1, c):
        node.ns.run([sys.executable, "-c", UDP_SEND, "47001", *destinations])
    nat1 = _mappings(lab.routers["nat1"], 47001)
    assert set(nat1) == set(destinations)
    ports = set(nat1.values())
    assert len(ports) == 1, f"NAT1 mapped one socket to several public ports: {nat1}"
    assert all(PORT_LOW <= p <= PORT_HIGH and p != 47001 for p in ports), nat1
    nat3 = _mappings(lab.routers["nat3"], 47001)
    assert set(nat3) == set(destinations)
    assert len(set(nat3.values())) == 2, f"NAT3 should map per destination: {nat3}"


def test_topology_lan_and_internet_reachability_no_hairpin(topology) -> None:
    lab, _ = topology
    a1, a2, b = lab.members["a1"], lab.members["a2"], lab.members["b"]
    for node in lab.members.values():
        assert node.ns.ping(mesh_lab.RENDEZVOUS_ADDRESS).returncode == 0, node.label
    assert a1.ns.ping(a2.lan_address).returncode == 0
    # Unsolicited inbound is dropped by the home-router filter: the rendezvous cannot ping
    # a NAT's public address, and B cannot ping A1's LAN address at all.
    assert lab.rendezvous.ns.ping(lab.routers["nat1"].public_address).returncode != 0
    assert b.ns.ping(a1.lan_address).returncode != 0
    assert lab.rendezvous.ns.read_sysctl("net.ipv4.ip_forward") == "0"


def test_topology_wireguard_go_pair_punches_rewriting_nats_not_symmetric(topology) -> None:
    lab, cleanup = topology
    rv_ns = lab.rendezvous.ns
    registry = WireguardGo(cleanup, rv_ns, "10.98.0.1/24", 51820)
    addresses = {"a1": "10.98.0.2", "a2": "10.98.0.3", "b": "10.98.0.4", "c": "10.98.0.5"}
    nodes = {label: WireguardGo(cleanup, lab.members[label].ns, f"{address}/24", 51002 + i)
             for i, (label, address) in enumerate(addresses.items())}
    for label, node in nodes.items():
        node.set_peer(PeerConfig(registry.public_key, ["10.98.0.1/32"],
                                 f"{mesh_lab.RENDEZVOUS_ADDRESS}:51820", persistent_keepalive=1))
        registry.set_peer(PeerConfig(node.public_key, [f"{addresses[label]}/32"]))
    poll(lambda: all(registry.latest_handshakes()[n.public_key] > 0 for n in nodes.values()), 15,
         "every wireguard-go node to handshake with the registry")
    # The mappings the registry observed (what a rendezvous would publish).
    seen = {label: registry.endpoints()[node.public_key] for label, node in nodes.items()}
    for label in ("a1", "a2"):
        host, port = _split_endpoint(seen[label])
        assert host == lab.routers["nat1"].public_address and PORT_LOW <= port <= PORT_HIGH
    a1, a2, b, c = nodes["a1"], nodes["a2"], nodes["b"], nodes["c"]
    # A1 <-> B given each other's mapping: both send at once, the handshake completes.
    a1.set_peer(PeerConfig(b.public_key, ["10.98.0.4/32"], seen["b"]))
    b.set_peer(PeerConfig(a1.public_key, ["10.98.0.2/32"], seen["a1"]))
    a1_ping = lab.members["a1"].ns.popen(["ping", "-c", "10", "-i", "0.2", "10.98.0.4"], "p1")
    b.ns.run(["ping", "-c", "10", "-i", "0.2", "-W", "1", "10.98.0.2"], check=False, timeout=30)
    a1_ping.wait(30)
    assert b.latest_handshakes()[a1.public_key] > 0 and a1.latest_handshakes()[b.public_key] > 0
    assert _split_endpoint(b.endpoints()[a1.public_key])[0] == lab.routers["nat1"].public_address
    # No hairpinning: A2 given A1's public mapping gets nowhere.
    a2.set_peer(PeerConfig(a1.public_key, ["10.98.0.2/32"], seen["a1"]))
    a1.set_peer(PeerConfig(a2.public_key, ["10.98.0.3/32"], seen["a2"]))
    assert lab.members["a2"].ns.ping("10.98.0.2", count=3, wait=1).returncode != 0
    assert a2.latest_handshakes()[a1.public_key] == 0
    # Symmetric NAT3: C and B given the mappings the registry saw never handshake.
    c.set_peer(PeerConfig(b.public_key, ["10.98.0.4/32"], seen["b"]))
    b.set_peer(PeerConfig(c.public_key, ["10.98.0.5/32"], seen["c"]))
    assert lab.members["c"].ns.ping("10.98.0.4", count=3, wait=1).returncode != 0
    assert c.latest_handshakes()[b.public_key] == 0


# =============================================================================================
# The mesh: real rendezvous and members through the CLI
# =============================================================================================

@pytest.fixture(scope="module")
def mesh():
    _skip_unless_lab()
    with mesh_lab.build_lab(symmetric=True) as lab:
        yield lab


def _key(lab: mesh_lab.MeshLab, label: str) -> str:
    key = lab.members[label].public_key
    assert key, f"{label} has no public key recorded"
    return key


def test_mesh_nat_to_nat_is_direct_and_rendezvous_forwards_nothing(mesh) -> None:
    lab = mesh
    a1, a2, b = lab.members["a1"], lab.members["a2"], lab.members["b"]
    nat1, nat2 = lab.routers["nat1"], lab.routers["nat2"]
    b_endpoints = b.wg.endpoints()
    for member in (a1, a2):
        host, port = _split_endpoint(b_endpoints[_key(lab, member.label)])
        assert host == nat1.public_address, f"B's endpoint for {member.label}: {host}:{port}"
        assert PORT_LOW <= port <= PORT_HIGH, f"port {port} not in the rewritten range"
        assert host != member.lan_address
    assert _split_endpoint(a1.wg.endpoints()[_key(lab, "b")])[0] == nat2.public_address
    assert b.peers_by_name()["a1"]["path"] == "direct"
    assert a1.peers_by_name()["b"]["path"] == "direct"

    rv = lab.rendezvous
    assert rv.ns.read_sysctl("net.ipv4.ip_forward") == "0"
    forwarded0 = rv.ns.forwarded_datagrams()
    uplink0 = rv.ns.link_stats("eth0")["rx_bytes"]
    rv_transfer0 = rv.wg.transfer()
    count, size = 200, 1000
    result = a1.ns.ping(b.mesh_address, count=count, interval=0.01, wait=1, size=size)
    received = int(re.search(r"(\d+) received", result.stdout).group(1))
    assert received >= count * 0.95, result.stdout
    burst = received * (size + 28) * 2  # echo requests + replies
    assert rv.ns.forwarded_datagrams() - forwarded0 == 0
    uplink_delta = rv.ns.link_stats("eth0")["rx_bytes"] - uplink0
    assert uplink_delta < burst / 10, f"rendezvous uplink got {uplink_delta} bytes during " \
                                      f"a {burst}-byte A1<->B burst"
    rv_transfer = rv.wg.transfer()
    for label in ("a1", "b"):
        key = _key(lab, label)
        rx = rv_transfer[key][0] - rv_transfer0[key][0]
        assert rx < burst / 10, f"rendezvous tunnel received {rx} bytes from {label}"


def test_mesh_lan_pair_uses_lan_addresses_and_survives_rendezvous_outage(mesh) -> None:
    lab = mesh
    a1, a2 = lab.members["a1"], lab.members["a2"]
    assert a1.wg.endpoints()[_key(lab, "a2")] == f"{a2.lan_address}:{a2.listen_port}"
    assert a2.wg.endpoints()[_key(lab, "a1")] == f"{a1.lan_address}:{a1.listen_port}"
    assert a1.peers_by_name()["a2"]["path"] == "lan"
    assert lab.stop_rendezvous() == 0, lab.rendezvous.daemon.output()
    try:
        started = time.monotonic()
        result = a1.ns.ping(a2.mesh_address, count=80, interval=0.2, wait=1)
        elapsed = time.monotonic() - started
        assert elapsed > 15
        assert result.returncode == 0 and " 0% packet loss" in result.stdout, result.stdout
        assert a1.peers_by_name()["a2"]["path"] == "lan"
    finally:
        lab.start_rendezvous()


def _dig(lab: mesh_lab.MeshLab, node: mesh_lab.Node, name: str, rdtype: str,
         timeout: int = 2) -> subprocess.CompletedProcess[str]:
    server, port = lab.dns_server()
    return node.ns.run(["dig", f"@{server}", "-p", port, name, rdtype, "+noall", "+answer",
                        "+additional", f"+time={timeout}", "+tries=1"], check=False,
                       timeout=timeout + 10)


def _rows(dig_output: str, rdtype: str) -> list[list[str]]:
    """Records of one type in dig's +answer/+additional output: [name, ttl, IN, TYPE, ...]."""
    rows = [line.split() for line in dig_output.splitlines() if not line.startswith(";")]
    return [row for row in rows if len(row) > 4 and row[3] == rdtype]


def _ptr_targets(lab: mesh_lab.MeshLab, node: mesh_lab.Node) -> list[str]:
    out = _dig(lab, node, f"_wireguard._udp.{mesh_lab.ZONE}", "PTR").stdout
    return [row[4] for row in _rows(out, "PTR")]


def test_mesh_rendezvous_restart_keeps_links_and_serves_directory_again(mesh) -> None:
    lab = mesh
    a1, a2, b = lab.members["a1"], lab.members["a2"], lab.members["b"]
    assert lab.stop_rendezvous() == 0
    try:
        assert _dig(lab, a1, f"_wireguard._udp.{mesh_lab.ZONE}", "PTR").returncode != 0, \
            "the directory still answers with the rendezvous stopped"
        for target in (a2, b):
            result = a1.ns.ping(target.mesh_address, count=10, interval=0.2)
            assert result.returncode == 0 and " 0% packet loss" in result.stdout, result.stdout
    finally:
        lab.start_rendezvous()
    members = {base64.b32encode(base64.b64decode(_key(lab, m))).decode().lower()
               for m in ("a1", "a2", "b")}
    poll(lambda: members <= {t.split(".")[0].lower() for t in _ptr_targets(lab, a1)}, 30,
         "the restarted rendezvous to list A1, A2 and B again")
    assert a1.ping(b.mesh_address) is not None


def test_mesh_dig_from_member_sees_wgsd_layout(mesh) -> None:
    lab = mesh
    a1, b = lab.members["a1"], lab.members["b"]
    server, _ = lab.dns_server()
    route = a1.ns.run(["ip", "route", "get", server]).stdout
    assert f"dev {a1.interface}" in route, f"query would not go through the tunnel: {route}"
    b_label = base64.b32encode(base64.b64decode(_key(lab, "b"))).decode().lower()
    targets = poll(lambda: [t for t in _ptr_targets(lab, a1) if t.lower().startswith(b_label)],
                   15, "a PTR record for B")
    instance = targets[0]
    assert instance.lower() == f"{b_label}._wireguard._udp.{mesh_lab.ZONE}".lower()
    srv = _dig(lab, a1, instance, "SRV").stdout
    srv_rows = _rows(srv, "SRV")
    assert len(srv_rows) == 1, srv
    priority, weight, port, target = srv_rows[0][4:8]
    assert (priority, weight) == ("0", "0") and target.lower() == instance.lower()
    assert [row[4] for row in _rows(srv, "A")] == [lab.routers["nat2"].public_address], srv
    rv_view = _split_endpoint(lab.rendezvous.wg.endpoints()[_key(lab, "b")])
    assert int(port) == rv_view[1]
    txt = _dig(lab, a1, instance, "TXT").stdout
    assert '"txtvers=1"' in txt and f'"pub={_key(lab, "b")}"' in txt, txt
    assert f'"allowed={b.mesh_address}/32' in txt, txt


def test_mesh_avahi_browse_sees_lan_members(mesh) -> None:
    reason = avahi_unavailable()
    if reason:
        pytest.skip(reason)
    lab = mesh
    observer_ns, _ = lab.add_host("nat1", "obs")
    workdir = Path(tempfile.mkdtemp(prefix="mwavahi", dir=lab.workdir))
    observer = AvahiObserver(observer_ns, workdir, f"observer{os.getpid()}")
    try:
        wanted = {label: lab.members[label] for label in ("a1", "a2")}

        def seen() -> dict[str, list[str]] | None:
            found = {}
            for entry in observer.browse("_meshwg._udp"):
                for label, node in wanted.items():
                    if f"pub={node.public_key}" in entry[-1]:
                        found[label] = entry
            return found if len(found) == len(wanted) else None
        found = poll(seen, 20, "avahi-browse to resolve A1 and A2")
        for label, entry in found.items():
            node = wanted[label]
            # =;iface;proto;name;type;domain;host;address;port;txt
            assert int(entry[8]) == node.listen_port, entry
            assert f"addr={node.mesh_address}" in entry[9], entry
        addresses = {e[7] for e in observer.browse("_meshwg._udp")}
        assert {wanted["a1"].lan_address, wanted["a2"].lan_address} <= addresses
    finally:
        observer.close()


def test_mesh_symmetric_member_reaches_others_through_the_rendezvous_relay(mesh) -> None:
    """C (behind the symmetric NAT3) has no direct path to anyone: its pairs run through the
    rendezvous's relay (both engines' endpoints are the relay client's 127.0.0.1 proxies),
    pings go through, the path holds still and probing stays cheap."""
    lab = mesh
    c = lab.members["c"]
    key_c = _key(lab, "c")

    def all_relayed() -> bool:
        rows = [(c.peers_by_name()[label], lab.members[label].peers_by_name()["c"]) for label in ("a1", "b")]
        return all(r["path"] == "relay" for pair in rows for r in pair)
    # the rendezvous restarted in an earlier test: its relay lost every binding until the
    # members bind again (on their new session with it, or at the latest the next refresh)
    poll(all_relayed, 60, lambda: f"C's pairs with A1 and B on the relay: {lab.describe_paths()}",
         interval=1.0)
    for label in ("a1", "b"):
        other = lab.members[label]
        key = _key(lab, label)
        row = c.peers_by_name()[label]
        assert row["path"] == "relay" and row["reason"].startswith("relay via rendezvous"), row
        assert other.peers_by_name()["c"]["path"] == "relay"
        assert c.wg.endpoints()[key].startswith("127.0.0.1:"), c.wg.endpoints()
        assert other.wg.endpoints()[key_c].startswith("127.0.0.1:"), other.wg.endpoints()
        assert c.ping(other.mesh_address, count=3) is not None, f"C cannot ping {label} over the relay"
        assert other.ping(c.mesh_address, count=3) is not None, f"{label} cannot ping C over the relay"
    row = c.peers_by_name()["b"]
    assert row["relay"] == "rendezvous" and row["relay_rx_bytes"] > 0 and row["relay_tx_bytes"] > 0, row
    text = c.meshwg("status", "--interface", c.interface).stdout
    assert "relay via rendezvous" in text, text
    key_b = _key(lab, "b")
    endpoints, paths = [], []
    tx0 = c.wg.transfer().get(key_b, (0, 0))[1]
    started = time.monotonic()
    while time.monotonic() - started < 6:
        endpoints.append(c.wg.endpoints().get(key_b, "(none)"))
        paths.append(c.peers_by_name()["b"]["path"])
        time.sleep(0.5)
    tx = c.wg.transfer().get(key_b, (0, 0))[1] - tx0
    assert len(set(endpoints)) == 1, f"C's endpoint for B moves: {endpoints}"
    assert set(paths) == {"relay"}, f"C's path for B flaps: {paths}"
    assert tx < 16_000, f"C sent {tx} bytes to B in 6 s while idle"


def _refused_join(lab: mesh_lab.MeshLab, token: str) -> subprocess.CompletedProcess[str]:
    """Run ``meshwg join TOKEN`` in B's namespace with a fresh state; it must exit."""
    node = lab.members["b"]
    state = Path(tempfile.mkdtemp(prefix="mwrefused", dir=lab.workdir)) / "state"
    interface = unique_name("mwrj")
    lab.cleanup.push("socket", lambda: remove_uapi_socket(interface))
    argv = node.ns.argv(meshwg_argv("join", token, "--state", state,
                                    "--interface", interface, "--name", "intruder"))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("`meshwg join` with a bad token did not exit (did it enroll?)")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _assert_one_line_refusal(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    err = result.stderr.strip()
    assert result.returncode != 0, f"join succeeded: {result.stdout} {err}"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(pattern, err, re.IGNORECASE), err


def test_mesh_join_refuses_reused_single_use_token(mesh) -> None:
    token = mesh.members["a1"].token
    assert token
    _assert_one_line_refusal(_refused_join(mesh, token), r"already used|single-use")


def test_mesh_join_refuses_expired_token(mesh) -> None:
    token = mesh.invite(expires="1s")
    expires_at = decode_token(token).expires_at
    assert expires_at is not None
    poll(lambda: time.time() >= expires_at + 0.1, 5, "the invite to expire", interval=0.05)
    _assert_one_line_refusal(_refused_join(mesh, token), r"expired")


def test_mesh_join_refuses_forged_token(mesh) -> None:
    genuine = decode_token(mesh.invite())
    forged = encode_token(type(genuine)(**{**genuine.__dict__,
                                           "secret": secrets.token_bytes(32)}))
    _assert_one_line_refusal(_refused_join(mesh, forged), r"proof|forged|does not match")


def test_mesh_join_refuses_damaged_token(mesh) -> None:
    token = mesh.invite()
    i = len(token) // 2
    damaged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    _assert_one_line_refusal(_refused_join(mesh, damaged), r"damaged|checksum|copy")


def test_mesh_roaming_nat_renumber_resumes_without_restart(mesh) -> None:
    lab = mesh
    a1, b = lab.members["a1"], lab.members["b"]
    nat2 = lab.routers["nat2"]
    pid = b.daemon.pid
    probe = EchoProbe(b.ns, a1.ns, a1.mesh_address)
    try:
        poll(lambda: len(probe.replies()) >= 5, 10, "B's probes to reach A1")
        new_address = "198.18.2.2"
        started = time.time()
        nat2.renumber(new_address)
        done = time.time()
        gap = poll(lambda: probe.gap(started, done), 60,
                   lambda: f"B->A1 traffic to resume after renumbering\n{b.daemon.output()}")
        print(f"roaming: B->A1 resumed after a {gap:.2f} s gap ({probe.lost()} probes lost)")
    finally:
        probe.stop()
    assert b.daemon.alive and b.daemon.pid == pid, "B was restarted"
    poll(lambda: _split_endpoint(a1.wg.endpoints()[_key(lab, "b")])[0] == new_address, 30,
         "A1's endpoint for B to move to NAT2's new public address")
    poll(lambda: a1.peers_by_name()["b"]["path"] == "direct", 15,
         lambda: f"A1's path for B to be direct again: {a1.peers_by_name()['b']}")
    poll(lambda: b.peers_by_name()["a1"]["path"] == "direct", 15,
         lambda: f"B's path for A1 to be direct again: {b.peers_by_name()['a1']}")


def test_mesh_lan_peer_found_by_mdns_alone_after_address_change(mesh) -> None:
    """With the directory down, A1 moves to a new LAN address; only mDNS can tell A2."""
    lab = mesh
    a1, a2 = lab.members["a1"], lab.members["a2"]
    nat1 = lab.routers["nat1"]
    assert lab.stop_rendezvous() == 0
    probe = EchoProbe(a2.ns, a1.ns, a1.mesh_address)
    try:
        poll(lambda: len(probe.replies()) >= 5, 10, "A2's probes to reach A1")
        old, new = a1.lan_address, nat1.next_lan_address()
        started = time.time()
        change_host_address(a1.ns, "eth0", f"{old}/{nat1.lan.prefixlen}",
                            f"{new}/{nat1.lan.prefixlen}", nat1.lan_gateway)
        a1.lan_address = new
        done = time.time()
        gap = poll(lambda: probe.gap(started, done), 45,
                   lambda: f"A2->A1 traffic to resume\n{a1.daemon.output()}")
        print(f"mDNS: A2->A1 resumed {gap:.2f} s after A1's LAN address changed")
        assert a2.wg.endpoints()[_key(lab, "a1")] == f"{new}:{a1.listen_port}"
    finally:
        probe.stop()
        lab.start_rendezvous()


def test_mesh_revocation_drops_member_everywhere(mesh) -> None:
    lab = mesh
    a2_key = _key(lab, "a2")
    lab.remove_member("a2")
    removed_at = time.monotonic()
    others = [n for label, n in lab.members.items() if label != "a2"]
    poll(lambda: all(a2_key not in n.wg.per_peer("endpoints") for n in others),
         10 * lab.interval + 5, "every member to drop A2 from `wg show`")
    print(f"revocation: dropped everywhere after {time.monotonic() - removed_at:.2f} s")
    for node in others:
        assert node.ping(lab.members["a2"].mesh_address, count=2) is None, node.label
