"""`meshwg up` used like `wg-quick up`, in namespaces (issue 9, cases 15, 16, 17, 20):
Table off/number, an exit peer through the default-route policy (the engine's own traffic
not captured), the MTU derived from the endpoint's path, a route that collides refused,
PreUp/PostUp/PreDown/PostDown, DNS and SaveConfig, and a failing PostUp undoing up."""

from __future__ import annotations

import os
import sys

import pytest

from discovery.lab.engines import WireguardGo
from discovery.lab.netns import Namespace, poll, unique_name, veth
from discovery.lab.traffic import tcp_transfer
from discovery.lab.wg import PeerConfig, keypair, remove_uapi_socket

pytestmark = pytest.mark.netns

MESHWG = [sys.executable, "-m", "meshwg"]
UNDERLAY_C, UNDERLAY_E = "192.0.2.1", "192.0.2.2"
TUNNEL_C, TUNNEL_E = "10.99.0.2", "10.99.0.1"
INTERNET = "203.0.113.1"      # an address beyond the exit peer
EXIT_PUBLIC = "198.51.100.2"  # the exit peer's endpoint, reached through C's default route


class Up:
    """`meshwg up FILE` in a namespace, with the file written here (0600)."""

    def __init__(self, lab, ns: Namespace, tmp_path, text: str, env: dict | None = None,
                 key_line: bool = True):
        self.ns = ns
        self.name = unique_name("mwq")
        self.keys = keypair()
        self.path = tmp_path / f"{self.name}.conf"
        key = f"PrivateKey = {self.keys.private}\n" if key_line else ""
        self.path.write_text(f"[Interface]\n{key}{text}")
        self.path.chmod(0o600)
        lab.push(f"remove socket {self.name}", lambda: remove_uapi_socket(self.name))
        self.start(env)

    def start(self, env: dict | None = None) -> None:
        """`meshwg up` of this file (again)."""
        self.daemon = self.ns.popen(MESHWG + ["up", str(self.path)], name=f"up-{self.name}", env=env)

    def wait_up(self) -> None:
        def ready():
            self.daemon.check_alive()
            return "is up" in self.daemon.stderr()
        poll(ready, 30, lambda: f"meshwg up {self.name}\n{self.daemon.output()}")

    def wait_failed(self) -> str:
        poll(lambda: not self.daemon.alive, 30, lambda: f"meshwg up to fail\n{self.daemon.output()}")
        assert self.daemon.returncode == 1, self.daemon.output()
        return self.daemon.stderr()

    def down(self) -> None:
        out = self.ns.run(MESHWG + ["down", self.name], check=False)
        assert out.returncode == 0, out.stderr
        poll(lambda: not self.daemon.alive, 30, "meshwg up to exit")
        assert self.daemon.returncode == 0, self.daemon.output()

    def ip(self, *args: str) -> str:
        return self.ns.run(["ip", *args]).stdout

    def exists(self) -> bool:
        return self.ns.run(["ip", "link", "show", self.name], check=False).returncode == 0


def client_and_exit(lab, mtu: int | None = None):
    """Client C (default route through the underlay to E, strict reverse-path filter) and
    exit peer E (wireguard-go, 10.99.0.1, with EXIT_PUBLIC and INTERNET on its loopback),
    which drops IP fragments arriving from the path."""
    c, e = Namespace(lab, "qc"), Namespace(lab, "qe")
    veth(c, e, f"{UNDERLAY_C}/24", f"{UNDERLAY_E}/24", mtu=mtu)
    c.run(["ip", "route", "add", "default", "via", UNDERLAY_E])
    for key in ("all", "default"):
        c.sysctl(f"net.ipv4.conf.{key}.rp_filter", 1)
    e.add_address("lo", f"{INTERNET}/32")
    e.add_address("lo", f"{EXIT_PUBLIC}/32")
    # the path drops IP fragments: an MTU too large for it stalls bulk transfers
    e.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-f", "-j", "DROP"])
    exit_peer = WireguardGo(lab, e, f"{TUNNEL_E}/24", listen_port=51820)
    return c, e, exit_peer


