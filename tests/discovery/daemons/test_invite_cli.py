"""Issue 9 cases 5 and 12 through the real `meshwg` command and real TCP on 127.0.0.1.

Case 5: the join token is read from a file, standard input or MESHWG_TOKEN, so it is not
in the process's command line (which every local user reads in ps / /proc). Case 12:
invites are listed (`meshwg invites`, --json) and revoked (`meshwg invites revoke ID`),
and `meshwg remove NAME --revoke-invite` withdraws the token the member used, so a leaked
reusable token cannot re-enroll it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from discovery.enroll.messages import EnrollmentRefused
from discovery.enroll.tokens import decode_token, encode_token
from discovery.enroll.transport import EnrollmentServer, enroll
from discovery.stores.rendezvous import RendezvousState
from meshwg.core import crypto

from tests.discovery.daemons.test_mesh_cli import MESHWG, ROOT, one_line_error, run


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


@pytest.fixture
def rendezvous(tmp_path: Path):
    """An initialised rendezvous state and its enrollment server on 127.0.0.1."""
    state = str(tmp_path / "rdv")
    assert run("rendezvous", "init", "--state", state, "--network", "10.42.0.0/24",
               "--endpoint", "127.0.0.1:51820").returncode == 0
    st = RendezvousState.open(state)
    server = EnrollmentServer(st, "127.0.0.1", 0).start()
    try:
        yield state, server
    finally:
        server.stop()
        st.close()


def join(token: str, server: EnrollmentServer, name: str):
    return enroll(decode_token(token), new_key(), name, [], timeout=10.0,
                  address=("127.0.0.1", server.port))


def invites(state: str) -> list[dict]:
    out = run("invites", "--state", state, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["invites"]


def test_invites_are_listed_and_revoked(rendezvous) -> None:
    state, server = rendezvous
    reusable = run("invite", "--state", state, "--reusable").stdout.strip()
    single = run("invite", "--state", state, "--expires", "1h").stdout.strip()
    join(reusable, server, "a1")
    join(reusable, server, "a2")
    rows = invites(state)
    assert [(r["invite_id"], r["reusable"], r["uses"], r["members"], r["usable"]) for r in rows] == [
        (decode_token(reusable).invite_id, True, 2, ["a1", "a2"], True),
        (decode_token(single).invite_id, False, 0, [], True)]
    text = run("invites", "--state", state).stdout
    assert "a1, a2" in text and "reusable" in text and "single" in text
    out = run("invites", "revoke", decode_token(single).invite_id[:8], "--state", state)
    assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
    with pytest.raises(EnrollmentRefused) as info:
        join(single, server, "b1")
    assert info.value.reason == "unknown_invite"
    assert "no invite" in one_line_error(run("invites", "revoke", "0" * 32, "--state", state))
    assert "8" in one_line_error(run("invites", "revoke", "ab", "--state", state))
    assert "invite id" in one_line_error(run("invites", "revoke", "--state", state))
    assert [r["members"] for r in invites(state)] == [["a1", "a2"]]


def test_remove_with_revoke_invite_stops_a_leaked_token(rendezvous) -> None:
    state, server = rendezvous
    leaked = run("invite", "--state", state, "--reusable").stdout.strip()
    join(leaked, server, "laptop")
    out = run("remove", "--state", state, "laptop", "--revoke-invite")
    assert out.returncode == 0 and "revoked the invite" in out.stdout, out.stderr
    with pytest.raises(EnrollmentRefused) as info:      # it cannot come back with the token
        join(leaked, server, "laptop")
    assert info.value.reason == "unknown_invite"
    assert invites(state) == []
    other = run("invite", "--state", state, "--reusable").stdout.strip()
    join(other, server, "desk")
    out = run("remove", "--state", state, "desk")        # without the flag: the invite stays
    assert out.returncode == 0
    join(other, server, "desk")


# ---------------------------------------------------------------- case 5: the token not in ps


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="join checks for root before it reads the token")


@needs_root
@pytest.mark.parametrize("how", ["file", "stdin", "env"])
def test_join_token_is_read_without_the_command_line(tmp_path: Path, how: str) -> None:
    """A rendezvous that accepts and never answers holds the joiner in enroll(): meanwhile
    its command line (world-readable) must not hold the token."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        st = RendezvousState.init(tmp_path / "rdv", "10.42.0.0/24", "127.0.0.1:51820",
                                  enroll_port=silent.getsockname()[1])
        token = encode_token(st.create_invite())
        st.close()
        argv, env, stdin = MESHWG + ["join", "--state", str(tmp_path / "m")], dict(os.environ), None
        if how == "file":
            (tmp_path / "token").write_text(token + "\n")
            argv += ["--token-file", str(tmp_path / "token")]
        elif how == "stdin":
            argv += ["--token-file", "-"]
            stdin = token
        else:
            env["MESHWG_TOKEN"] = token
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if stdin is not None:
                proc.stdin.write(stdin)
            proc.stdin.close()
            silent.settimeout(30)
            conn, _ = silent.accept()            # it decoded the token and is enrolling
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert b"mwg1." not in cmdline and token.encode() not in cmdline
            conn.close()                         # no answer: the join fails cleanly
            proc.wait(timeout=30)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode != 0 and "Traceback" not in err and "rendezvous" in err, err
        assert not (tmp_path / "m" / "member.json").exists()
    finally:
        silent.close()


