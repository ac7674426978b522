"""`meshwg up` killed with SIGKILL, and routes wg-quick would not add (issue 9 cases 15-16,
follow-up).

A killed `meshwg up` of an exit-peer file (0.0.0.0/0 and ::/0) loses its interface but
leaves its policy rules, its firewall rules and its DNS record; the next `meshwg up` of the
name removes them and says so (no duplicates after it), `meshwg down` removes them as
wg-quick's down does (every rule of the table, both families, duplicates too; the
suppress_prefixlength rule another tunnel still needs stays; an exit-peer interface started
meanwhile took another table and keeps working), and a second down has nothing left to
do. `meshwg up` routes the same prefixes as `wg-quick up` (on wireguard-go) for the same
file: none that the interface's own address route, or a wider allowed IP, covers."""

from __future__ import annotations

import os
import signal

import pytest

from discovery.lab.netns import Namespace, poll, unique_name
from discovery.lab.wg import keypair, remove_uapi_socket
from meshwg.util.files import RUN_DIRECTORY
from tests.meshwg.cli.test_quick_netns import MESHWG, Up, stub_resolvconf

pytestmark = pytest.mark.netns


def count(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


def policy(c: Namespace, table: int = 51820) -> dict:
    """How many rules look up `table`, how many suppress_prefixlength rules and meshwg
    firewall rules the namespace holds."""
    out = {}
    for family in ("-4", "-6"):
        rules = c.run(["ip", family, "rule"]).stdout
        out[f"lookup {family}"] = count(rules, f"lookup {table}")
        out[f"suppress {family}"] = count(rules, "suppress_prefixlength 0")
    for tool in ("iptables-save", "ip6tables-save"):
        out[tool] = count(c.run([tool]).stdout, "meshwg rule for")
    return out


LIVE = {"lookup -4": 1, "suppress -4": 1, "lookup -6": 1, "suppress -6": 1,
        "iptables-save": 3, "ip6tables-save": 3}
NONE = dict.fromkeys(LIVE, 0)


def kill(up: Up) -> None:
    up.daemon.signal(signal.SIGKILL)
    poll(lambda: not up.daemon.alive, 30, "meshwg up to die")
    poll(lambda: not up.exists(), 30, "the kernel to remove the TUN interface")


def test_killed_up_leftovers_cleared_by_next_up_and_by_down(lab, tmp_path):
    c = Namespace(lab, "qk")
    log = tmp_path / "dns.log"
    env = stub_resolvconf(tmp_path, log)
    up = Up(lab, c, tmp_path, "Address = 10.45.0.2/24, fd45::2/64\nDNS = 10.45.0.53\n\n"
                              f"[Peer]\nPublicKey = {keypair().public}\n"
                              "AllowedIPs = 0.0.0.0/0, ::/0\n", env=env)
    for suffix in (".pid", ".quick.json", ".stats.json"):
        path = os.path.join(RUN_DIRECTORY, up.name + suffix)
        lab.push(f"remove {path}", lambda path=path: os.path.exists(path) and os.unlink(path))
    up.wait_up()
    assert policy(c) == LIVE
    # a second `meshwg up` of the name while the first runs is refused, changing nothing
    again = c.run(MESHWG + ["up", str(up.path)], check=False, env=env)
    assert again.returncode == 1, again.stderr
    assert f"{up.name} is run by meshwg process {up.daemon.pid} already" in again.stderr
    assert policy(c) == LIVE and up.daemon.alive

    first = up.daemon.pid
    kill(up)
    assert policy(c) == LIVE              # what the kernel does not remove with the TUN
    sock = f"/var/run/wireguard/{up.name}.sock"
    assert os.path.exists(sock)           # `wg show` skips it; meshwg down removes it
    up.start(env)                        # the next up clears it first, and says what it was
    up.wait_up()
    said = f"Warning: {up.name}: removed what a killed meshwg left: "
    lines = [line[len(said):] for line in up.daemon.stderr().splitlines() if line.startswith(said)]
    for what in ("IPv4 rule 32765: not fwmark 0xca6c lookup 51820",
                 "IPv4 rule 32764: lookup main suppress_prefixlength 0",
                 "IPv6 rule 32765: not fwmark 0xca6c lookup 51820",
                 "IPv6 rule 32764: lookup main suppress_prefixlength 0",
                 f'3 iptables rules commented "meshwg rule for {up.name}"',
                 f'3 ip6tables rules commented "meshwg rule for {up.name}"',
                 f"DNS ({env['PATH'].split(':')[0]}/resolvconf -d {up.name} -f)",
                 f"stale {RUN_DIRECTORY}/{up.name}.pid (pid {first})",
                 f"control socket {sock} (nobody served it)"):
        assert what in lines, (what, up.daemon.output())
    assert len(lines) == 9, lines
    assert policy(c) == LIVE              # no duplicates
    assert log.read_text().count(f"resolvconf -d {up.name} -f") == 1

    kill(up)
    # another exit-peer interface started now takes the next table: the leftovers' rules
    # name 51820 (empty since the kill), and clearing them must not take its rules
    other = Up(lab, c, tmp_path, f"Address = 10.38.0.2/24\n\n[Peer]\nPublicKey = {keypair().public}\n"
                                 "AllowedIPs = 0.0.0.0/0\n")
    other.wait_up()
    assert c.run(["wg", "show", other.name, "fwmark"]).stdout.strip() == "0xca6d"
    # duplicates (as a run before this fix left them) and a third tunnel's policy
    for family in ("-4", "-6"):
        c.run(["ip", family, "rule", "add", "not", "fwmark", "51820", "table", "51820"])
        c.run(["ip", family, "rule", "add", "table", "main", "suppress_prefixlength", "0"])
        c.run(["ip", family, "rule", "add", "not", "fwmark", "51900", "table", "51900"])
        c.run(["ip", family, "rule", "add", "table", "main", "suppress_prefixlength", "0"])
    down = c.run(MESHWG + ["down", up.name], check=False, env=env)
    assert down.returncode == 0, down.stderr
    assert "Traceback" not in down.stderr and "not fwmark 0xca6c lookup 51820" in down.stderr
    # the other interface's rules and firewall rules stay, and one suppress rule for each
    # other policy of the family (IPv4: 51821 and 51900; IPv6: 51900)
    assert policy(c) == {**NONE, "suppress -4": 2, "suppress -6": 1, "iptables-save": 3}
    assert policy(c, 51821) == {**NONE, "lookup -4": 1, "suppress -4": 2,
                                "suppress -6": 1, "iptables-save": 3}
    for family in ("-4", "-6"):
        assert "lookup 51900" in c.run(["ip", family, "rule"]).stdout
    assert f"dev {other.name}" in c.run(["ip", "route", "get", "203.0.113.1"]).stdout  # still its
    other.down()
    assert policy(c) == {**NONE, "suppress -4": 1, "suppress -6": 1}
    assert log.read_text().count(f"resolvconf -d {up.name} -f") == 2
    for suffix in (".pid", ".quick.json"):
        assert not os.path.exists(os.path.join(RUN_DIRECTORY, up.name + suffix))
    assert not os.path.exists(sock) and f"control socket {sock}" in down.stderr
    # nothing is left: down says so, as for a name never used
    down = c.run(MESHWG + ["down", up.name], check=False, env=env)
    assert down.returncode == 1 and f"{up.name} is not a running meshwg interface" in down.stderr


ROUTED = ("Address = 10.44.0.1/24, fd44::1/64\nMTU = 1420\n\n"
          "[Peer]\nPublicKey = {a}\n"
          "AllowedIPs = 10.44.0.0/24, 10.44.0.7/32, 10.43.0.0/16, fd44::/64, fd44::7/128\n"
          "[Peer]\nPublicKey = {b}\nAllowedIPs = 10.43.5.0/24, 10.42.0.0/16, 10.42.1.0/24, "
          "fd43::/48\n")


def main_table_routes(ns: Namespace, name: str) -> set[str]:
    """The interface's main-table routes as `prefix proto`."""
    out = set()
    for family in ("-4", "-6"):
        for line in ns.run(["ip", family, "route", "show", "dev", name]).stdout.splitlines():
            words = line.split()
            if words[0].startswith("fe80:") or words[0].startswith("ff00:"):
                continue
            proto = words[words.index("proto") + 1] if "proto" in words else "boot"  # ip omits boot
            out.add(f"{words[0]} {proto}")
    return out


def test_up_routes_the_prefixes_wg_quick_routes(lab, tmp_path):
    a, b = keypair().public, keypair().public
    wq_ns, mw_ns = Namespace(lab, "qwq"), Namespace(lab, "qmw")
    name = unique_name("wgq")
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {keypair().private}\n" + ROUTED.format(a=a, b=b))
    conf.chmod(0o600)
    lab.push(f"wg-quick down {name}", lambda: wq_ns.run(["wg-quick", "down", str(conf)], check=False))
    lab.push(f"remove socket {name}", lambda: remove_uapi_socket(name))
    wq = wq_ns.run(["wg-quick", "up", str(conf)], check=False, timeout=60)
    assert wq.returncode == 0, wq.stderr
    expected = main_table_routes(wq_ns, name)
    wq_ns.run(["wg-quick", "down", str(conf)], timeout=60)

    up = Up(lab, mw_ns, tmp_path, ROUTED.format(a=a, b=b))
    up.wait_up()
    assert main_table_routes(mw_ns, up.name) == expected == {
        "10.44.0.0/24 kernel", "10.43.5.0/24 boot", "10.43.0.0/16 boot", "10.42.1.0/24 boot",
        "10.42.0.0/16 boot", "fd44::/64 kernel", "fd43::/48 boot"}
    assert "elsewhere" not in up.daemon.stderr()      # the address's own route is no collision
    up.down()
