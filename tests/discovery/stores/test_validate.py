"""Checks of names, candidates, zones and keys (discovery/stores/validate.py)."""

from __future__ import annotations

import base64

import pytest

from discovery.stores.validate import (
    MAX_CANDIDATES, normalize_zone, public_key_bytes, validate_candidates,
    validate_interface_name, validate_name,
)


def test_validate_name() -> None:
    for ok in ("a", "laptop-2", "x" * 63):
        assert validate_name(ok) == ok
    for bad in ("", "-a", "a-", "UPPER", "a.b", "x" * 64, "sp ace", 5):
        with pytest.raises(ValueError):
            validate_name(bad)


def test_validate_candidates_names_the_bad_one() -> None:
    good = ["192.0.2.1:51820", "[2001:db8::1]:51820", "[fe80::1%eth0]:5", "host.example:1"]
    assert validate_candidates(good) == good
    for bad, match in ((["192.0.2.1"], "HOST:PORT"), (["192.0.2.1:0"], "port"),
                       (["2001:db8::1:5"], "IPv6"), ([" 192.0.2.1:5"], "HOST:PORT"),
                       ([5], "HOST:PORT"), (["h:1" + "0" * 300], "HOST:PORT")):
        with pytest.raises(ValueError, match=match) as info:
            validate_candidates(bad)
        assert "host candidate" in str(info.value)
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
