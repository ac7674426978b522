"""Instance labels and zone names (discovery/dnssd/names.py)."""

from __future__ import annotations

import base64
import os

import dns.name
import pytest

from discovery.dnssd.names import (
    bulk_name, instance_label, instance_name, meta_service_name, public_key_from_label,
    service_name,
)



def test_instance_label_round_trip_and_shape() -> None:
    for _ in range(50):
        key = os.urandom(32)
        label = instance_label(key)
        assert len(label) == 56 and label == label.lower() and label.endswith("====")
        assert label.upper() == base64.b32encode(key).decode()
        assert public_key_from_label(label) == key
        assert public_key_from_label(label.upper()) == key


@pytest.mark.parametrize("bad", ["", "abc", "a" * 56, "0" * 56, instance_label(bytes(32))[:-1] + "!"])
def test_public_key_from_label_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_label(bad)


def test_instance_label_rejects_wrong_key_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        instance_label(b"\x01" * 31)


def test_names_under_the_zone() -> None:
    key = bytes(range(32))
    assert service_name("mesh.example") == dns.name.from_text("_wireguard._udp.mesh.example.")
    assert instance_name("mesh.example.", key) == dns.name.from_text(
        f"{instance_label(key)}._wireguard._udp.mesh.example.")
    assert bulk_name("mesh.example.") == dns.name.from_text("_directory._wireguard._udp.mesh.example.")
    assert meta_service_name("mesh.example.") == dns.name.from_text("_services._dns-sd._udp.mesh.example.")
