"""DNS NOTIFY from the rendezvous to members (discovery/dnssd/notify.py), on loopback."""

import socket
import threading

import dns.message
import dns.opcode

from discovery.dnssd.notify import Notifier, NotifyListener, build_notify, is_notify_for

ZONE = "mesh.internal."


def test_notify_message_is_a_dns_notify_for_the_zone():
    wire = build_notify(ZONE)
    msg = dns.message.from_wire(wire)          # an independent parse
    assert msg.opcode() == dns.opcode.NOTIFY
    assert str(msg.question[0].name) == ZONE
    assert is_notify_for(wire, ZONE)
    assert not is_notify_for(wire, "other.zone.")
    assert not is_notify_for(b"\x00garbage", ZONE)
    query = dns.message.make_query(ZONE, "SOA").to_wire()
    assert not is_notify_for(query, ZONE)      # a plain query is no NOTIFY


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listener_accepts_only_the_rendezvous():
    port = _free_port()
    got = threading.Event()
    listener = NotifyListener("127.0.0.1", ZONE, "127.0.0.2", got.set, port=port).start()
    try:
        stranger = Notifier(ZONE, "127.0.0.3")
        stranger.notify(["127.0.0.1"], port)
        rendezvous = Notifier(ZONE, "127.0.0.2")
        wrong_zone = Notifier("other.zone.", "127.0.0.2")
        wrong_zone.notify(["127.0.0.1"], port)
        rendezvous.notify(["127.0.0.1"], port)
        assert got.wait(5)
        assert listener.received == 1
        assert listener.dropped == 2            # stranger and wrong zone, counted
        for n in (stranger, rendezvous, wrong_zone):
            n.close()
    finally:
        listener.stop()
