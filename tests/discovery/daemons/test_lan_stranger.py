"""Issue 9 case 3: a stranger on the LAN announces over mDNS, in member a2's name (a2's
WireGuard key), its own address, and relays UDP between a1 and a2. Before, a1 probed the
stranger, the handshake completed through the relay and the a1 <-> a2 LAN link moved to
the stranger. Now a LAN announcement counts only when it is signed with the LAN key the
directory publishes for the member (discovery/lan/lankey.py): the stranger's is counted
(bad_signature) and dropped, a2's genuine one is accepted, and over the window a1's
engine endpoint for a2 stays a2's LAN address, the path ``lan``, the relay unused.

The mesh lab (discovery/lab/mesh.py) with the home LAN only: rendezvous, NAT1, a1, a2,
and the stranger a host on the same LAN.
"""

from __future__ import annotations

import json
import time

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.netns import PollTimeout, poll, unavailable_reason

pytestmark = pytest.mark.netns

WINDOW = 30.0       # seconds the link is watched while the stranger keeps announcing

STRANGER = r"""
import base64, json, select, socket, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from zeroconf import ServiceInfo, Zeroconf
from discovery.lan.lankey import signed_txt
from discovery.lan.records import SERVICE_TYPE, encode_txt, instance_name

mesh, key_b64, a2_ip, a2_port, own, mesh_address = sys.argv[1:7]
key, port = base64.b64decode(key_b64), int(a2_port)
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # a1 -> here
front.bind((own, port))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # here -> a2
back.bind((own, 0))
# a2's name, the stranger's address, signed with a key of its own (no other is at hand)
txt = encode_txt(mesh, key, "a2", mesh_address)
txt.update(signed_txt(Ed25519PrivateKey.generate(), mesh, key, port, [own], int(time.time())))
info = ServiceInfo(SERVICE_TYPE, instance_name(mesh, key), port=port, properties=txt,
                   server="stranger.local.", parsed_addresses=[own])
zc = Zeroconf(interfaces=[own])
zc.register_service(info, cooperating_responders=True)     # no probing: a2 holds the name
counts = {"event": "relay", "from_a1": 0, "from_a2": 0}
print(json.dumps({"event": "ready"}), flush=True)
client, again = None, time.monotonic() + 2
while True:
    ready, _, _ = select.select([front, back], [], [], max(0.0, again - time.monotonic()))
    for sock in ready:
        data, source = sock.recvfrom(65535)
        if sock is front:
            client = source
            back.sendto(data, (a2_ip, port))
            counts["from_a1"] += 1
        elif client is not None:
            front.sendto(data, client)
            counts["from_a2"] += 1
        print(json.dumps(counts), flush=True)
    if time.monotonic() >= again:       # keep winning the LAN's caches from a2
        zc.update_service(info)
        again = time.monotonic() + 2
"""


@pytest.fixture(scope="module")
def lab():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with mesh_lab.build_lab(start=False) as built:
        for label in [m for m in built.members if m not in ("a1", "a2")]:
            del built.members[label]        # the home LAN only: a1, a2
        mesh_lab.start_mesh(built)
        yield built


def _lan(node: mesh_lab.Node) -> dict:
    return node.status().get("lan") or {}


def test_a_stranger_announcing_a_member_cannot_take_its_lan_link(lab) -> None:
    a1, a2 = lab.members["a1"], lab.members["a2"]
    a2_endpoint = f"{a2.lan_address}:{a2.listen_port}"
    assert a1.wg.endpoints()[a2.public_key] == a2_endpoint
    assert a1.peers_by_name()["a2"]["path"] == "lan"
    # a2's own signed announcement was verified under the directory's LAN key
    poll(lambda: _lan(a1).get("accepted", 0) >= 1, 30, "a1 accepts a2's signed announcement")

    mesh_id = a1.status()["self"]["mesh_id"]
    ns, address = lab.add_host("nat1", "stranger")
    stranger = ns.popen_python(STRANGER, mesh_id, a2.public_key, a2.lan_address,
                               a2.listen_port, address, a2.mesh_address, name="stranger")

    def stranger_ready() -> bool:
        stranger.check_alive()
        return '"ready"' in stranger.stdout()
    poll(stranger_ready, 30, "the stranger announces in a2's name")

    def rejected() -> dict | None:
        counters = _lan(a1)
        return counters if counters.get("bad_signature", 0) >= 1 else None
    try:
        poll(rejected, 30, "a1 hears the stranger's announcement and rejects it", interval=0.5)
    except PollTimeout:
        raise AssertionError(f"a1 lan counters {_lan(a1)}\n{stranger.output()}") from None

    deadline = time.monotonic() + WINDOW
    rounds = 0
    while time.monotonic() < deadline:
        stranger.check_alive()
        endpoint = a1.wg.endpoints()[a2.public_key]
        assert endpoint == a2_endpoint, f"a1's endpoint for a2 moved to {endpoint}"
        path = a1.peers_by_name()["a2"]["path"]
        assert path == "lan", f"a1 -> a2 path is {path}"
        rounds += 1
        time.sleep(1.0)     # sampling the window, not synchronisation
    assert rounds >= 5
    relay = [json.loads(line) for line in stranger.stdout().splitlines() if '"relay"' in line]
    assert not relay or relay[-1]["from_a1"] == 0, f"a1 sent to the stranger: {relay[-1]}"
    assert a1.ping(a2.mesh_address) is not None
    counters = _lan(a1)
    print(f"a1's LAN verdicts after the window: {counters}")
    assert counters["accepted"] >= 1 and counters["bad_signature"] >= 1
