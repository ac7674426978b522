"""Checks of names, candidates, zones and keys (discovery/stores/validate.py)."""

from __future__ import annotations

import base64

import pytest

from meshwg.core import crypto

from discovery.stores.validate import (
    MAX_CANDIDATES, RESERVED_NAMES, check_strong_key, normalize_zone, screen_candidates, public_key_bytes, validate_candidates,
    validate_interface_name, validate_name,
)


def test_validate_name() -> None:
    for ok in ("a", "laptop-2", "x" * 63):
        assert validate_name(ok) == ok
    for bad in ("", "-a", "a-", "UPPER", "a.b", "x" * 64, "sp ace", 5):
        with pytest.raises(ValueError):
            validate_name(bad)
    for reserved in sorted(RESERVED_NAMES):     # issue 9 case 11: "rendezvous" is status's own row
        with pytest.raises(ValueError, match="reserved"):
            validate_name(reserved)


# The eight low-order points of Curve25519 a liar might send (RFC 7748 section 6.1; the
# list libsodium and wireguard-go's tests use), little-endian.
LOW_ORDER = [bytes(32), bytes([1]) + bytes(31),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
             bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
             bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
             bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
             bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]


def test_weak_keys_refused_strong_accepted() -> None:
    for key in LOW_ORDER:
        with pytest.raises(ValueError, match="low-order"):
            check_strong_key(key)
    for _ in range(20):
        key = crypto.public_key(crypto.generate_private_key())
        assert check_strong_key(key) == key


def test_screen_candidates_keeps_lan_and_observed_only() -> None:
    cands = ["10.0.0.5:1", "[fd00::5]:1", "100.64.1.1:1", "93.184.216.7:1", "8.8.8.8:53",
             "[2606:4700::1]:1", "[::ffff:93.184.216.7]:2", "host.example:1"]
    kept, dropped = screen_candidates(cands, ["93.184.216.7"])
    assert kept == ["10.0.0.5:1", "[fd00::5]:1", "100.64.1.1:1", "93.184.216.7:1",
                    "[::ffff:93.184.216.7]:2"]
    assert len(dropped) == 3 and "third party" in dropped[0] and "not an IP" in dropped[2]
    kept, _ = screen_candidates(["8.8.8.8:53"], ["::ffff:8.8.8.8"])     # seen by a dual-stack socket
    assert kept == ["8.8.8.8:53"]


def test_validate_candidates_names_the_bad_one() -> None:
    good = ["192.0.2.1:51820", "[2001:db8::1]:51820", "[::ffff:10.0.0.1]:5", "100.64.0.1:1"]
    assert validate_candidates(good) == good
    for bad, match in ((["192.0.2.1"], "HOST:PORT"), (["192.0.2.1:0"], "port"),
                       (["2001:db8::1:5"], "IPv6"), ([" 192.0.2.1:5"], "HOST:PORT"),
                       ([5], "HOST:PORT"), (["h:1" + "0" * 300], "HOST:PORT")):
        with pytest.raises(ValueError, match=match) as info:
            validate_candidates(bad)
        assert "host candidate" in str(info.value)
    # issue 9 case 11: what the directory cannot publish, or nobody can probe, is refused
    for bad, match in ((["host.example:1"], "not an IP address"),
                       (["[fe80::1%eth0]:5"], "scoped"), (["[fe80::1]:5"], "cannot probe|not an address"),
                       (["127.0.0.1:5"], "not an address"), (["0.0.0.0:5"], "not an address"),
                       (["224.0.0.1:5"], "not an address"), (["[::]:5"], "not an address")):
        with pytest.raises(ValueError, match=match):
            validate_candidates(bad)
    with pytest.raises(ValueError, match=f"at most {MAX_CANDIDATES}"):
        validate_candidates(["192.0.2.1:1"] * (MAX_CANDIDATES + 1))
    with pytest.raises(ValueError, match="list"):
        validate_candidates("192.0.2.1:1")


def test_normalize_zone() -> None:
    assert normalize_zone("Corp.Example") == "corp.example."
    assert normalize_zone("mesh.internal.") == "mesh.internal."
    for bad in (".", "a" * 64 + ".example", "a..b"):
        with pytest.raises(ValueError):
            normalize_zone(bad)


def test_interface_name() -> None:
    assert validate_interface_name("meshwg0") == "meshwg0"
    for bad in ("", "x" * 16, "a b", "a/b"):
        with pytest.raises(ValueError, match="interface name"):
            validate_interface_name(bad)


def test_public_key_from_bytes_or_base64() -> None:
    key = bytes(range(32))
    assert public_key_bytes(key) == key
    assert public_key_bytes(base64.b64encode(key).decode()) == key
    for bad in (key[:31], "not base64", base64.b64encode(key[:31]).decode()):
        with pytest.raises(ValueError):
            public_key_bytes(bad)


def test_screen_candidates_keeps_an_endpoint_a_request_came_from() -> None:
    # a dual-stack member seen over IPv6 reports its IPv4 reflexive endpoint; the
    # observation responder answered a request from exactly there: kept. The same
    # address at another port, or a third party, is not.
    seen = {("93.184.216.7", 40001)}
    kept, dropped = screen_candidates(
        ["93.184.216.7:40001", "93.184.216.7:40002", "8.8.8.8:53"], ["2001:db8::7"],
        lambda endpoint: endpoint in seen)
    assert kept == ["93.184.216.7:40001"]
    assert len(dropped) == 2
