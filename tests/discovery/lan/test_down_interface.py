"""mDNS on a host with an interface that is down but holds an address (issue 9, case 21):
the down interface is skipped (no traceback, its address neither announced nor reported as
a LAN candidate), and used once it comes up. A host namespace on a real LAN bridge
(discovery/lab/lan.py) with a second interface, a veth left down."""

from __future__ import annotations

import json

import pytest

from discovery.lab.lan import Lan
from discovery.lab.netns import Cleanup, unavailable_reason

DOWN_ADDRESS = "10.88.0.1"

ANNOUNCE = r"""
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from discovery.lan.announcer import MdnsAnnouncer
from discovery.lan.interfaces import interface_is_up, lan_addresses, local_interfaces
announcer = MdnsAnnouncer("M", b"\xaa" * 32, "alpha", "100.64.0.1", 51820)
announcer.start()
try:
    print(json.dumps({"up": interface_is_up("dn0"),
                      "interfaces": [i.name for i in local_interfaces()],
                      "candidates": [a for a, _net, _name in lan_addresses()],
                      "announced": announcer.addresses}))
finally:
    announcer.stop()
"""


@pytest.fixture
def host():
    reason = unavailable_reason(("ip",))
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        ns = Lan(cleanup).add_host("a", 1)
        ns.run(["ip", "link", "add", "dn0", "type", "veth", "peer", "name", "dn1"])
        ns.run(["ip", "address", "add", f"{DOWN_ADDRESS}/24", "dev", "dn0"])
        yield ns


def announce(ns) -> tuple[dict, str]:
    out = ns.run_python(ANNOUNCE, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.mark.netns
def test_down_interface_is_skipped_and_used_once_up(host) -> None:
    seen, log = announce(host)
    assert "Traceback" not in log, log
    assert DOWN_ADDRESS not in seen["announced"] and "10.77.0.1" in seen["announced"]
    assert DOWN_ADDRESS not in seen["candidates"] and "10.77.0.1" in seen["candidates"]
    assert "dn0" not in seen["interfaces"] and "eth0" in seen["interfaces"]
    assert seen["up"] is False

    host.run(["ip", "link", "set", "dn1", "up"])
    host.run(["ip", "link", "set", "dn0", "up"])
    seen, log = announce(host)
    assert seen["up"] is True and "dn0" in seen["interfaces"]
    assert DOWN_ADDRESS in seen["candidates"] and DOWN_ADDRESS in seen["announced"]
    assert "Traceback" not in log, log
