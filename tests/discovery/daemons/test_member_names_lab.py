"""Member names (issue 10): ``NAME.ZONE`` resolves to the member's mesh address from the
rendezvous's directory, through the tunnel only, and ``meshwg join --dns hosts`` keeps the
names in the host's hosts file, so ``ping a2.ZONE`` and ``ping a1`` work (a short name
the host resolves already is left out, and status says so). In the mesh lab: the
rendezvous and members A1 and A2 (behind NAT1); each member's /etc/hosts is its
namespace's own (/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts), never
the machine's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.netns import Namespace, poll

pytestmark = pytest.mark.netns

HOSTS = "127.0.0.1\tlocalhost\n# a line of the administrator's\n"
ADMIN_A2 = "192.0.2.9"          # A1's administrator calls another machine a2
HOSTS_OF = {"a1": HOSTS + f"{ADMIN_A2}\ta2\n", "a2": HOSTS}
STRANGER_ADDRESS = "198.18.0.67"
ZONE = mesh_lab.ZONE.rstrip(".")


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False) as lab:
        mesh_lab.init_rendezvous(lab)
        token = lab.invite(reusable=True)
        for label in ("a1", "a2"):
            node = lab.members[label]
            node.ns.etc_files({"hosts": HOSTS_OF[label]})
            lab.join(node, token, extra=("--dns", "hosts"))
        lab.rendezvous.mesh_address = lab.dns_server()[0]
        yield lab


def hosts_file(node: mesh_lab.Node) -> Path:
    return Path("/etc/netns") / node.ns.name / "hosts"


def dig(ns: Namespace, server: str, port: int, name: str, rdtype: str = "A", *extra: str):
    return ns.run(["dig", f"@{server}", "-p", port, name, rdtype, "+time=2", "+tries=1",
                   *extra], check=False, timeout=30)


def test_names_resolve_through_the_tunnel_only(lab) -> None:
    a1, a2 = lab.members["a1"], lab.members["a2"]
    server, port = lab.dns_server()
    poll(lambda: dig(a1.ns, server, port, f"a2.{ZONE}", "A", "+short").stdout.split()
         == [a2.mesh_address], 30, "A1 resolves a2.ZONE through the tunnel")
    assert dig(a1.ns, server, port, f"rendezvous.{ZONE}", "A", "+short").stdout.split() == [server]
    assert dig(a1.ns, server, port, f"a1.{ZONE}", "A", "+short", "+tcp").stdout.split() == \
        [a1.mesh_address]
    nx = dig(a1.ns, server, port, f"nosuch.{ZONE}")
    assert "status: NXDOMAIN" in nx.stdout, nx.stdout

    # the rendezvous's own status: an embedded directory, both members
    state = lab.rendezvous_state()
    poll(lambda: json.loads(lab.rendezvous_cli("rendezvous", "status", "--state", state,
                                               "--json").stdout)["members"] == 2,
         30, "`meshwg rendezvous status` to count both members", interval=0.5)
    doc = json.loads(lab.rendezvous_cli("rendezvous", "status", "--state", state, "--json").stdout)
    assert doc["running"] and doc["directory"] == {"kind": "embedded"}, doc
    text = lab.rendezvous_cli("rendezvous", "status", "--state", state).stdout
    assert text.splitlines()[1:] == ["  directory: embedded (this rendezvous's state)"], text
    assert f"{server} (mesh {mesh_lab.MESH_NETWORK}" in text and "2 members" in text, text

    # a stranger routing the mesh prefix to the rendezvous reaches its mesh address, not its names
    stranger = Namespace(lab.cleanup, "strgr")
    lab.internet.attach(stranger, STRANGER_ADDRESS)
    stranger.run(["ip", "route", "add", mesh_lab.MESH_NETWORK, "via", mesh_lab.RENDEZVOUS_ADDRESS])
    stranger.wait_ping(server, timeout=20)
    for extra in ((), ("+tcp",)):
        out = dig(stranger, server, port, f"a2.{ZONE}", "A", *extra)
        assert out.returncode != 0 and a2.mesh_address not in out.stdout, out.stdout


def test_join_keeps_the_names_in_the_hosts_file_and_ping_works(lab) -> None:
    a1, a2 = lab.members["a1"], lab.members["a2"]
    server, _ = lab.dns_server()
    want = {f"a1.{ZONE}": a1.mesh_address, f"a2.{ZONE}": a2.mesh_address,
            f"rendezvous.{ZONE}": server}

    def names(node) -> dict[str, str]:
        text = hosts_file(node).read_text()
        original = HOSTS_OF[node.label]
        assert text.startswith(original), text         # the lines outside the block stay
        return {line.split()[1]: line.split()[0] for line in text[len(original):].splitlines()
                if line and not line.startswith("#")}

    poll(lambda: names(a1) == want and names(a2) == want, 30, "both hosts files list the mesh")
    left_out = {"a2": f"/etc/hosts gives it {ADMIN_A2}"}
    assert a1.status()["dns"] == {"mode": "hosts", "requested": "hosts", "error": None,
                                  "hosts_file": "/etc/hosts", "names": 3,
                                  "short_names_left_out": left_out}
    assert a2.status()["dns"]["short_names_left_out"] == {}
    # the libc resolver in A1's namespace (files first) finds A2 by name; ping reaches it
    assert a1.ns.run(["getent", "hosts", f"a2.{ZONE}"]).stdout.split() == [a2.mesh_address,
                                                                           f"a2.{ZONE}"]
    poll(lambda: a1.ns.run(["ping", "-c1", "-W2", f"a2.{ZONE}"], check=False).returncode == 0,
         30, "ping a2.ZONE from A1")
    # short names: `ping a1` from A2; at A1, a2 stays the administrator's machine
    assert a2.ns.run(["getent", "hosts", "a1"]).stdout.split() == [a1.mesh_address,
                                                                   f"a1.{ZONE}", "a1"]
    poll(lambda: a2.ns.run(["ping", "-c1", "-W2", "a1"], check=False).returncode == 0,
         30, "ping a1 (the short name) from A2")
    assert a1.ns.run(["getent", "hosts", "a2"]).stdout.split() == [ADMIN_A2, "a2"]
    text = a1.meshwg("status", "--interface", a1.interface).stdout
    assert "names: hosts (/etc/hosts: 3 names; short names left out: a2 (/etc/hosts gives it " \
           f"{ADMIN_A2}))" in text, text
    # which rendezvous the directory is read at, and that it answers
    rdv = a1.status()["rendezvous"]
    assert len(rdv) == 1 and rdv[0]["current"] and rdv[0]["answers"], rdv
    assert f"rendezvous {rdv[0]['endpoint']} ({server}): directory read here, answers" in text, text


def test_a_removed_member_leaves_the_hosts_file_and_stop_removes_the_block(lab) -> None:
    a1, a2 = lab.members["a1"], lab.members["a2"]
    lab.remove_member("a2")
    removed_at = time.monotonic()
    poll(lambda: f"a2.{ZONE}" not in hosts_file(a1).read_text(), 30,
         "A1's hosts file drops a2 after its removal")
    assert f"a1.{ZONE}" in hosts_file(a1).read_text()
    # a2 is told (issue 10): it asks over the enrollment port, the rendezvous's MAC'd answer
    removed = poll(lambda: a2.status().get("removed"), 90, "a2's status to say it was removed",
                   interval=1.0)
    print(f"a2 told it was removed {time.monotonic() - removed_at:.1f} s after `meshwg remove`")
    assert removed["by"] == json.loads((a2.state_dir / "member.json").read_text())["rendezvous_endpoint"]
    text = a2.meshwg("status", "--interface", a2.interface).stdout
    assert f"REMOVED: removed from the mesh by the rendezvous at {removed['by']} (at " in text, text
    assert a2.status()["membership_checks"]["bad_answers"] == 0
    assert a1.daemon is not None and a1.daemon.stop() == 0
    assert hosts_file(a1).read_text() == HOSTS_OF["a1"]
    assert a2.daemon is not None
    a2.daemon.stop()
    assert hosts_file(a2).read_text() == HOSTS_OF["a2"]
    resumed = a2.meshwg("join", "--state", str(a2.state_dir), "--interface", a2.interface,
                        check=False)
    err = resumed.stderr.strip()
    assert resumed.returncode != 0 and len(err.splitlines()) == 1, err
    assert f"was removed from the mesh by the rendezvous at {removed['by']} (at " in err, err
    assert "new token" in err, err
