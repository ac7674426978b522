"""What members announce on the LAN and what a browser accepts (discovery/lan/records.py)."""

from __future__ import annotations

import base64

import pytest

from discovery.lan.records import (
    SERVICE_TYPE,
    LanPeer,
    MalformedAnnouncement,
    encode_txt,
    instance_label,
    instance_name,
    parse_announcement,
    same_peer_view,
    usable_lan_address,
    validate_identity,
)

KEY_A, KEY_B = b"\xaa" * 32, b"\xbb" * 32


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _props(txt: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def test_instance_label_is_short_dns_label_unique_per_mesh_and_key() -> None:
    labels = {instance_label(m, k) for m in ("M", "N") for k in (KEY_A, KEY_B)}
    assert len(labels) == 4
    for label in labels:
        assert len(label) <= 63 and label == label.lower() and label.startswith("mwg-")
    assert instance_name("M", KEY_A) == f"{instance_label('M', KEY_A)}.{SERVICE_TYPE}"


def test_announcement_round_trips_into_lan_peer() -> None:
    txt = encode_txt("M", KEY_A, "alpha", "100.64.0.1")
    assert txt == {"v": "1", "pub": b64(KEY_A), "mesh": "M", "addr": "100.64.0.1", "name": "alpha"}
    peer = parse_announcement(instance_name("M", KEY_A), _props(txt),
                              ["10.0.0.5", "127.0.0.1", "fe80::1%eth0", "224.0.0.251"], 51820, 7.0)
    assert peer == LanPeer(KEY_A, "M", "alpha", "100.64.0.1", ["10.0.0.5", "fe80::1%eth0"], 51820, 7.0)


@pytest.mark.parametrize("change, reason", [
    ({"v": "2"}, "v"),
    ({"pub": "not base64!"}, "base64"),
    ({"pub": base64.b64encode(b"short").decode()}, "bytes"),
    ({"addr": "nonsense"}, "addr"),
    ({"name": "x" * 64}, "name"),
    ({"mesh": ""}, "mesh"),
])
def test_malformed_txt_is_rejected(change: dict[str, str], reason: str) -> None:
    txt = {**encode_txt("M", KEY_A, "alpha", "100.64.0.1"), **change}
    with pytest.raises(MalformedAnnouncement, match=reason):
        parse_announcement(instance_name("M", KEY_A), _props(txt), ["10.0.0.5"], 51820, 0.0)


def test_missing_key_bad_port_and_borrowed_instance_name_are_rejected() -> None:
    txt = encode_txt("M", KEY_A, "alpha", "100.64.0.1")
    props = _props(txt)
    del props[b"pub"]
    with pytest.raises(MalformedAnnouncement, match="pub"):
        parse_announcement(instance_name("M", KEY_A), props, [], 51820, 0.0)
    with pytest.raises(MalformedAnnouncement, match="port"):
        parse_announcement(instance_name("M", KEY_A), _props(txt), [], 0, 0.0)
    with pytest.raises(MalformedAnnouncement, match="instance name"):
        parse_announcement(instance_name("M", KEY_B), _props(txt), [], 51820, 0.0)
    props = _props(txt)
    props[b"name"] = b"\xff\xfe"
    with pytest.raises(MalformedAnnouncement, match="UTF-8"):
        parse_announcement(instance_name("M", KEY_A), props, [], 51820, 0.0)


def test_bad_local_identity_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"mesh address 'x' is not an IP address"):
        validate_identity("M", KEY_A, "alpha", "x", 51820)
    with pytest.raises(ValueError, match="public key must be 32 bytes, got 3"):
        validate_identity("M", b"abc", "alpha", "100.64.0.1", 51820)
    with pytest.raises(ValueError, match="port 0"):
        validate_identity("M", KEY_A, "alpha", "100.64.0.1", 0)


def test_peer_views_compare_without_last_seen() -> None:
    a = {KEY_A: LanPeer(KEY_A, "M", "a", "100.64.0.1", ["10.0.0.1"], 1, 1.0)}
    b = {KEY_A: LanPeer(KEY_A, "M", "a", "100.64.0.1", ["10.0.0.1"], 1, 2.0)}
    c = {KEY_A: LanPeer(KEY_A, "M", "a", "100.64.0.1", ["10.0.0.2"], 1, 1.0)}
    assert same_peer_view(a, b) and not same_peer_view(a, c) and not same_peer_view(a, {})


def test_usable_lan_addresses() -> None:
    for ok in ("10.0.0.5", "fe80::1%eth0", "2001:db8::1"):
        assert usable_lan_address(ok)
    for bad in ("127.0.0.1", "::1", "224.0.0.251", "ff02::fb", "0.0.0.0", "::", "nonsense"):
        assert not usable_lan_address(bad)
