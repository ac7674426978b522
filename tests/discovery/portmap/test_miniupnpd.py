"""PortMapper against Debian's miniupnpd on a lab NAT router: each protocol (PCP, NAT-PMP,
UPnP IGD) maps the LAN host's UDP port, a host on the fake internet reaches it through the
mapped port with no packet sent out first, the mapping outlives its lifetime by renewal
and is gone after stop."""

from __future__ import annotations

import json
import socket

import pytest

from discovery.lab import miniupnpd
from discovery.lab.miniupnpd import MiniUpnpd, PORTMAP_INTERNET
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import Namespace, poll

pytestmark = pytest.mark.netns

LAN_PORT = 51820
LIFETIME = 4            # seconds asked for: renewed every 2 s

# Runs in the LAN host: an echo socket on the port, a PortMapper for it; one JSON line per
# (re)mapping; SIGTERM stops the mapper (which deletes the mapping) and prints "stopped".
MAPPED_ECHO = """
import json, signal, socket, sys, threading
from discovery.portmap.mapper import PortMapper
port, protocols, lifetime = int(sys.argv[1]), tuple(sys.argv[2].split(",")), int(sys.argv[3])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
def echo():
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(b"echo:" + data, peer)
threading.Thread(target=echo, daemon=True).start()
def report(mapping):
    print(json.dumps(mapping.as_status() if mapping else None), flush=True)
mapper = PortMapper(port, protocols=protocols, lifetime=lifetime, on_change=report).start()
signal.sigwait({signal.SIGTERM})
mapper.stop()
print("stopped", flush=True)
"""

# Runs on the internet host: one datagram from a fresh socket, the reply or "" after 1 s.
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(100).decode())
except socket.timeout:
    print("")
"""


@pytest.fixture
def portmap_lab(lab):
    reason = miniupnpd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    internet = Internet(lab, *PORTMAP_INTERNET)
    router = NatRouter(lab, internet, "11.0.0.2", "192.168.60.0/24", mode="symmetric")
    outside = Namespace(lab, "out")
    internet.attach(outside, "11.0.0.9")
    host, address = router.add_host("lanpm")
    return lab, router, host, address, outside


def mappings(daemon) -> list:
    return [json.loads(line) for line in daemon.stdout().splitlines()
            if line.startswith(("{", "null"))]


def echo_through(outside, endpoint: str) -> str:
    ip, _, port = endpoint.rpartition(":")
    return outside.run_python(SEND, ip, port).stdout.strip()


@pytest.mark.parametrize("protocol", ["pcp", "natpmp", "upnp"])
def test_mapping_reachable_renewed_deleted(portmap_lab, protocol):
    lab, router, host, address, outside = portmap_lab
    server = MiniUpnpd(router, min_lifetime=LIFETIME)
    mapper = host.popen_python(MAPPED_ECHO, LAN_PORT, protocol, LIFETIME, name="mapped-echo")
    first = poll(lambda: mapper.check_alive() or mappings(mapper), 10,
                 lambda: f"a {protocol} mapping\n{mapper.output()}\n{server.daemon.output()}")[0]
    assert first["protocol"] == protocol
    assert first["endpoint"].startswith("11.0.0.2:")
    # Nothing was sent out from the LAN host: the gateway forwards unsolicited traffic.
    assert echo_through(outside, first["endpoint"]) == "echo:hello"
    # Renewed past its lifetime, the mapping still admits new flows.
    poll(lambda: len(mappings(mapper)) >= 3, 4 * LIFETIME,
         lambda: f"two renewals\n{mapper.output()}")
    assert all(m == first or m["endpoint"] == first["endpoint"] for m in mappings(mapper))
    assert echo_through(outside, first["endpoint"]) == "echo:hello"
    assert f"--dport {first['endpoint'].rpartition(':')[2]}" in server.redirects()
    # Stop: the mapping is deleted at the gateway; new flows no longer reach the host.
    mapper.stop()
    assert "stopped" in mapper.stdout()
    assert "DNAT" not in server.redirects()
    router.flush_mappings()
    assert echo_through(outside, first["endpoint"]) == ""


def test_tries_pcp_first_then_falls_back_to_upnp(portmap_lab):
    lab, router, host, address, outside = portmap_lab
    server = MiniUpnpd(router, natpmp=False)       # no PCP, no NAT-PMP: only UPnP answers
    mapper = host.popen_python(MAPPED_ECHO, LAN_PORT, "pcp,natpmp,upnp", 600, name="mapped-echo")
    first = poll(lambda: mapper.check_alive() or mappings(mapper), 10,
                 lambda: f"a mapping\n{mapper.output()}\n{server.daemon.output()}")[0]
    assert first["protocol"] == "upnp"
    assert echo_through(outside, first["endpoint"]) == "echo:hello"
