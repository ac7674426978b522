"""Debian's `wg` against a running meshwg interface: showconf, setconf, addconf, syncconf,
set, and a refused set that changes nothing -- exactly as against wireguard-go."""

from __future__ import annotations

import subprocess

import pytest

from discovery.lab.engines import MeshwgUp
from discovery.lab.netns import Namespace, poll
from discovery.lab.wg import genpsk, keypair
from tests.conftest import require_netns, require_tools

pytestmark = pytest.mark.netns


def wg(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["wg", *args], input=input, capture_output=True, text=True, timeout=15,
                          check=check)


def peers_of(ifname: str) -> dict[str, dict[str, str]]:
    """public key -> {'endpoint', 'allowed', 'keepalive'} from `wg show IFACE dump`."""
    lines = wg("show", ifname, "dump").stdout.strip().splitlines()[1:]
    out = {}
    for line in lines:
        pub, _psk, endpoint, allowed, _hs, _rx, _tx, keepalive = line.split("\t")
        out[pub] = {"endpoint": endpoint, "allowed": allowed, "keepalive": keepalive}
    return out


@pytest.fixture
def device(lab):
    require_netns()
    require_tools("wg")
    ns = Namespace(lab, "wgt")
    return MeshwgUp(lab, ns, "10.55.0.1/24", listen_port=51777)


def test_showconf_round_trips_through_setconf(device, tmp_path):
    p1, p2 = keypair(), keypair()
    psk = genpsk()
    wg("set", device.ifname, "peer", p1.public, "allowed-ips", "10.55.0.2/32,fd55::2/128",
       "endpoint", "198.18.77.2:51820", "persistent-keepalive", "25")
    wg("set", device.ifname, "peer", p2.public, "allowed-ips", "10.55.0.3/32",
       "endpoint", "[fd00:77::3]:51820", "preshared-key", "/dev/stdin", input=psk)
    conf = wg("showconf", device.ifname).stdout
    assert "ListenPort = 51777" in conf and p1.public in conf and p2.public in conf
    assert f"PresharedKey = {psk}" in conf and "[fd00:77::3]:51820" in conf
    before = peers_of(device.ifname)
    path = tmp_path / "saved.conf"
    path.write_text(conf)
    wg("setconf", device.ifname, str(path))        # replaces everything with the same
    assert peers_of(device.ifname) == before
    assert wg("showconf", device.ifname).stdout == conf


def test_addconf_adds_and_syncconf_removes(device, tmp_path):
    p1, p2 = keypair(), keypair()
    wg("set", device.ifname, "peer", p1.public, "allowed-ips", "10.55.0.2/32")
    extra = tmp_path / "extra.conf"
    extra.write_text(f"[Peer]\nPublicKey = {p2.public}\nAllowedIPs = 10.55.0.3/32\n")
    wg("addconf", device.ifname, str(extra))
    assert set(peers_of(device.ifname)) == {p1.public, p2.public}
    # syncconf to a config with only p2 (and new allowed IPs) removes p1 without touching keys
    key_before = wg("show", device.ifname, "private-key").stdout
    only = tmp_path / "only.conf"
    only.write_text(f"[Interface]\nPrivateKey = {key_before.strip()}\nListenPort = 51777\n\n"
                    f"[Peer]\nPublicKey = {p2.public}\nAllowedIPs = 10.55.0.4/32\n")
    wg("syncconf", device.ifname, str(only))
    peers = peers_of(device.ifname)
    assert set(peers) == {p2.public}
    assert peers[p2.public]["allowed"] == "10.55.0.4/32"
    assert wg("show", device.ifname, "private-key").stdout == key_before


def test_allowed_ip_moves_between_peers(device):
    p1, p2 = keypair(), keypair()
    wg("set", device.ifname, "peer", p1.public, "allowed-ips", "10.55.0.0/28")
    wg("set", device.ifname, "peer", p2.public, "allowed-ips", "10.55.0.0/28")
    peers = peers_of(device.ifname)
    assert peers[p1.public]["allowed"] == "(none)"       # a prefix belongs to one peer at a time
    assert peers[p2.public]["allowed"] == "10.55.0.0/28"


def test_refused_set_changes_nothing(device, lab):
    p1 = keypair()
    wg("set", device.ifname, "peer", p1.public, "allowed-ips", "10.55.0.2/32")
    before = wg("showconf", device.ifname).stdout
    # the port is taken by another socket in the same namespace: the whole set must fail
    blocker = device.ns.popen_python(
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
        "s.bind(('::',51778)); print('bound',flush=True); time.sleep(60)\n", name="blocker")
    poll(lambda: "bound" in blocker.stdout(), 10, "blocker bound")
    p2 = keypair()
    out = wg("set", device.ifname, "listen-port", "51778", "peer", p2.public,
             "allowed-ips", "10.55.0.9/32", check=False)
    assert out.returncode != 0
    assert wg("showconf", device.ifname).stdout == before
    blocker.stop()


def test_remove_peer_and_private_key_change(device):
    p1 = keypair()
    wg("set", device.ifname, "peer", p1.public, "allowed-ips", "10.55.0.2/32")
    wg("set", device.ifname, "peer", p1.public, "remove")
    assert peers_of(device.ifname) == {}
    new = keypair()
    wg("set", device.ifname, "private-key", "/dev/stdin", input=new.private)
    assert wg("show", device.ifname, "public-key").stdout.strip() == new.public


def test_fwmark_and_listen_port_through_wg(device):
    wg("set", device.ifname, "fwmark", "0x1234")
    assert wg("show", device.ifname, "fwmark").stdout.strip() == "0x1234"
    wg("set", device.ifname, "fwmark", "0")
    assert wg("show", device.ifname, "fwmark").stdout.strip() == "off"
    wg("set", device.ifname, "listen-port", "51779")
    assert wg("show", device.ifname, "listen-port").stdout.strip() == "51779"
    # the new port really receives: a UDP socket can no longer bind it in that namespace
    out = device.ns.run(["python3", "-c",
                         "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM);"
                         "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(('::', 51779))"],
                        check=False)
    assert out.returncode != 0 and "Address already in use" in out.stderr
