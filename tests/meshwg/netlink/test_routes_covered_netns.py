"""A prefix a route through the interface covers already is not routed again, as wg-quick's
add_route (`[[ -n $(ip route show dev IFACE match PREFIX) ]] || ip route add PREFIX dev
IFACE`): change_routes(skip_covered=True) decides prefix by prefix as that `ip` command
does in the same namespace, a covering route being deleted in the same call does not
count, and the batches stay batches."""

from __future__ import annotations

import json

import pytest

from discovery.lab.netns import Cleanup, Namespace

pytestmark = pytest.mark.netns

CHANGE = r"""
import json, sys
from meshwg.netlink.routes import change_routes
name, add, delete = sys.argv[1], sys.argv[2].split(","), [d for d in sys.argv[3].split(",") if d]
r = change_routes(name, add=add, delete=delete, skip_covered=True)
print(json.dumps({k: sorted(map(str, getattr(r, k)))
                  for k in ("added", "covered", "exists", "deleted", "failed")}))
"""

PREFIXES = ["10.70.0.0/24", "10.70.0.0/25", "10.70.0.5/32", "10.70.0.0/16", "10.71.0.0/24",
            "10.74.3.0/24", "10.76.0.0/15", "fd70::/64", "fd70::5/128", "fd70::/48",
            "fd71::/64", "fd74:0:0:3::/64"]


def change(ns: Namespace, add: list[str], delete: list[str] = ()) -> dict:
    out = ns.run_python(CHANGE, "mt0", ",".join(add), ",".join(delete), timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def wg_quick_would_skip(ns: Namespace, prefix: str) -> bool:
    """wg-quick's own test for one prefix, run by `ip` in the namespace."""
    family = "-6" if ":" in prefix else "-4"
    return ns.run(["ip", family, "route", "show", "dev", "mt0", "match", prefix]).stdout.strip() != ""


def link(ns: Namespace) -> None:
    ns.run(["ip", "link", "add", "mt0", "type", "veth", "peer", "name", "mt1"])
    for name in ("mt0", "mt1"):
        ns.run(["ip", "link", "set", name, "up"])


def ours(ns: Namespace) -> set[str]:
    out = "".join(ns.run(["ip", f, "route", "show", "dev", "mt0", "proto", "boot"]).stdout
                  for f in ("-4", "-6"))
    return {line.split()[0] for line in out.splitlines()}


def test_covered_prefixes_are_skipped_as_wg_quick_decides(lab: Cleanup) -> None:
    ns = Namespace(lab, "rcov")
    link(ns)
    ns.run(["ip", "address", "add", "10.70.0.1/24", "dev", "mt0"])
    ns.run(["ip", "-6", "address", "add", "fd70::1/64", "dev", "mt0", "nodad"])
    # wider routes through the interface, as a wider allowed IP routed earlier would be
    ns.run(["ip", "route", "add", "10.74.0.0/16", "dev", "mt0"])
    ns.run(["ip", "-6", "route", "add", "fd74::/32", "dev", "mt0"])
    expected = {p for p in PREFIXES if wg_quick_would_skip(ns, p)}
    assert expected == {"10.70.0.0/24", "10.70.0.0/25", "10.70.0.5/32", "10.74.3.0/24",
                        "fd70::/64", "fd70::5/128", "fd74:0:0:3::/64"}   # the lab is as meant
    got = change(ns, PREFIXES)
    assert set(got["covered"]) == expected, got
    assert set(got["added"]) == set(PREFIXES) - expected and not got["exists"], got
    assert ours(ns) >= set(got["added"]) and not ours(ns) & expected
    # the covering route goes in the same call: what it covered is routed now
    got = change(ns, ["10.74.3.0/24", "fd74:0:0:3::/64"], ["10.74.0.0/16", "fd74::/32"])
    assert set(got["added"]) == {"10.74.3.0/24", "fd74:0:0:3::/64"}, got
    assert set(got["deleted"]) == {"10.74.0.0/16", "fd74::/32"} and not got["covered"], got
    # again: everything is routed or covered (an equal route covers too, as `match` says)
    got = change(ns, PREFIXES)
    assert not got["added"] and not got["exists"] and set(got["covered"]) == set(PREFIXES), got


def test_thousands_of_covered_and_free_prefixes_in_one_call(lab: Cleanup) -> None:
    """The dump and the decision scale: 10,000 /32s under the address's /16 are covered,
    10,000 outside are added, in one call."""
    ns = Namespace(lab, "rcov2")
    link(ns)
    ns.run(["ip", "address", "add", "10.80.0.1/16", "dev", "mt0"])
    code = CHANGE.replace("name, add, delete = sys.argv[1], sys.argv[2].split(\",\"), "
                          "[d for d in sys.argv[3].split(\",\") if d]",
                          "import ipaddress\nname, delete = 'mt0', []\n"
                          "add = [ipaddress.ip_network((int(ipaddress.ip_address(b)) + i, 32))"
                          " for b in ('10.80.0.0', '10.81.0.0') for i in range(10000)]")
    got = json.loads(ns.run_python(code, timeout=300).stdout.strip().splitlines()[-1])
    assert len(got["covered"]) == 10000 and all(p.startswith("10.80.") for p in got["covered"])
    assert len(got["added"]) == 10000 and all(p.startswith("10.81.") for p in got["added"])
    assert len(ours(ns)) == 10000