def test_exit_peer_default_route_policy_and_mtu_from_the_endpoint_path(lab, tmp_path):
    """Cases 15 and 17: AllowedIPs 0.0.0.0/0 with Table auto gets wg-quick's fwmark and
    rules, so everything goes through the exit peer while the engine's own UDP (to an
    endpoint that is itself reached through the default route) keeps the main table's
    default route, also under a strict reverse-path filter (wg-quick's connmark rules);
    with no MTU line, a 1280-byte underlay gives 1200 and full-size packets pass with DF
    set. down removes the rules."""
    c, e, exit_peer = client_and_exit(lab, mtu=1280)
    up = Up(lab, c, tmp_path, f"Address = {TUNNEL_C}/24\n\n[Peer]\n"
                               f"PublicKey = {exit_peer.public_key}\n"
                               f"Endpoint = {EXIT_PUBLIC}:51820\nAllowedIPs = 0.0.0.0/0\n")
    exit_peer.add_peer(PeerConfig(up.keys.public, [f"{TUNNEL_C}/32"]))
    up.wait_up()
    assert "mtu 1200" in up.ip("-o", "link", "show", up.name)
    assert c.run(["wg", "show", up.name, "fwmark"]).stdout.strip() == "0xca6c"
    rules = up.ip("rule")
    assert "not from all fwmark 0xca6c lookup 51820" in rules
    assert "from all lookup main suppress_prefixlength 0" in rules
    assert f"default dev {up.name}" in up.ip("route", "show", "table", "51820")
    assert f"via {UNDERLAY_E}" in up.ip("route", "show", "default")     # main untouched
    firewall = [line for line in c.run(["iptables-save"]).stdout.splitlines()
                if f'"meshwg rule for {up.name}"' in line]
    assert len(firewall) == 3 and any(f"-d {TUNNEL_C}/32" in line and "DROP" in line
                                      for line in firewall), firewall
    assert c.read_sysctl("net.ipv4.conf.all.src_valid_mark") == "1"
    c.wait_ping(TUNNEL_E, timeout=20)
    c.wait_ping(INTERNET, timeout=20)
    assert f"dev {up.name}" in up.ip("route", "get", INTERNET)
    assert f"dev {up.name}" in up.ip("route", "get", EXIT_PUBLIC)
    # the engine's packets (marked) still leave through the underlay
    assert f"via {UNDERLAY_E}" in up.ip("route", "get", EXIT_PUBLIC, "mark", "0xca6c")
    before = exit_peer.transfer()[up.keys.public][0]
    df = c.run(["ping", "-n", "-M", "do", "-c", 3, "-W", 5, "-i", 0.2, "-s", 1200 - 28, INTERNET],
               check=False)                  # full-size packets with DF set, not fragmented
    assert df.returncode == 0, df.stdout
    assert exit_peer.transfer()[up.keys.public][0] >= before + 1200
    # a bulk TCP transfer through the tunnel arrives whole (with MTU 1420 on this path it
    # stalls: the engine's datagrams would be fragmented, and fragments are dropped)
    bulk = tcp_transfer(c, e, TUNNEL_E, nbytes=4 << 20, timeout=120)
    assert bulk.intact, bulk
    up.down()
    rules = up.ip("rule")
    assert "51820" not in rules and "suppress_prefixlength" not in rules
    assert "meshwg rule" not in c.run(["iptables-save"]).stdout
    assert up.ip("route", "show", "table", "51820").strip() == ""
    assert not up.exists()


