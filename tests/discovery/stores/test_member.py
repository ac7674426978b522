"""A joined machine's state files (discovery/stores/member.py)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from discovery.stores.errors import StateError
from discovery.stores.member import MemberState
from meshwg.core import crypto


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sample_member() -> MemberState:
    return MemberState(private_key=crypto.generate_private_key(), name="laptop",
                       address="100.64.0.2", network="100.64.0.0/24", zone="mesh.internal.",
                       mesh_id="ab" * 16, rendezvous_public_key=new_key(),
                       rendezvous_endpoint="198.51.100.7:51820", dns_address="100.64.0.1",
                       dns_port=53)


def test_member_state_round_trip_and_permissions(tmp_path: Path) -> None:
    d = tmp_path / "member"
    ms = sample_member()
    ms.save(d)
    assert mode(d) == 0o700
    assert mode(d / "private.key") == 0o600
    assert mode(d / "member.json") == 0o600
    assert MemberState.load(d) == ms
    assert base64.b64encode(ms.private_key).decode() not in (d / "member.json").read_text()
    assert base64.b64encode(ms.private_key).decode() not in repr(ms)
    ms.address = "100.64.0.9"
    ms.save(d)  # replaced atomically, no temp files left
    assert MemberState.load(d).address == "100.64.0.9"
    assert sorted(p.name for p in d.iterdir()) == ["member.json", "private.key"]


def test_member_state_load_errors(tmp_path: Path) -> None:
    d = tmp_path / "member"
    with pytest.raises(StateError, match="missing"):
        MemberState.load(d)
    sample_member().save(d)
    doc = (d / "member.json").read_text()
    (d / "member.json").write_text(doc.replace('"name"', '"name" oops'))
    with pytest.raises(StateError, match=r"member.json:\d+: not valid JSON"):
        MemberState.load(d)
    broken = json.loads(doc)
    del broken["address"]
    (d / "member.json").write_text(json.dumps(broken))
    with pytest.raises(StateError, match="missing key 'address'"):
        MemberState.load(d)
    (d / "member.json").write_text(doc)
    os.chmod(d / "private.key", 0o644)
    with pytest.raises(StateError, match="chmod 600"):
        MemberState.load(d)
    (d / "private.key").write_text("bm90IGEga2V5\n")
    os.chmod(d / "private.key", 0o600)
    with pytest.raises(StateError, match="not a base64 32-byte WireGuard private key"):
        MemberState.load(d)
