"""The member's NAT kind learnt while it runs (discovery.daemons.hard_nat.set_nat): its own
netcheck may tell it after start, so the birthday sockets open then, the kind is reported
again, and a check that could not tell keeps the kind known."""

from __future__ import annotations

import resource
import socket
from types import SimpleNamespace

from discovery.daemons.hard_nat import DESCRIPTORS_BASE, HardNatTraversal
from discovery.dnssd.member import MemberRecord
from discovery.traversal.birthday import MAX_HARD, NAT_TXT_KEY, SOCKETS


def _engine_socket() -> tuple[socket.socket, SimpleNamespace]:
    """A UDP socket standing in for the engine's: its port and a sender (what
    BirthdaySockets takes from the Device)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, SimpleNamespace(listen_port=sock.getsockname()[1],
                                 send_side=lambda data, endpoint: sock.sendto(data, endpoint))


def test_unknown_then_hard_opens_the_sockets_and_raises_the_descriptor_limit() -> None:
    sock, device = _engine_socket()
    traversal = HardNatTraversal(None)
    try:
        traversal.start(device, lambda: None)
        assert traversal.sockets is None and traversal.status() is None
        assert traversal.set_nat(True) is True
        assert traversal.nat == "hard" and traversal.planner.own_nat == "hard"
        assert traversal.sockets is not None
        assert traversal.status()["nat"] == "hard" and traversal.status()["proxies"] == {}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = DESCRIPTORS_BASE + MAX_HARD * SOCKETS
        assert soft >= (want if hard == resource.RLIM_INFINITY else min(want, hard))
        assert traversal.set_nat(True) is False          # unchanged: nothing to report
    finally:
        traversal.stop()
        sock.close()


def test_the_kind_changes_only_on_a_finding_and_is_published_again() -> None:
    traversal = HardNatTraversal(False)
    record = MemberRecord(b"k" * 32, None, [], name="a", extra={NAT_TXT_KEY: "easy"})
    assert traversal.published(record)
    assert traversal.set_nat(None) is False and traversal.nat == "easy"   # could not tell
    assert traversal.set_nat(True) is True and traversal.nat == "hard"
    assert not traversal.published(record)               # the directory still says easy
    assert traversal.sockets is None                     # not started: nothing opened
