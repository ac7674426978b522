"""``meshwg join --dns resolved`` against a live systemd-resolved (discovery/lab/resolved.py:
Debian's daemon, unpacked by `make resolved-lab`, in a namespace with a private D-Bus).

In one namespace: the member's interface mwt0 (a1's mesh address) and, across a veth, the
project's DNS server (discovery.dnssd.server) serving a directory with a1 and a2 at the
rendezvous's address, as a rendezvous does through the tunnel. discovery.daemons.host_dns
.HostDns, what the member daemon runs, tells resolved about the link; then `resolvectl query
a2.ZONE` and `resolvectl query a2` (the zone as search domain) answer a2's address, the
libc resolver on resolved's stub finds the short name and `ping a2` works, a name outside the
zone is not sent to the rendezvous, and stop() takes it all back.
"""

from __future__ import annotations

import os

import pytest

from discovery.daemons.host_dns import HostDns
from discovery.lab.netns import Cleanup, Namespace, poll
from discovery.lab.resolved import LiveResolved, unavailable_reason

pytestmark = pytest.mark.netns

ZONE = "mesh.internal."
SERVER, A1, A2 = "10.99.0.1", "10.99.0.2", "10.99.0.3"
IFACE = "mwt0"
DNS_SERVER = """
import sys, threading
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.server import DnsServer
from discovery.dnssd.zone import Directory
server, zone, a1, a2 = sys.argv[1:5]
directory = Directory(zone, rendezvous_addresses=[server])
directory.set_members([MemberRecord(bytes([n]) * 32, None, [f"{ip}/32"], name, ip)
                       for n, name, ip in ((1, "a1", a1), (2, "a2", a2))])
DnsServer(directory, server, 53).start()
print("serving", flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="module")
def lab():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        ns = Namespace(cleanup, "rslv")
        ns.run(["ip", "link", "add", IFACE, "type", "veth", "peer", "name", "mwp0"])
        ns.add_address(IFACE, f"{A1}/24")
        ns.add_address("mwp0", f"{SERVER}/24")
        ns.add_address("mwp0", f"{A2}/24")
        for link in (IFACE, "mwp0"):
            ns.run(["ip", "link", "set", link, "up"])
        server = ns.popen_python(DNS_SERVER, SERVER, ZONE, A1, A2, name="directory")
        poll(lambda: server.check_alive() or "serving" in server.stdout(), 30,
             lambda: f"the directory's DNS server: {server.output()}")
        live = LiveResolved(ns).start()
        yield ns, live


def answers(live: LiveResolved, name: str) -> str:
    out = live.resolvectl("query", "--cache=no", name, check=False)
    return out.stdout if out.returncode == 0 else ""


def test_names_and_short_names_resolve_through_a_live_resolved(lab) -> None:
    ns, live = lab
    host = HostDns("resolved", IFACE, ZONE, [SERVER], 53, resolvectl=live.command())
    host.start()
    try:
        assert host.status() == {"mode": "resolved", "requested": "resolved", "error": None,
                                 "servers": [SERVER], "domain": "mesh.internal", "search": True}
        link = live.resolvectl("status", IFACE).stdout
        assert f"DNS Servers: {SERVER}" in link and "DNS Domain: mesh.internal" in link, link
        assert "-DefaultRoute" in link, link          # no other query goes to the rendezvous
        assert A2 in answers(live, "a2.mesh.internal")
        short = answers(live, "a2")                   # the zone is a search domain
        assert A2 in short and "(a2.mesh.internal)" in short, short
        assert answers(live, "nosuch.mesh.internal") == ""
        assert answers(live, "example.com") == ""     # not sent anywhere: no route
        # a host whose /etc/resolv.conf is resolved's stub file: the libc resolver and ping
        stub = live.stub_resolv_conf()
        assert "search mesh.internal" in stub and "nameserver 127.0.0.53" in stub, stub
        ns.etc_files({"resolv.conf": stub, "hosts": "127.0.0.1\tlocalhost\n"})
        assert ns.run(["getent", "hosts", "a2"]).stdout.split() == [A2, "a2.mesh.internal"]
        assert ns.run(["getent", "hosts", "a1.mesh.internal"]).stdout.split()[0] == A1
        poll(lambda: ns.run(["ping", "-c1", "-W2", "a2"], check=False).returncode == 0, 30,
             "ping a2 (the short name) through resolved")
    finally:
        host.stop()
    link = live.resolvectl("status", IFACE).stdout
    assert SERVER not in link and "mesh.internal" not in link, link
    assert answers(live, "a2.mesh.internal") == ""
    assert "search mesh.internal" not in live.stub_resolv_conf()


def test_stop_leaves_no_process_behind(lab) -> None:
    """The lab's resolved and its bus go together (they are one process group)."""
    ns, live = lab
    group = live.daemon.pid
    live.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
