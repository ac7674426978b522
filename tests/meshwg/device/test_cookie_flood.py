"""Under a flood of handshake initiations that carry a valid mac1 but no cookie (mac2 zero),
from many source addresses and ports, meshwg answers with cookie replies (type 3, 64 bytes,
counted at the flooder) and a legitimate peer still completes its handshake and pings.

NETLAB_COOKIE_SUBJECT=wireguard-go floods wireguard-go instead (checks the test itself).
"""

from __future__ import annotations

import json
import os

import pytest

from discovery.lab.engines import start_wireguard
from discovery.lab.netns import Bridge, Cleanup, Namespace, poll
from discovery.lab.wg import PeerConfig, keypair

pytestmark = pytest.mark.netns

SUBJECT = os.environ.get("NETLAB_COOKIE_SUBJECT", "meshwg")
FLOOD_SOURCES = 24          # source addresses 198.18.1.1 .. 198.18.1.24
SOCKETS_PER_SOURCE = 2      # each bound to its own (random) port
# Initiations per second: 10x the rate at which meshwg declares itself under load
# (1000/s), and far more than a Python responder could answer with X25519 work.
FLOOD_RATE = int(os.environ.get("NETLAB_FLOOD_RATE", "10000"))

# Sends initiations until SIGTERM (or argv duration); counts valid cookie replies.
# argv: target_ip port responder_public_b64 duration rate source_ip... (rate: packets
# per second over all sockets; 0 = as fast as Python can send)
FLOODER = r"""
import base64, json, os, select, signal, socket, struct, sys, time
target, port, pub_b64 = sys.argv[1], int(sys.argv[2]), sys.argv[3]
duration, rate = float(sys.argv[4]), float(sys.argv[5])
sources = sys.argv[6:]
from meshwg.core.crypto import hash_, mac
mac1_key = hash_(b"mac1----", base64.b64decode(pub_b64))
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
socks = []
for ip in sources:
    for _ in range(SOCKETS_PER_SOURCE):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        s.setblocking(False)
        socks.append(s)
packets, indices = [], set()
for _ in range(2048):
    index = int.from_bytes(os.urandom(4), "little")
    indices.add(index)
    body = struct.pack("<II", 1, index) + os.urandom(32 + 48 + 28)
    packets.append(body + mac(mac1_key, body) + bytes(16))
sent = replies = bad = 0
replied_sources = set()
first_reply = None
start = time.monotonic()
last_report = start
while not stop and time.monotonic() - start < duration:
    for s in socks:
        try:
            s.sendto(packets[sent % len(packets)], (target, port))
            sent += 1
        except BlockingIOError:
            pass
    readable, _, _ = select.select(socks, [], [], 0)
    for s in readable:
        while True:
            try:
                data, src = s.recvfrom(2048)
            except BlockingIOError:
                break
            if len(data) == 64 and data[:4] == b"\x03\x00\x00\x00" and \
                    struct.unpack_from("<I", data, 4)[0] in indices:
                replies += 1
                replied_sources.add(s.getsockname())
                if first_reply is None:
                    first_reply = time.monotonic() - start
                    print("first-cookie-reply", flush=True)
            else:
                bad += 1
    if rate:
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
print(json.dumps({"sent": sent, "cookie_replies": replies, "other_replies": bad,
                  "sources_with_replies": len({a for a, _ in replied_sources}),
                  "sockets_with_replies": len(replied_sources),
                  "seconds": time.monotonic() - start, "first_reply": first_reply}), flush=True)
""".replace("SOCKETS_PER_SOURCE", str(SOCKETS_PER_SOURCE))


@pytest.fixture(params=["legit-wireguard-go", "legit-same-as-subject"])
def legit_kind(request: pytest.FixtureRequest) -> str:
    return "wireguard-go" if request.param == "legit-wireguard-go" else SUBJECT


def test_flood_gets_cookie_replies_and_legit_peer_still_handshakes(
        lab: Cleanup, legit_kind: str) -> None:
    internet = Bridge(Namespace(lab, "inet"))
    responder_ns, legit_ns, flooder_ns = (Namespace(lab, "resp"), Namespace(lab, "lgt"),
                                          Namespace(lab, "fld"))
    internet.attach(responder_ns, "198.18.0.1/23")
    internet.attach(legit_ns, "198.18.0.2/23")
    flood_sources = [f"198.18.1.{i}" for i in range(1, FLOOD_SOURCES + 1)]
    internet.attach(flooder_ns, [f"{ip}/23" for ip in flood_sources])

    keys_r, keys_l = keypair(), keypair()
    responder = start_wireguard(
        lab, SUBJECT, responder_ns, ["10.99.0.1/24"], 51820, keys_r,
        [PeerConfig(keys_l.public, ["10.99.0.2/32"])])
    legit = start_wireguard(
        lab, legit_kind, legit_ns, ["10.99.0.2/24"], 51821, keys_l,
        [PeerConfig(keys_r.public, ["10.99.0.1/32"], endpoint="198.18.0.1:51820")])

    flooder = flooder_ns.popen_python(FLOODER, "198.18.0.1", "51820", keys_r.public, "45",
                                      str(FLOOD_RATE), *flood_sources, name="flooder")
    # The responder is under load once it answers the flood with cookies.
    poll(lambda: "first-cookie-reply" in flooder.stdout() or not flooder.alive, 15,
         lambda: f"a cookie reply at the flooder\n{flooder.output()}", interval=0.1)
    assert flooder.alive, flooder.output()
    assert responder.latest_handshakes()[keys_l.public] == 0

    # The legitimate peer starts its handshake only now, in the middle of the flood.
    legit_ns.wait_ping("10.99.0.1", timeout=25)
    assert flooder.alive, "the flood ended before the legitimate handshake completed"
    assert responder.latest_handshakes()[keys_l.public] > 0
    responder_ns.wait_ping("10.99.0.2", timeout=5)

    flooder.stop(timeout=10)
    lines = [line for line in flooder.stdout().splitlines() if line.startswith("{")]
    assert lines, flooder.output()
    report = json.loads(lines[-1])
    print("flood report:", report)
    assert report["cookie_replies"] > 0, report
    assert report["sources_with_replies"] >= FLOOD_SOURCES // 2, report
    assert report["other_replies"] == 0, report  # no handshake responses to forged initiations
    assert responder.daemon.alive, responder.daemon.output()
    assert legit.daemon.alive
