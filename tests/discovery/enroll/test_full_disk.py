"""Issue 9 case 8: a full disk on either side of an enrollment, on small real tmpfs mounts
filled up (enrollment over real TCP on 127.0.0.1).

Right: the rendezvous refuses with a reason ("unavailable": its state cannot be written)
instead of a traceback and no answer, and enrolls again as soon as it can write; its
write-ahead log is bounded. The joiner saves its key before the request (a full state
directory is a clear error and the token is not spent) and, when it cannot save the
membership after the answer, the same key with the same single-use token enrolls again.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from discovery.enroll.messages import EnrollmentRefused
from discovery.enroll.transport import EnrollmentServer, enroll
from discovery.stores.errors import StateError
from discovery.stores.member import PRIVATE_KEY_FILE, MemberState, enrollment_key
from discovery.stores.rendezvous import DB_NAME, WAL_SIZE_LIMIT, RendezvousState
from meshwg.core import crypto

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def disks(tmp_path: Path) -> Iterator:
    """mount(name, size) -> a fresh tmpfs of `size` at tmp_path/name; all unmounted after."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
        mounted.append(where)
        return where
    try:
        yield mount
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; its path (unlink it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(chunk) == 1:
                    break
                chunk = chunk[:len(chunk) // 2]
    return filler


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


def test_rendezvous_on_a_full_disk_refuses_with_the_reason_and_recovers(
        disks, caplog: pytest.LogCaptureFixture) -> None:
    disk = disks("rdv", "2m")
    st = RendezvousState.init(disk / "state", "10.42.0.0/24", "127.0.0.1:51820")
    server = EnrollmentServer(st, "127.0.0.1", 0).start()
    try:
        token = st.create_invite(reusable=True)
        with sqlite3.connect(disk / "state" / DB_NAME) as db:    # an empty log: writes need space
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(disk)
        for i in range(10):
            with pytest.raises(EnrollmentRefused) as info:
                enroll(token, new_key(), f"m{i}", [], timeout=10.0,
                       address=("127.0.0.1", server.port))
            assert info.value.reason == "unavailable" and "disk full" in info.value.message
            assert info.value.authenticated            # signed with the invite secret
        assert server.stats["unavailable"] == 10 and st.members() == []
        no_tracebacks(caplog)
        filler.unlink()                                # space again: no restart needed
        result = enroll(token, new_key(), "after", [], timeout=10.0,
                        address=("127.0.0.1", server.port))
        assert result.address == "10.42.0.2" and [m.name for m in st.members()] == ["after"]
    finally:
        server.stop()
        st.close()


def test_rendezvous_write_ahead_log_stays_bounded(tmp_path: Path) -> None:
    st = RendezvousState.init(tmp_path / "state", "10.42.0.0/16", "127.0.0.1:51820")
    reader = sqlite3.connect(tmp_path / "state" / DB_NAME)   # another process reading (the CLI)
    try:
        reader.execute("SELECT count(*) FROM invites").fetchone()
        for i in range(900):
            st.create_invite()
            st.add_member(f"m{i}", new_key(), host_candidates=["10.0.0.1:1"] * 16)
        wal = tmp_path / "state" / f"{DB_NAME}-wal"
        assert wal.stat().st_size <= 2 * WAL_SIZE_LIMIT + (1 << 20), wal.stat().st_size
    finally:
        reader.close()
        st.close()


@pytest.fixture
def rendezvous(tmp_path: Path) -> Iterator:
    st = RendezvousState.init(tmp_path / "rdv", "10.42.0.0/24", "127.0.0.1:51820")
    hooks: list = []
    server = EnrollmentServer(st, "127.0.0.1", 0,
                              on_member_added=lambda m: [h(m) for h in hooks]).start()
    try:
        yield st, server, hooks
    finally:
        server.stop()
        st.close()


def test_joiner_with_a_full_state_dir_sends_nothing(disks, rendezvous) -> None:
    st, server, _ = rendezvous
    disk = disks("joiner", "1m")
    filler = fill(disk)
    token = st.create_invite()
    with pytest.raises(StateError, match="cannot save this machine's key.*nothing was sent"):
        enrollment_key(disk / "m")
    assert sum(server.stats.values()) == 0 and st.invite(token.invite_id).uses == 0
    filler.unlink()
    private = enrollment_key(disk / "m")
    result = enroll(token, crypto.public_key(private), "m", [], timeout=10.0,
                    address=("127.0.0.1", server.port))
    MemberState.from_enrollment(private, "m", result).save(disk / "m")
    assert MemberState.load(disk / "m").private_key == private


def test_joiner_that_cannot_save_its_membership_retries_with_the_same_token(
        disks, rendezvous) -> None:
    st, server, hooks = rendezvous
    disk = disks("joiner", "1m")
    token = st.create_invite()                          # single-use
    fillers: list[Path] = []
    hooks.append(lambda member: fillers.append(fill(disk)))   # the disk fills meanwhile
    private = enrollment_key(disk / "m")
    assert (disk / "m" / PRIVATE_KEY_FILE).exists()    # saved before the request
    result = enroll(token, crypto.public_key(private), "m", [], timeout=10.0,
                    address=("127.0.0.1", server.port))
    with pytest.raises(OSError) as info:
        MemberState.from_enrollment(private, "m", result).save(disk / "m")
    assert info.value.errno == errno.ENOSPC
    hooks.clear()
    fillers[0].unlink()
    again = enrollment_key(disk / "m")
    assert again == private                             # the saved key, not a new one
    retry = enroll(token, crypto.public_key(again), "m", [], timeout=10.0,
                   address=("127.0.0.1", server.port))
    assert retry == result                              # the same membership
    MemberState.from_enrollment(again, "m", retry).save(disk / "m")
    assert [m.name for m in st.members()] == ["m"] and st.invite(token.invite_id).uses == 1
    with pytest.raises(EnrollmentRefused) as refused:   # another key: the token is spent
        enroll(token, new_key(), "m", [], timeout=10.0, address=("127.0.0.1", server.port))
    assert refused.value.reason == "used_up"
    with pytest.raises(StateError, match="already holds a membership"):
        enrollment_key(disk / "m")


def test_meshwg_join_says_how_to_recover_when_it_cannot_save(disks, rendezvous) -> None:
    """The command: enrolled, member.json cannot be written: one line that says to run the
    same command again; the key it enrolled with stays saved."""
    from discovery.enroll.tokens import encode_token
    from tests.discovery.daemons.test_mesh_cli import MESHWG, ROOT
    st, server, hooks = rendezvous
    disk = disks("joiner", "1m")
    token_file = Path(str(disk) + "-token")
    token_file.write_text(encode_token(st.create_invite(enroll_port=server.port)))
    hooks.append(lambda member: fill(disk))
    out = subprocess.run(MESHWG + ["join", "--token-file", str(token_file), "--state",
                                   str(disk / "m"), "--name", "m"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    err = out.stderr.strip().splitlines()
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "enrolled, but cannot save" in err[-1] and "same command again" in err[-1], err
    assert (disk / "m" / PRIVATE_KEY_FILE).exists() and not (disk / "m" / "member.json").exists()
    assert [m.name for m in st.members()] == ["m"]