def test_table_off_a_number_and_the_ipv6_default_route(lab, tmp_path):
    c = Namespace(lab, "qt")
    peer = keypair().public
    peer_lines = (f"\n[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.50.0.0/24, 0.0.0.0/0\n"
                  f"[Peer]\nPublicKey = {keypair().public}\nAllowedIPs = 0.0.0.0/0\n")
    off = Up(lab, c, tmp_path, "Address = 10.49.0.1/24\nTable = off\nMTU = 1400\n" + peer_lines)
    off.wait_up()
    assert "10.50.0.0" not in off.ip("route", "show", "table", "all")
    assert "0xca6c" not in c.run(["wg", "show", off.name, "fwmark"]).stdout
    assert "lookup" not in off.ip("rule").replace("lookup local", "").replace(
        "lookup main", "").replace("lookup default", "")
    off.down()
    # a number: every route in that table, in batches (5,000 more /32s), `proto boot` as
    # wg-quick's `ip route add` (which `ip route` does not print)
    many = ", ".join(f"10.51.{i // 250}.{i % 250}/32" for i in range(5000))
    numbered = Up(lab, c, tmp_path, "Table = 1234\n" + peer_lines +
                  f"[Peer]\nPublicKey = {keypair().public}\nAllowedIPs = {many}\n")
    numbered.wait_up()
    table = numbered.ip("route", "show", "table", "1234")
    assert f"10.50.0.0/24 dev {numbered.name}" in table and f"default dev {numbered.name}" in table
    assert len(table.splitlines()) == 5002 and "proto" not in table
    assert "10.50.0.0" not in numbered.ip("route", "show", "table", "main")
    numbered.down()
    assert numbered.ip("route", "show", "table", "1234").strip() == ""
    # ::/0 with Table auto: the IPv6 policy, as for IPv4; an MTU below IPv6's 1280 is
    # refused with the reason (the kernel has no IPv6 on such a link), and nothing stays
    v6 = f"\n[Peer]\nPublicKey = {peer}\nAllowedIPs = fd00:50::/64, ::/0\n"
    small = Up(lab, c, tmp_path, "MTU = 1200\n" + v6)
    assert "IPv6 needs an MTU of at least 1280" in small.wait_failed()
    assert "51820" not in small.ip("-6", "rule") and not small.exists()
    auto6 = Up(lab, c, tmp_path, v6)
    auto6.wait_up()
    rules6 = auto6.ip("-6", "rule")
    assert "not from all fwmark 0xca6c lookup 51820" in rules6
    assert "from all lookup main suppress_prefixlength 0" in rules6
    assert f"default dev {auto6.name}" in auto6.ip("-6", "route", "show", "table", "51820")
    assert f"fd00:50::/64 dev {auto6.name}" in auto6.ip("-6", "route", "show", "table", "main")
    assert f'"meshwg rule for {auto6.name}"' in c.run(["ip6tables-save"]).stdout
    auto6.down()
    rules6 = auto6.ip("-6", "rule")
    assert "51820" not in rules6 and "suppress_prefixlength" not in rules6
    assert "meshwg rule" not in c.run(["ip6tables-save"]).stdout


def test_route_that_exists_elsewhere_is_refused_naming_the_line(lab, tmp_path):
    """Case 16: like wg-quick (whose `ip route add` fails), up refuses and creates nothing."""
    a, b = Namespace(lab, "qr"), Namespace(lab, "qr2")
    veth_a, _ = veth(a, b, "192.0.2.1/24", "192.0.2.2/24")
    a.run(["ip", "route", "add", "10.9.0.0/24", "dev", veth_a])
    up = Up(lab, a, tmp_path, f"\n[Peer]\nPublicKey = {keypair().public}\n"
                              f"AllowedIPs = 10.8.0.0/24\nAllowedIPs = 10.9.0.0/24\n")
    err = up.wait_failed().strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{up.path}:7: AllowedIPs: 10.9.0.0/24 is routed through {veth_a} already" in err
    assert not up.exists()
    # IPv6: a route of the same prefix and metric (1024, what `ip -6 route add` gives)
    a.run(["ip", "-6", "route", "add", "fd00:9::/64", "dev", veth_a])
    a.run(["ip", "-6", "route", "add", "fd00:8::/64", "dev", veth_a, "metric", "100"])
    up6 = Up(lab, a, tmp_path, f"\n[Peer]\nPublicKey = {keypair().public}\n"
                               f"AllowedIPs = fd00:8::/64, fd00:9::/64\n")
    err = up6.wait_failed()
    assert f"{up6.path}:6: AllowedIPs: fd00:9::/64 is routed through {veth_a} already" in err, err
    assert not up6.exists()


