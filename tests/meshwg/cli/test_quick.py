"""meshwg.cli.quick without namespaces: wg-quick's MTU rule, the route plan, collisions,
hooks, the resolver commands and SaveConfig's file (issue 9, cases 15-17 and 20)."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_interface, ip_network
from types import SimpleNamespace

import pytest

from meshwg.cli.quick import (DnsSetting, QuickError, check_collisions, derive_mtu, plan_routes,
                              resolvconf_name, run_hooks, saved_config)
from meshwg.config.wgquick import ConfigError, format_config, parse_config
from meshwg.core.keys import decode_key, generate_private_key_b64, public_key_b64
from tests import REPO

PRIV = generate_private_key_b64()
PUB1 = public_key_b64(generate_private_key_b64())
PUB2 = public_key_b64(generate_private_key_b64())


def config(interface: str = "", peers: str = "", path: str = "q.conf"):
    return parse_config(f"[Interface]\nPrivateKey = {PRIV}\n{interface}{peers}", path)


TWO_PEERS = (f"[Peer]\nPublicKey = {PUB1}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = 10.1.0.0/24\n"
             f"[Peer]\nPublicKey = {PUB2}\nEndpoint = [fd00::2]:51820\n"
             f"AllowedIPs = 0.0.0.0/0, ::/0\n")


def test_mtu_line_wins():
    assert derive_mtu(config("MTU = 1300\n", TWO_PEERS), lambda a: 9000, lambda: 9000) == 1300


def test_mtu_is_smallest_endpoint_route_minus_80():
    routes = {"192.0.2.1": 1500, "fd00::2": 1280}
    assert derive_mtu(config("", TWO_PEERS), routes.get, lambda: 9000) == 1200


def test_mtu_skips_endpoints_without_route_then_default_route_then_1500():
    cfg = config("", TWO_PEERS)
    assert derive_mtu(cfg, {"192.0.2.1": 1400}.get, lambda: 1280) == 1320
    assert derive_mtu(cfg, lambda a: None, lambda: 1280) == 1200
    assert derive_mtu(cfg, lambda a: None, lambda: None) == 1420
    assert derive_mtu(config(), lambda a: 1, lambda: 100) == 68     # never below 68


def test_route_plan_for_each_table():
    no_table = lambda: pytest.fail("no table needed")        # noqa: E731
    assert plan_routes(config("Table = off\n", TWO_PEERS), free_table=no_table).device_routes is False
    assert plan_routes(config("", TWO_PEERS), no_routes=True, free_table=no_table).device_routes is False
    numbered = plan_routes(config("Table = 1234\n", TWO_PEERS), free_table=no_table)
    assert (numbered.device_routes, numbered.table, numbered.default_routes) == (False, 1234, ())
    assert plan_routes(config("Table = main\n", TWO_PEERS), free_table=no_table).table == 254
    plain = plan_routes(config("", f"[Peer]\nPublicKey = {PUB1}\nAllowedIPs = 10.1.0.0/24\n"),
                        free_table=no_table)
    assert (plain.device_routes, plain.table, plain.policy_table) == (True, None, None)
    auto = plan_routes(config("Table = auto\n", TWO_PEERS), free_table=lambda: 51821)
    assert auto.device_routes and auto.policy_table == 51821
    assert auto.default_routes == (ip_network("0.0.0.0/0"), ip_network("::/0"))
    marked = plan_routes(config("FwMark = 0x1234\n", TWO_PEERS), free_table=no_table)
    assert marked.policy_table == 0x1234


def test_collision_names_the_allowed_ips_line_and_device():
    cfg = config("", TWO_PEERS, "/etc/wg/c.conf")
    seen = []

    def colliding(name, nets, table):
        seen.append((name, set(nets), table))
        return {ip_network("10.1.0.0/24"): "eth7"}
    with pytest.raises(ConfigError) as info:
        check_collisions(cfg, plan_routes(cfg, free_table=lambda: 51820), "wg9", colliding)
    assert str(info.value).startswith("/etc/wg/c.conf:6: AllowedIPs: 10.1.0.0/24 is routed "
                                      "through eth7 already (main table)")
    # the /0 routes go to the policy table: not checked against main
    assert seen == [("wg9", {ip_network("10.1.0.0/24")}, 254)]
    check_collisions(cfg, plan_routes(cfg, free_table=lambda: 51820), "wg9", lambda *a: {})
    numbered = config("Table = 77\n", TWO_PEERS)
    seen.clear()
    with pytest.raises(ConfigError, match=r"\(table 77\)"):
        check_collisions(numbered, plan_routes(numbered), "wg9", colliding)
    assert seen[0][2] == 77 and ip_network("0.0.0.0/0") in seen[0][1]
    off = config("Table = off\n", TWO_PEERS)
    check_collisions(off, plan_routes(off), "wg9", lambda *a: pytest.fail("not checked"))


def test_hooks_run_in_bash_with_interface_name(tmp_path, capfd):
    out = tmp_path / "out"
    run_hooks("PostUp", [f"echo %i-$((1+1)) >> {out}", f"[[ -n x ]] && echo b%i >> {out}"], "wgz")
    assert out.read_text() == "wgz-2\nbwgz\n"
    assert f"[#] echo wgz-$((1+1)) >> {out}" in capfd.readouterr().err


def test_failing_hook_stops_and_is_one_line(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(QuickError) as info:
        run_hooks("PreUp", ["exit 3", f"touch {out}"], "wgz")
    assert str(info.value) == "PreUp hook failed (exit status 3): exit 3"
    assert not out.exists()


def fake_tool(tmp_path, name: str, status: int = 0):
    """A stand-in for the host's resolver tool that records its arguments and input."""
    log = tmp_path / f"{name}.log"
    tool = tmp_path / name
    tool.write_text(f"#!/bin/bash\n{{ echo \"ARGS $*\"; [[ $1 == -a ]] && cat; }} >> {log}\n"
                    f"exit {status}\n")
    tool.chmod(0o755)
    return str(tool), log


