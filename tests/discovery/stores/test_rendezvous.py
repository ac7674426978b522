"""The rendezvous state database (discovery/stores/rendezvous.py)."""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from discovery.stores.errors import (
    DuplicateMemberError, MeshFullError, StateError, StateExistsError, UnknownMemberError,
)
from discovery.stores.invites import (
    REFUSAL_EXPIRED, REFUSAL_KEY_TAKEN, REFUSAL_MESH_FULL, REFUSAL_NAME_TAKEN, REFUSAL_REPLAYED,
    REFUSAL_UNKNOWN_INVITE, REFUSAL_USED_UP, InviteRefusal,
)
from discovery.stores.rendezvous import DB_NAME, DEFAULT_ZONE, NONCE_RETENTION, RendezvousState
from meshwg.core import crypto

from tests import REPO
T0 = 1_700_000_000.0


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


@pytest.fixture
def state(tmp_path: Path):
    st = RendezvousState.init(tmp_path / "rz", "100.64.0.0/24", "198.51.100.7:51820")
    try:
        yield st
    finally:
        st.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- init / open


def test_init_creates_private_state_with_defaults(tmp_path: Path) -> None:
    d = tmp_path / "rz"
    with RendezvousState.init(d, "10.9.0.0/24", "rz.example.net:51820") as st:
        assert mode(d) == 0o700
        assert mode(d / DB_NAME) == 0o600
        assert st.address == "10.9.0.1"  # first host of the range
        assert st.network == "10.9.0.0/24"
        assert st.zone == DEFAULT_ZONE == "mesh.internal."
        assert st.listen_port == 51820 and st.enroll_port == 51820
        assert st.public_key == crypto.public_key(st.private_key)
        assert len(st.private_key) == 32
        assert len(st.mesh_id) == 32 and int(st.mesh_id, 16) >= 0


def test_init_options_are_kept_and_normalized(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "rz", "fd00:77::/64", "[2001:db8::1]:4000",
                              zone="Corp.Example", listen_port=4001, interface="wgm1",
                              dns_port=5353) as st:
        assert st.zone == "corp.example."
        assert st.listen_port == 4001 and st.enroll_port == 4001 and st.dns_port == 5353
        assert st.interface == "wgm1"
        assert st.address == "fd00:77::1"
        assert st.allocate_address() == "fd00:77::2"


def test_two_states_get_different_keys_and_mesh_ids(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "a", "10.0.0.0/24", "h:1") as a, \
            RendezvousState.init(tmp_path / "b", "10.0.0.0/24", "h:1") as b:
        assert a.private_key != b.private_key
        assert a.mesh_id != b.mesh_id


def test_init_refuses_to_overwrite(state: RendezvousState) -> None:
    state.add_member("alpha", new_key())
    with pytest.raises(StateExistsError, match="refusing to overwrite"):
        RendezvousState.init(state.state_dir, "10.1.0.0/24", "h:1")
    with RendezvousState.open(state.state_dir) as again:
        assert again.mesh_id == state.mesh_id
        assert [m.name for m in again.members()] == ["alpha"]
    leftovers = [p.name for p in state.state_dir.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("network, endpoint, match", [
    ("10.0.0.1/24", "h:1", "host bits"),
    ("10.0.0.0/32", "h:1", "fewer than 2 hosts"),
    ("banana", "h:1", "banana"),
    ("10.0.0.0/24", "h", "HOST:PORT"),
    ("10.0.0.0/24", "h:0", "port"),
    ("10.0.0.0/24", "::1:5", "IPv6"),
])
def test_init_rejects_bad_settings(tmp_path: Path, network: str, endpoint: str, match: str) -> None:
    with pytest.raises(StateError, match=match) as info:
        RendezvousState.init(tmp_path / "rz", network, endpoint)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "rz" / DB_NAME).exists()