@needs_root
def test_join_token_sources_refuse_clearly(tmp_path: Path) -> None:
    m = str(tmp_path / "m")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "huge").write_text("x" * 10_000)
    (tmp_path / "garbage").write_text("not-a-token\n")
    assert "no token" in one_line_error(run("join", "--state", m, "--token-file", str(tmp_path / "empty")))
    assert "more than" in one_line_error(run("join", "--state", m, "--token-file", str(tmp_path / "huge")))
    assert "invalid token" in one_line_error(run("join", "--state", m, "--token-file",
                                                 str(tmp_path / "garbage")))
    assert "cannot read" in one_line_error(run("join", "--state", m, "--token-file",
                                               str(tmp_path / "missing")))
    assert "once" in one_line_error(run("join", "x", "--state", m, "--token-file",
                                        str(tmp_path / "garbage")))
    out = subprocess.run(MESHWG + ["join", "--state", m], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env={**os.environ, "MESHWG_TOKEN": "not-a-token"})
    assert "invalid token" in one_line_error(out)
    assert "--token-file" in run("join", "--help").stdout
    assert not os.path.exists(m)


# ---------------------------------------------------------------- case 11: nothing dropped silently


def test_members_names_candidates_the_directory_cannot_publish(tmp_path: Path) -> None:
    """A state written before candidates were checked (host names, scoped addresses):
    `meshwg members` says what is not published instead of leaving it out silently."""
    import sqlite3
    from discovery.stores.rendezvous import DB_NAME
    state = tmp_path / "rdv"
    with RendezvousState.init(state, "10.42.0.0/24", "127.0.0.1:51820") as st:
        st.add_member("old", new_key(), host_candidates=["10.0.0.7:51820"])
    with sqlite3.connect(state / DB_NAME) as db:
        db.execute("UPDATE members SET candidates = ? WHERE name = 'old'",
                   (json.dumps(["10.0.0.7:51820", "nas.lan:51820", "[fe80::1%eth0]:51820"]),))
    doc = json.loads(run("members", "--state", str(state), "--json").stdout)
    (row,) = doc["members"]
    assert len(row["unpublishable"]) == 2
    assert "nas.lan" in row["unpublishable"][0] and "scoped" in row["unpublishable"][1]
    text = run("members", "--state", str(state)).stdout
    assert text.count("not published") == 2 and "old" in text
