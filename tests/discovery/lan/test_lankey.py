"""LAN announcements provably from the member they name (issue 9 case 3;
discovery/lan/lankey.py): the key file, the signed TXT, and what LanVerifier accepts,
drops and counts. The namespace test of the attack is test_lan_stranger.py."""

from __future__ import annotations

import base64
import json
import queue
import socket
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.txt import member_from_fields, parse_txt, txt_strings
from discovery.lan.lankey import (
    LAN_KEY_FILE, LAN_KEY_TXT, MAX_AGE, MAX_SIGNED_ADDRESSES, MAX_SKEW, LanVerifier,
    directory_lan_keys, ensure_lan_key, lan_key_txt, parse_lan_key, public_lan_key,
    signable_addresses, signed_txt,
)
from discovery.lan.records import (
    MalformedAnnouncement, encode_txt, instance_name, parse_announcement,
)
from discovery.traversal.report import CandidateReportServer, send_report

MESH = "M"
WG_A2 = b"\xa2" * 32
NOW = 1_800_000_000.0
A2_LAN = ["10.1.0.11", "fe80::11"]


def _announcement(key: Ed25519PrivateKey | None, addresses: list[str], heard: list[str] | None = None,
                  when: int = int(NOW), port: int = 51822, wg: bytes = WG_A2, **change: str):
    """What a browser makes of an announcement signed by `key` over `addresses` (heard
    with A/AAAA records `heard`, default the same)."""
    txt = encode_txt(MESH, wg, "a2", "10.99.0.3")
    if key is not None:
        txt.update(signed_txt(key, MESH, wg, port, signable_addresses(addresses), when))
    txt.update(change)
    props = {k.encode(): v.encode() for k, v in txt.items()}
    return parse_announcement(instance_name(MESH, wg), props,
                              heard if heard is not None else addresses, port, NOW)


@pytest.fixture
def a2_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _keys(key: Ed25519PrivateKey) -> dict[bytes, bytes]:
    return {WG_A2: public_lan_key(key)}


def test_the_key_file_is_made_once_0600_and_replaced_when_damaged(tmp_path) -> None:
    key = ensure_lan_key(tmp_path)
    path = tmp_path / LAN_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_lan_key(ensure_lan_key(tmp_path)) == public_lan_key(key)
    path.write_text("not a key\n")
    assert public_lan_key(ensure_lan_key(tmp_path)) != public_lan_key(key)


def test_a_signed_announcement_verifies_under_the_directory_key(a2_key) -> None:
    peer = _announcement(a2_key, A2_LAN, heard=["10.1.0.11", "fe80::11%eth0"])
    verifier = LanVerifier()
    out = verifier.verify({WG_A2: peer}, _keys(a2_key), NOW)
    assert out[WG_A2].addresses == ["10.1.0.11", "fe80::11%eth0"]
    assert verifier.counters.accepted == 1


def test_only_signed_addresses_are_used(a2_key) -> None:
    # a stranger adds an A record of its own to a2's host name: ignored, counted
    peer = _announcement(a2_key, ["10.1.0.11"], heard=["10.1.0.11", "10.1.0.66"])
    verifier = LanVerifier()
    assert verifier.verify({WG_A2: peer}, _keys(a2_key), NOW)[WG_A2].addresses == ["10.1.0.11"]
    assert verifier.counters.unsigned_address == 1
    # a2's signed TXT with the stranger's SRV and address: not used, the verified one kept
    copied = _announcement(a2_key, ["10.1.0.11"], heard=["10.1.0.66"])
    assert verifier.verify({WG_A2: copied}, _keys(a2_key), NOW + 1)[WG_A2].addresses == ["10.1.0.11"]
    assert LanVerifier().verify({WG_A2: copied}, _keys(a2_key), NOW) == {}


@pytest.mark.parametrize("reason", ["no_key", "unsigned", "bad_signature", "stale_old",
                                    "stale_future", "other_port", "other_address"])
def test_unverifiable_announcements_are_dropped_and_counted(a2_key, reason) -> None:
    keys = _keys(a2_key)
    stranger = Ed25519PrivateKey.generate()
    peer = {
        "no_key": lambda: _announcement(a2_key, A2_LAN),
        "unsigned": lambda: _announcement(None, ["10.1.0.66"]),
        "bad_signature": lambda: _announcement(stranger, ["10.1.0.66"]),
        "stale_old": lambda: _announcement(a2_key, A2_LAN, when=int(NOW - MAX_AGE - 1)),
        "stale_future": lambda: _announcement(a2_key, A2_LAN, when=int(NOW + MAX_SKEW + 5)),
        # a2's signature replayed with another port or another signed address list
        "other_port": lambda: _replayed(a2_key, port=4000),
        "other_address": lambda: _replayed(a2_key, ip="10.1.0.66"),
    }[reason]()
    verifier = LanVerifier()
    assert verifier.verify({WG_A2: peer}, {} if reason == "no_key" else keys, NOW) == {}
    counted = {k: v for k, v in vars(verifier.counters).items() if v}
    expected = reason.split("_")[0] if reason.startswith("stale") else reason
    expected = "bad_signature" if reason.startswith("other") else expected
    assert counted == {expected: 1}


def _replayed(key: Ed25519PrivateKey, port: int | None = None, ip: str | None = None):
    txt = signed_txt(key, MESH, WG_A2, 51822, ["10.1.0.11"], int(NOW))
    if ip is not None:
        txt["ip"] = ip
    return _announcement(None, [ip or "10.1.0.11"], port=port or 51822, **txt)


