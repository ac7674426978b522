"""Device.wait_events: the engine's events, read in-process.

In namespaces: a Device runs in its own process in namespace a (a small program that
prints every event wait_events returns), `meshwg up` in namespace b. A ping makes a
handshake: a reports HandshakeCompleted for b's key and endpoint. b moves to a new listen
port and pings: a reports EndpointChanged to the new port. Without namespaces: an idle
device's wait_events returns nothing after its timeout, and at once when it stops.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from discovery.lab.engines import MeshwgUp
from discovery.lab.netns import Cleanup, Namespace, poll, unique_name, veth
from discovery.lab.wg import PeerConfig, keypair
from meshwg.device.device import Device

A_UNDERLAY, B_UNDERLAY = "198.18.0.1", "198.18.0.2"
A_TUNNEL, B_TUNNEL = "10.99.0.1", "10.99.0.2"
A_PORT, B_PORT, B_NEW_PORT = 51820, 51821, 51831

# argv: private key (base64), peer public key (base64), peer host, peer port,
# interface name, control socket directory
EVENT_PRINTER = r"""
import base64, ipaddress, json, signal, sys
from meshwg.core.keys import decode_key
from meshwg.device.api import DeviceUpdate, PeerUpdate
from meshwg.device.device import Device
private, peer, host, port, ifname, uapi_dir = sys.argv[1:]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
device = Device(ifname, private_key=decode_key(private), listen_port=%d,
                addresses=[ipaddress.ip_interface("%s/24")], uapi_directory=uapi_dir)
device.apply(DeviceUpdate(peers=[PeerUpdate(
    public_key=decode_key(peer), endpoint=(host, int(port)),
    allowed_ips=[ipaddress.ip_network("%s/32")])]))
device.start()
print("ready", flush=True)
try:
    while True:
        for event in device.wait_events(None):
            print(json.dumps({"event": type(event).__name__,
                              "public_key": base64.b64encode(event.public_key).decode(),
                              "endpoint": event.endpoint}), flush=True)
finally:
    device.stop()
""" % (A_PORT, A_TUNNEL, B_TUNNEL)


def _events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.netns
def test_handshake_and_roaming_are_reported(lab: Cleanup, tmp_path) -> None:
    ns_a, ns_b = Namespace(lab, "a"), Namespace(lab, "b")
    veth(ns_a, ns_b, f"{A_UNDERLAY}/24", f"{B_UNDERLAY}/24")
    keys_a, keys_b = keypair(), keypair()
    b = MeshwgUp(lab, ns_b, f"{B_TUNNEL}/24", listen_port=B_PORT, keys=keys_b,
                 peers=[PeerConfig(keys_a.public, [f"{A_TUNNEL}/32"])])
    a = ns_a.popen_python(EVENT_PRINTER, keys_a.private, keys_b.public, B_UNDERLAY, B_PORT,
                          unique_name("mwe"), tmp_path, name="event-printer")
    poll(lambda: "ready" in a.stdout() or not a.alive, 15, lambda: f"device a up\n{a.output()}")
    a.check_alive()

    ns_a.wait_ping(B_TUNNEL, timeout=10)          # a initiates; b answers
    poll(lambda: _events(a.stdout()), 10, lambda: f"an event at a\n{a.output()}")
    assert _events(a.stdout()) == [{"event": "HandshakeCompleted", "public_key": keys_b.public,
                                    "endpoint": [B_UNDERLAY, B_PORT]}]

    b.set_listen_port(B_NEW_PORT)                 # b roams: same address, new port
    ns_b.wait_ping(A_TUNNEL, timeout=10)
    poll(lambda: len(_events(a.stdout())) > 1, 10, lambda: f"a second event\n{a.output()}")
    assert _events(a.stdout())[1:] == [{"event": "EndpointChanged", "public_key": keys_b.public,
                                        "endpoint": [B_UNDERLAY, B_NEW_PORT]}]
    assert a.stop() == 0, a.output()              # SIGTERM: the device stops cleanly
    assert list(tmp_path.iterdir()) == []         # ...and removes its control socket


def test_idle_wait_times_out_and_stop_ends_the_wait() -> None:
    device = Device("mwgidle0")                   # never started: no root needed
    start = time.monotonic()
    assert device.wait_events(0.05) == []
    assert time.monotonic() - start >= 0.05
    stopper = threading.Timer(0.05, device.stop)
    stopper.start()
    try:
        assert device.wait_events(None) == []     # returns once the device stops
    finally:
        stopper.join()