def stub_resolvconf(tmp_path, log) -> dict:
    """The environment of a `meshwg up` whose `resolvconf` records its arguments and input
    in `log` (this machine's own resolver is not touched)."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "resolvconf").write_text(f'#!/bin/bash\n{{ echo "resolvconf $*"; [[ $1 == -a ]] && cat; }}'
                                     f' >> {log}; exit 0\n')
    (stub / "resolvconf").chmod(0o755)
    return {"PATH": f"{stub}:{os.environ['PATH']}"}


def test_hooks_dns_and_save_config(lab, tmp_path):
    """Case 20: hooks run in wg-quick's order with %i (PreUp before the addresses), DNS is
    set through the host's resolvconf and removed on down, SaveConfig writes the running
    configuration (a peer added with `wg set`) back, 0600."""
    c = Namespace(lab, "qh")
    log = tmp_path / "hooks.log"
    env = stub_resolvconf(tmp_path, log)
    hooks = (f"PreUp = echo pre %i $(ip -o addr show dev %i | grep -c 10.47.) >> {log}\n"
             f"PostUp = echo post %i $(ip -o addr show dev %i | grep -c 10.47.) >> {log}\n"
             f"PreDown = echo predown %i >> {log}\nPostDown = echo postdown %i >> {log}\n")
    up = Up(lab, c, tmp_path, f"Address = 10.47.0.1/24\nDNS = 10.47.0.53, corp.example\n"
                              f"SaveConfig = true\n{hooks}", env=env)
    up.wait_up()
    added = keypair().public
    c.run(["wg", "set", up.name, "peer", added, "allowed-ips", "10.48.0.0/24",
           "endpoint", "192.0.2.9:4000"])
    up.down()
    n = up.name
    assert log.read_text() == (f"pre {n} 0\nresolvconf -a {n} -m 0 -x\nnameserver 10.47.0.53\n"
                               f"search corp.example\npost {n} 1\npredown {n}\n"
                               f"resolvconf -d {n} -f\npostdown {n}\n")
    saved = up.path.read_text()
    assert os.stat(up.path).st_mode & 0o777 == 0o600
    assert f"PrivateKey = {up.keys.private}" in saved and "Address = 10.47.0.1/24" in saved
    assert "DNS = 10.47.0.53" in saved and "DNS = corp.example" in saved
    assert "SaveConfig = true" in saved and f"PreDown = echo predown %i >> {log}" in saved
    assert f"PublicKey = {added}" in saved and "Endpoint = 192.0.2.9:4000" in saved
    assert "AllowedIPs = 10.48.0.0/24" in saved


def test_failing_post_up_undoes_up(lab, tmp_path):
    """Nothing half-applied: PostUp fails -> DNS removed, interface gone, exit 1; PreDown
    and PostDown do not run (as wg-quick's trap)."""
    c = Namespace(lab, "qf")
    log = tmp_path / "hooks.log"
    up = Up(lab, c, tmp_path, f"Address = 10.46.0.1/24\nDNS = 10.46.0.53\n"
                              f"PostUp = echo post %i >> {log}; exit 7\n"
                              f"PreDown = echo predown >> {log}\n",
            env=stub_resolvconf(tmp_path, log))
    err = up.wait_failed()
    assert "PostUp hook failed (exit status 7)" in err and "Traceback" not in err
    assert log.read_text() == (f"resolvconf -a {up.name} -m 0 -x\nnameserver 10.46.0.53\n"
                               f"post {up.name}\nresolvconf -d {up.name} -f\n")
    assert not up.exists()


def test_private_key_set_by_post_up_as_in_wg_quicks_man_page(lab, tmp_path):
    """wg-quick(8): `PostUp = wg set %i private-key <(pass WireGuard/private-keys/%i)` in a
    file without PrivateKey. meshwg up runs it; a file whose PostUp sets no key is undone
    with a one-line error."""
    c = Namespace(lab, "qp")
    key_file, keys = tmp_path / "key", keypair()
    key_file.write_text(keys.private + "\n")
    up = Up(lab, c, tmp_path, f"Address = 10.39.0.1/24\nPostUp = wg set %i private-key <(cat {key_file})\n"
                              f"\n[Peer]\nPublicKey = {keypair().public}\nAllowedIPs = 10.39.0.2/32\n",
            key_line=False)
    up.wait_up()
    assert c.run(["wg", "show", up.name, "public-key"]).stdout.strip() == keys.public
    up.down()
    none = Up(lab, c, tmp_path, "PostUp = true\n", key_line=False)
    err = none.wait_failed().strip()
    assert err.endswith(f"meshwg: {none.name}: no private key: {none.path} has no PrivateKey "
                        f"and its PostUp hooks set none"), err
    assert "Traceback" not in err and not none.exists()