def test_init_refuses_nonempty_dir_open_to_others(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    (d / "other-file").write_text("x")
    with pytest.raises(StateError, match="chmod 700"):
        RendezvousState.init(d, "10.0.0.0/24", "h:1")


def test_open_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no rendezvous state"):
        RendezvousState.open(tmp_path / "missing")
    d = tmp_path / "junk"
    d.mkdir()
    (d / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a readable meshwg state database"):
        RendezvousState.open(d)


# ---------------------------------------------------------------- members


def test_add_find_and_list_members(state: RendezvousState) -> None:
    ka, kb = new_key(), new_key()
    a = state.add_member("alpha", ka, host_candidates=["192.168.1.4:51820"], now=T0)
    b = state.add_member("beta", kb, "100.64.0.50", now=T0 + 1)
    assert a.mesh_address == "100.64.0.2" and b.mesh_address == "100.64.0.50"
    assert [m.name for m in state.members()] == ["alpha", "beta"]
    got = state.members()[0]
    assert (got.public_key, got.joined_at, got.last_seen, got.host_candidates) == \
        (ka, T0, None, ["192.168.1.4:51820"])
    for ref in ("alpha", "100.64.0.2", ka, base64.b64encode(ka).decode()):
        assert state.find_member(ref).name == "alpha"
    assert state.find_member("nobody") is None


def test_add_member_rejects_duplicates_and_foreign_addresses(state: RendezvousState) -> None:
    key = new_key()
    state.add_member("alpha", key)
    with pytest.raises(DuplicateMemberError, match="name 'alpha'"):
        state.add_member("alpha", new_key())
    with pytest.raises(DuplicateMemberError, match="already enrolled as 'alpha'"):
        state.add_member("other", key)
    with pytest.raises(DuplicateMemberError, match="rendezvous"):
        state.add_member("other", state.public_key)
    with pytest.raises(DuplicateMemberError, match="already assigned"):
        state.add_member("other", new_key(), "100.64.0.2")
    with pytest.raises(DuplicateMemberError, match="own address"):
        state.add_member("other", new_key(), "100.64.0.1")
    with pytest.raises(StateError, match="not a host address"):
        state.add_member("other", new_key(), "10.0.0.5")
    with pytest.raises(StateError, match="invalid member name"):
        state.add_member("Bad_Name", new_key())
    assert [m.name for m in state.members()] == ["alpha"]


def test_allocate_first_free_address_reuses_gaps(state: RendezvousState) -> None:
    assert state.allocate_address() == "100.64.0.2"
    for i in range(3):
        state.add_member(f"m{i}", new_key())
    assert state.allocate_address() == "100.64.0.5"
    state.remove_member("m1")
    assert state.allocate_address() == "100.64.0.3"
    assert state.add_member("again", new_key()).mesh_address == "100.64.0.3"


def test_allocate_errors_when_full(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "rz", "10.5.0.0/29", "h:1") as st:
        hosts = list(ipaddress.ip_network("10.5.0.0/29").hosts())
        for i in range(len(hosts) - 1):
            st.add_member(f"m{i}", new_key())
        with pytest.raises(MeshFullError, match="no free address left in 10.5.0.0/29"):
            st.allocate_address()
        with pytest.raises(MeshFullError):
            st.add_member("late", new_key())


def test_remove_member_by_each_reference(state: RendezvousState) -> None:
    keys = [new_key() for _ in range(4)]
    for i, k in enumerate(keys):
        state.add_member(f"m{i}", k)
    assert state.remove_member("m0").public_key == keys[0]
    assert state.remove_member("100.64.0.3").name == "m1"
    assert state.remove_member(keys[2]).name == "m2"
    assert state.remove_member(base64.b64encode(keys[3]).decode()).name == "m3"
    assert state.members() == []
    with pytest.raises(UnknownMemberError, match="no member .*'m0'"):
        state.remove_member("m0")


def test_update_candidates_marks_seen(state: RendezvousState) -> None:
    key = new_key()
    state.add_member("alpha", key, now=T0)
    m = state.update_candidates(key, ["10.0.0.9:51820", "[fd00::1]:51820"], now=T0 + 30)
    assert m.host_candidates == ["10.0.0.9:51820", "[fd00::1]:51820"]
    assert state.find_member("alpha").last_seen == T0 + 30
    with pytest.raises(StateError, match="host candidate"):
        state.update_candidates(key, ["no-port"])
    with pytest.raises(UnknownMemberError):
        state.update_candidates(new_key(), [])


# ---------------------------------------------------------------- invites


def test_create_invite_token_describes_this_rendezvous(state: RendezvousState) -> None:
    tok = state.create_invite(expires_in=3600, now=T0)
    assert tok.endpoint == "198.51.100.7:51820"
    assert tok.rendezvous_public_key == state.public_key
    assert tok.mesh_id == state.mesh_id
    assert tok.expires_at == int(T0 + 3600)
    assert tok.enroll_port == state.enroll_port
    inv = state.invite(tok.invite_id)
    assert inv.secret == tok.secret and not inv.reusable and inv.uses == 0
    assert state.create_invite(reusable=True).expires_at is None
    assert state.create_invite(enroll_port=4444).enroll_port == 4444
    with pytest.raises(StateError, match="positive"):
        state.create_invite(expires_in=0)


def redeem(st: RendezvousState, invite_id: str, name: str, now: float = T0,
           key: bytes | None = None, nonce: bytes | None = None):
    return st.redeem_invite(invite_id, nonce or os.urandom(16), name, key or new_key(), [], now)


def test_single_use_invite(state: RendezvousState) -> None:
    tok = state.create_invite(now=T0)
    assert redeem(state, tok.invite_id, "alpha").mesh_address == "100.64.0.2"
    with pytest.raises(InviteRefusal) as info:
        redeem(state, tok.invite_id, "beta")
    assert info.value.code == REFUSAL_USED_UP
    assert state.invite(tok.invite_id).uses == 1
    assert [m.name for m in state.members()] == ["alpha"]


def test_reusable_invite_counts_uses(state: RendezvousState) -> None:
    tok = state.create_invite(reusable=True, now=T0)
    addrs = [redeem(state, tok.invite_id, f"m{i}").mesh_address for i in range(3)]
    assert addrs == ["100.64.0.2", "100.64.0.3", "100.64.0.4"]
    assert state.invite(tok.invite_id).uses == 3


def test_expired_invite(state: RendezvousState) -> None:
    tok = state.create_invite(expires_in=60, now=T0)
    with pytest.raises(InviteRefusal, match="expired at") as info:
        redeem(state, tok.invite_id, "alpha", now=T0 + 61)
    assert info.value.code == REFUSAL_EXPIRED
    assert redeem(state, tok.invite_id, "alpha", now=T0 + 59).name == "alpha"


def test_nonce_is_recorded_even_when_refused(state: RendezvousState) -> None:
    tok = state.create_invite(reusable=True, now=T0)
    redeem(state, tok.invite_id, "alpha")
    nonce = os.urandom(16)
    with pytest.raises(InviteRefusal) as info:
        redeem(state, tok.invite_id, "alpha", nonce=nonce)
    assert info.value.code == REFUSAL_NAME_TAKEN
    state.remove_member("alpha")  # the name is free now, but the same request stays dead
    with pytest.raises(InviteRefusal) as info:
        redeem(state, tok.invite_id, "alpha", nonce=nonce)
    assert info.value.code == REFUSAL_REPLAYED
    assert state.invite(tok.invite_id).uses == 1


def test_nonces_expire_after_retention(state: RendezvousState) -> None:
    tok = state.create_invite(reusable=True, now=T0)
    nonce = os.urandom(16)
    redeem(state, tok.invite_id, "alpha", nonce=nonce)
    with pytest.raises(InviteRefusal, match="replayed"):
        redeem(state, tok.invite_id, "beta", nonce=nonce, now=T0 + NONCE_RETENTION - 1)
    # long after, the timestamp check (not the nonce table) is what refuses old requests
    assert redeem(state, tok.invite_id, "gamma", nonce=nonce,
                  now=T0 + NONCE_RETENTION + 1).name == "gamma"


def test_key_taken_and_mesh_full_refusals(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "rz", "10.6.0.0/30", "h:1") as st:
        tok = st.create_invite(reusable=True, now=T0)
        key = new_key()
        redeem(st, tok.invite_id, "alpha", key=key)
        with pytest.raises(InviteRefusal) as info:
            redeem(st, tok.invite_id, "beta", key=key)
        assert info.value.code == REFUSAL_KEY_TAKEN
        with pytest.raises(InviteRefusal) as info:
            redeem(st, tok.invite_id, "beta")
        assert info.value.code == REFUSAL_MESH_FULL
        assert st.invite(tok.invite_id).uses == 1


# ---------------------------------------------------------------- durability


def test_committed_changes_survive_a_crash(tmp_path: Path) -> None:
    """A process that dies without closing the database loses nothing it committed."""
    d = tmp_path / "rz"
    script = textwrap.dedent(f"""
        import os
        from discovery.stores.rendezvous import RendezvousState
        st = RendezvousState.init({str(d)!r}, "10.7.0.0/24", "h:51820")
        st.add_member("alpha", bytes(range(32)), now=1.0)
        tok = st.create_invite(now=1.0)
        st.redeem_invite(tok.invite_id, b"n" * 16, "beta", bytes(range(1, 33)), [], 2.0)
        print(tok.invite_id, flush=True)
        os._exit(0)  # no close, no checkpoint
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    invite_id = out.stdout.strip()
    with RendezvousState.open(d) as st:
        assert [(m.name, m.mesh_address) for m in st.members()] == \
            [("alpha", "10.7.0.2"), ("beta", "10.7.0.3")]
        assert st.invite(invite_id).uses == 1
        with pytest.raises(InviteRefusal, match="replayed"):
            st.redeem_invite(invite_id, b"n" * 16, "gamma", bytes(range(2, 34)), [], 3.0)


def test_two_handles_see_each_others_changes(state: RendezvousState) -> None:
    with RendezvousState.open(state.state_dir) as other:
        other.add_member("alpha", new_key())
        assert [m.name for m in state.members()] == ["alpha"]
        assert state.add_member("beta", new_key()).mesh_address == "100.64.0.3"
        assert [m.name for m in other.members()] == ["alpha", "beta"]


# ---------------------------------------------------------------- issue 9 case 12: list, revoke


def test_invites_are_listed_with_their_members_and_revoked(state: RendezvousState) -> None:
    from discovery.stores.errors import UnknownInviteError
    reusable = state.create_invite(reusable=True, now=T0)
    single = state.create_invite(now=T0 + 1)
    for name in ("m1", "m2"):
        assert redeem(state, reusable.invite_id, name).invite_id == reusable.invite_id
    assert [i.invite_id for i in state.invites()] == [reusable.invite_id, single.invite_id]
    assert state.invite_members(reusable.invite_id) == ["m1", "m2"]
    assert state.find_member("m1").invite_id == reusable.invite_id
    state.add_member("byhand", new_key())
    assert state.find_member("byhand").invite_id is None
    for bad in ("", "abc", "zzzzzzzzzz", "0" * 32):
        with pytest.raises(UnknownInviteError):
            state.revoke_invite(bad)
    assert state.revoke_invite(reusable.invite_id[:8].upper()).invite_id == reusable.invite_id
    assert [i.invite_id for i in state.invites()] == [single.invite_id]
    with pytest.raises(InviteRefusal) as info:                  # the token enrolls no one now
        redeem(state, reusable.invite_id, "m3")
    assert info.value.code == REFUSAL_UNKNOWN_INVITE
    assert [m.name for m in state.members()] == ["m1", "m2", "byhand"]   # members stay


def test_states_from_before_invite_tracking_open(tmp_path) -> None:
    import sqlite3
    st = RendezvousState.init(tmp_path / "old", "100.64.0.0/24", "rz.example.net:51820")
    st.add_member("old", new_key())
    st.close()
    db = sqlite3.connect(tmp_path / "old" / DB_NAME)          # the schema before the column
    db.execute("ALTER TABLE members DROP COLUMN invite")
    db.commit()
    db.close()
    with RendezvousState.open(tmp_path / "old") as st:
        assert st.find_member("old").invite_id is None
        tok = st.create_invite()
        assert redeem(st, tok.invite_id, "new").invite_id == tok.invite_id


def test_removing_a_member_can_revoke_its_invite(state: RendezvousState) -> None:
    tok = state.create_invite(reusable=True, now=T0)
    redeem(state, tok.invite_id, "leaky")
    redeem(state, tok.invite_id, "other")
    state.remove_member("other")                               # default: the invite stays
    assert state.invite(tok.invite_id) is not None
    assert state.remove_member("leaky", revoke_invite=True).invite_id == tok.invite_id
    assert state.invite(tok.invite_id) is None
    with pytest.raises(InviteRefusal):                         # re-enrolling with it fails
        redeem(state, tok.invite_id, "leaky")