def test_dns_through_resolvconf(tmp_path):
    tool, log = fake_tool(tmp_path, "resolvconf")
    dns = DnsSetting("wgz", ["10.0.0.53", "fd00::53"], ["corp.example"],
                     which={"resolvconf": tool}.get)
    dns.set()
    dns.unset()
    dns.unset()                                     # once only
    assert log.read_text() == ("ARGS -a wgz -m 0 -x\nnameserver 10.0.0.53\nnameserver fd00::53\n"
                               "search corp.example\nARGS -d wgz -f\n")


def test_dns_through_systemd_resolved(tmp_path):
    tool, log = fake_tool(tmp_path, "resolvectl")
    dns = DnsSetting("wgz", ["10.0.0.53"], ["corp.example"], which={"resolvectl": tool}.get,
                     resolved_run=str(tmp_path))
    dns.set()
    dns.unset()
    assert log.read_text() == ("ARGS dns wgz 10.0.0.53\nARGS domain wgz ~. corp.example\n"
                               "ARGS revert wgz\n")


def test_dns_without_a_resolver_manager_or_failing_is_refused(tmp_path):
    with pytest.raises(QuickError, match="resolvconf or systemd-resolved"):
        DnsSetting("wgz", ["10.0.0.53"], [], which=lambda name: None).set()
    tool, _log = fake_tool(tmp_path, "resolvconf", status=1)
    with pytest.raises(QuickError, match="exit status 1"):
        DnsSetting("wgz", ["10.0.0.53"], [], which={"resolvconf": tool}.get).set()


def test_resolvconf_interface_order_prefix(tmp_path):
    order = tmp_path / "interface-order"
    order.write_text("lo.inet*\nlo.dnsmasq\ntun*\ntap*\n")
    real = tmp_path / "resolvconf"
    real.write_text("")
    assert resolvconf_name("wg0", str(real), str(order)) == "tun.wg0"
    link = tmp_path / "link"
    link.symlink_to(real)
    assert resolvconf_name("wg0", str(link), str(order)) == "wg0"
    assert resolvconf_name("wg0", str(real), str(tmp_path / "none")) == "wg0"


def test_saved_config_is_the_running_state_plus_wg_quick_keys():
    cfg = config("Address = 10.1.0.9/24\nDNS = 10.0.0.53, corp.example\nTable = 1234\n"
                 "SaveConfig = true\nPostUp = echo %i # up\nPreDown = true\n", TWO_PEERS)
    peer = SimpleNamespace(public_key=decode_key(PUB1), preshared_key=None,
                           allowed_ips=[ip_network("10.1.0.0/24"), ip_network("10.2.0.0/16")],
                           endpoint=("192.0.2.77", 4242), persistent_keepalive=25)
    status = SimpleNamespace(private_key=decode_key(PRIV), listen_port=40000, fwmark=0,
                             peers=[peer])
    saved = saved_config(cfg, status, [ip_interface("10.1.0.9/24"), ip_interface("fd01::9/64")], 1420)
    again = parse_config(format_config(saved))
    assert again.listen_port == 40000 and again.mtu is None and again.fwmark is None
    assert again.addresses == [ip_interface("10.1.0.9/24"), ip_interface("fd01::9/64")]
    assert again.dns == ["10.0.0.53"] and again.dns_search == ["corp.example"]
    assert again.table == "1234" and again.save_config
    assert again.post_up == ["echo %i # up"] and again.pre_down == ["true"]
    (p,) = again.peers
    assert p.endpoint == ("192.0.2.77", 4242) and p.persistent_keepalive == 25
    assert p.allowed_ips == [ip_network("10.1.0.0/24"), ip_network("10.2.0.0/16")]
    with_mtu = saved_config(config("MTU = 1300\n"), status, [], 1280)
    assert with_mtu.mtu == 1280


def test_meshwg_up_case_19_inputs_through_the_command_line(tmp_path):
    """Case 19 as a user meets it: 5,000 digits of PersistentKeepalive (after an
    unbracketed IPv6 endpoint, accepted) and an all-zero PrivateKey are one FILE:LINE line,
    exit status 1, before anything is created. (What is accepted is shown by
    tests/meshwg/config/test_wgquick_compat.py.)"""
    def up(text: str, name: str):
        path = tmp_path / name
        path.write_bytes(text.encode())
        path.chmod(0o600)
        return path, subprocess.run([sys.executable, "-m", "meshwg", "up", str(path)],
                                    capture_output=True, text=True, timeout=60, cwd=REPO)
    path, out = up(f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB1}\n"
                   f"Endpoint = fd77::2:51820\nPersistentKeepalive = {'9' * 5000}\n", "mwk1.conf")
    err = out.stderr.strip()
    assert out.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{path}:6: PersistentKeepalive" in err and len(err) < 300
    path, out = up(f"[Interface]\nPrivateKey = {'A' * 43}=\n", "mwk2.conf")
    assert out.returncode == 1 and f"{path}:2: PrivateKey: all zeros" in out.stderr
