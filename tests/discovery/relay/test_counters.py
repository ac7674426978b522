"""The relay's own counters (discovery.relay.server): forwarded datagrams and bytes per
sending member, drops by reason, as `meshwg status --json` and `meshwg members --json`
show them. Driven through RelayServer.handle (no sockets)."""

from __future__ import annotations

import time

from meshwg.core import crypto

from discovery.relay import wire
from discovery.relay.server import RelayServer


def _member():
    private = crypto.generate_private_key()
    return private, crypto.public_key(private)


def test_forwarded_traffic_is_counted_per_sender_and_strangers_by_reason() -> None:
    relay_private = crypto.generate_private_key()
    (a_priv, a_pub), (b_priv, b_pub), (s_priv, s_pub) = _member(), _member(), _member()
    server = RelayServer(relay_private, members=[a_pub, b_pub])
    keys = {pub: wire.relay_key(priv, pub, server.public_key, member_side=True)
            for priv, pub in ((a_priv, a_pub), (b_priv, b_pub), (s_priv, s_pub))}
    where = {a_pub: ("198.18.1.1", 40001), b_pub: ("198.18.3.1", 40002), s_pub: ("203.0.113.9", 1)}
    now_ns = time.time_ns()
    for n, pub in enumerate((a_pub, b_pub)):
        bind = wire.encode_bind(wire.BIND, keys[pub], wire.member_id(pub), now_ns + n)
        assert server.handle(bind, where[pub], now=1.0, now_ns=now_ns)[1] == where[pub]
    payload = b"w" * 148
    for _ in range(3):
        send = wire.encode_send(wire.SEND, keys[a_pub], wire.member_id(a_pub), wire.member_id(b_pub), payload)
        out, target = server.handle(send, where[a_pub], now=2.0)
        assert target == where[b_pub] and len(out) == len(send)
    back = wire.encode_send(wire.SEND, keys[b_pub], wire.member_id(b_pub), wire.member_id(a_pub), payload)
    server.handle(back, where[b_pub], now=2.0)
    stranger = wire.encode_send(wire.SEND, keys[s_pub], wire.member_id(s_pub), wire.member_id(a_pub), payload)
    assert server.handle(stranger, where[s_pub], now=2.0) is None
    assert server.handle(b"junk", where[s_pub], now=2.0) is None

    size = len(payload) + wire.SEND_OVERHEAD
    assert server.member_counters() == {
        a_pub: {"forwarded_datagrams": 3, "forwarded_bytes": 3 * size},
        b_pub: {"forwarded_datagrams": 1, "forwarded_bytes": size}}
    status = server.status({a_pub: "a1", b_pub: "c"})
    assert status["members"] == {"a1": {"forwarded_datagrams": 3, "forwarded_bytes": 3 * size},
                                 "c": {"forwarded_datagrams": 1, "forwarded_bytes": size}}
    assert status["counters"]["forwarded_datagrams"] == 4
    assert status["counters"]["dropped_unknown_member"] == 1
    assert status["counters"]["dropped_malformed"] == 1