def test_an_unverifiable_announcement_never_replaces_the_verified_one(a2_key) -> None:
    keys = _keys(a2_key)
    verifier = LanVerifier()
    genuine = _announcement(a2_key, ["10.1.0.11"])
    assert verifier.verify({WG_A2: genuine}, keys, NOW)[WG_A2].addresses == ["10.1.0.11"]
    forged = _announcement(Ed25519PrivateKey.generate(), ["10.1.0.66"])
    for round_ in range(5):         # the stranger's records win the cache: several rounds
        out = verifier.verify({WG_A2: forged}, keys, NOW + round_)
        assert out[WG_A2].addresses == ["10.1.0.11"]
    assert verifier.counters.bad_signature == 1    # once per distinct announcement
    # an older genuine one replayed (a2 moved since): stale, the newer one stays
    newer = _announcement(a2_key, ["10.1.0.12"], when=int(NOW) + 10)
    assert verifier.verify({WG_A2: newer}, keys, NOW + 10)[WG_A2].addresses == ["10.1.0.12"]
    assert verifier.verify({WG_A2: genuine}, keys, NOW + 11)[WG_A2].addresses == ["10.1.0.12"]
    assert verifier.counters.stale == 1
    # the kept one ages out, goes when K leaves the LAN and when K's LAN key changes
    assert verifier.verify({WG_A2: forged}, keys, NOW + 10 + MAX_AGE + 1) == {}
    verifier.verify({WG_A2: newer}, keys, NOW + 10)
    assert verifier.verify({}, keys, NOW + 10) == {}
    assert verifier.verify({WG_A2: forged}, keys, NOW + 10) == {}
    verifier.verify({WG_A2: newer}, keys, NOW + 10)
    other = {WG_A2: public_lan_key(Ed25519PrivateKey.generate())}
    assert verifier.verify({WG_A2: forged}, other, NOW + 10) == {}


def test_malformed_signature_fields_make_a_malformed_announcement(a2_key) -> None:
    good = signed_txt(a2_key, MESH, WG_A2, 51822, ["10.1.0.11"], int(NOW))
    bad = [
        {"sig": "%%%"}, {"sig": base64.b64encode(b"x" * 63).decode()}, {"sig": "A" * 200},
        {"ts": "9" * 5000}, {"ts": "-5"}, {"ts": "１２"}, {"ip": "host.example"},
        {"ip": ",".join(f"10.0.0.{i}" for i in range(MAX_SIGNED_ADDRESSES + 1))},
        {"ip": "1" * 300},
    ]
    for change in bad:
        with pytest.raises(MalformedAnnouncement):
            _announcement(None, ["10.1.0.11"], **{**good, **change})
    with pytest.raises(MalformedAnnouncement):      # sig without ip and ts
        _announcement(None, ["10.1.0.11"], sig=good["sig"])


def test_the_signed_txt_fits_mdns_limits(a2_key) -> None:
    many = [f"2001:db8:{i:x}::{i:x}:ffff:ffff:ffff" for i in range(20)] + ["10.0.0.1"]
    addresses = signable_addresses(many)
    assert 1 <= len(addresses) <= MAX_SIGNED_ADDRESSES
    txt = {**encode_txt("m" * 63, WG_A2, "n" * 63, "fd00::1/64"),
           **signed_txt(a2_key, "m" * 63, WG_A2, 65535, addresses, 2**33)}
    strings = [f"{k}={v}".encode() for k, v in txt.items()]
    assert max(map(len, strings)) <= 255
    assert sum(len(s) + 1 for s in strings) < 1300   # one packet with SRV and addresses
    peer = parse_announcement(instance_name("m" * 63, WG_A2),
                              {k.encode(): v.encode() for k, v in txt.items()}, addresses,
                              65535, NOW)
    assert peer.signature is not None and list(peer.signature.addresses) == addresses


def test_the_directory_carries_the_lan_key_in_txt(a2_key) -> None:
    lk = lan_key_txt(public_lan_key(a2_key))
    record = MemberRecord(WG_A2, ("198.18.1.1", 40001), ["10.99.0.3/32"], "a2", "10.99.0.3",
                          extra={LAN_KEY_TXT: lk})
    back = member_from_fields(WG_A2, record.endpoint, parse_txt(txt_strings(record)))
    assert back.extra[LAN_KEY_TXT] == lk
    junk = MemberRecord(b"\x01" * 32, None, [], extra={LAN_KEY_TXT: "not-a-key"})
    assert directory_lan_keys({WG_A2: back, junk.public_key: junk}) == _keys(a2_key)
    with pytest.raises(ValueError):
        parse_lan_key("A" * 500)


def test_the_report_carries_the_lan_key_to_the_rendezvous(a2_key) -> None:
    got: queue.Queue = queue.Queue()
    srv = CandidateReportServer("127.0.0.1", 0, lambda source, c: None,
                                on_lan_key=lambda source, key: got.put((source, key))).start()
    try:
        lk = lan_key_txt(public_lan_key(a2_key))
        send_report("127.0.0.1", srv.port, ["10.1.0.11:51822"], lan_key=lk)
        assert got.get(timeout=5) == ("127.0.0.1", public_lan_key(a2_key))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(json.dumps({"candidates": [], "lk": "short"}).encode() + b"\n")
            assert b'"ok": false' in sock.recv(256)
        assert srv.dropped == 1 and got.empty()
    finally:
        srv.stop()

