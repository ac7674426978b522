"""A member's record of its proven removal and when it asks (discovery.daemons.removal);
and `meshwg join --state DIR` refusing to resume a removed membership."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from discovery.daemons.removal import (
    ASK_FIRST, ASK_MAX, REMOVED_FILE, AskSchedule, load_removed, removed_line, save_removed,
)


def test_ask_at_once_then_doubling_up_to_the_cap_and_reset_when_the_directory_answers():
    s = AskSchedule()
    assert s.due(0.0)
    s.started(0.0)
    assert not s.due(100.0)                 # one question at a time
    s.in_flight = False
    assert not s.due(ASK_FIRST - 0.1) and s.due(ASK_FIRST)
    for _ in range(20):
        s.started(s.next_at)
        s.in_flight = False
    assert s.wait == ASK_MAX
    s.directory_answers()
    assert s.due(0.0) and s.wait == ASK_FIRST


def test_not_member_is_believed_only_when_confirmed():
    s = AskSchedule()
    s.started(0.0)
    assert not s.answered(True) and not s.in_flight
    assert not s.answered(False)            # a "member" in between: start over
    assert not s.answered(True) and s.answered(True)
    s.directory_answers()
    assert not s.answered(True)


def test_saved_removal_round_trips_private_and_bad_files_are_ignored(tmp_path):
    assert load_removed(str(tmp_path)) is None
    doc = save_removed(str(tmp_path), "198.51.100.1:51820", 1_800_000_000.0)
    assert load_removed(str(tmp_path)) == doc
    assert stat.S_IMODE(os.stat(tmp_path / REMOVED_FILE).st_mode) == 0o600
    assert removed_line(doc) == ("removed from the mesh by the rendezvous at 198.51.100.1:51820 "
                                 "(at 2027-01-15 08:00:00 UTC)")
    for bad in (b"", b"[]", b'{"by": 1, "at": 2}', b'{"by": "x"}', b"\xff" * 10, b" " * 9000):
        (tmp_path / REMOVED_FILE).write_bytes(bad)
        assert load_removed(str(tmp_path)) is None


def test_resume_of_a_removed_membership_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "member.json").write_text("{}")         # refused before it is read
    save_removed(str(tmp_path), "198.51.100.1:51820", 1_800_000_000.0)
    out = subprocess.run([sys.executable, "-m", "meshwg", "join", "--state", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    err = out.stderr.strip()
    assert out.returncode != 0 and len(err.splitlines()) == 1, err
    assert ("this machine was removed from the mesh by the rendezvous at 198.51.100.1:51820 "
            "(at 2027-01-15 08:00:00 UTC); to join again, get a new token") in err, err


def test_a_new_token_on_a_removed_state_says_removed_and_asks_for_a_fresh_state(tmp_path):
    (tmp_path / "member.json").write_text("{}")
    save_removed(str(tmp_path), "198.51.100.1:51820", 1_800_000_000.0)
    out = subprocess.run([sys.executable, "-m", "meshwg", "join", "mwg1.anything", "--state",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    err = out.stderr.strip()
    assert out.returncode != 0 and len(err.splitlines()) == 1, err
    assert (f"the membership in {tmp_path} was removed from the mesh by the rendezvous at "
            "198.51.100.1:51820 (at 2027-01-15 08:00:00 UTC); join with this token and a fresh "
            "--state directory") in err, err
