"""The mesh commands that need no network: rendezvous init, invite, members, remove, and
their errors (one line, no traceback, non-zero exit)."""

from __future__ import annotations

from tests import REPO

import json
import os
import subprocess
import sys

import pytest

from discovery.enroll.tokens import decode_token

MESHWG = [sys.executable, "-m", "meshwg"]
ROOT = str(REPO)


def run(*args: str):
    return subprocess.run(MESHWG + list(args), capture_output=True, text=True, timeout=30, cwd=ROOT)


def one_line_error(out) -> str:
    assert out.returncode != 0
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_init_invite_members_remove(tmp_path):
    state = str(tmp_path / "rdv")
    out = run("rendezvous", "init", "--state", state, "--network", "10.42.0.0/24",
              "--endpoint", "198.18.0.10:51820", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["address"] == "10.42.0.1" and info["zone"] == "mesh.internal."
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    token = run("invite", "--state", state, "--expires", "2h").stdout.strip()
    decoded = decode_token(token)
    assert decoded.endpoint == "198.18.0.10:51820"
    members = json.loads(run("members", "--state", state, "--json").stdout)
    assert members["members"] == [] and members["rendezvous"]["address"] == "10.42.0.1"
    err = one_line_error(run("remove", "--state", state, "nobody"))
    assert "nobody" in err


def test_init_refuses_to_overwrite_and_bad_values(tmp_path):
    state = str(tmp_path / "rdv")
    assert run("rendezvous", "init", "--state", state, "--network", "10.42.0.0/24",
               "--endpoint", "198.18.0.10:51820").returncode == 0
    err = one_line_error(run("rendezvous", "init", "--state", state, "--network", "10.43.0.0/24",
                             "--endpoint", "198.18.0.10:51820"))
    assert state in err or "exists" in err
    err = one_line_error(run("rendezvous", "init", "--state", str(tmp_path / "x"), "--network",
                             "10.42.0.300/24", "--endpoint", "198.18.0.10:51820"))
    assert "10.42.0.300" in err
    err = one_line_error(run("rendezvous", "init", "--state", str(tmp_path / "y"), "--network",
                             "10.42.0.0/24", "--endpoint", "no-port-here"))
    assert "no-port-here" in err


def test_invite_errors(tmp_path):
    err = one_line_error(run("invite", "--state", str(tmp_path / "missing")))
    assert "missing" in err
    state = str(tmp_path / "rdv")
    run("rendezvous", "init", "--state", state, "--network", "10.42.0.0/24",
        "--endpoint", "198.18.0.10:51820")
    err = one_line_error(run("invite", "--state", state, "--expires", "soon"))
    assert "soon" in err


def test_join_with_garbage_token_or_no_state(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("join checks for root before it reads the token")
    err = one_line_error(run("join", "not-a-token", "--state", str(tmp_path / "m")))
    assert "token" in err
    err = one_line_error(run("join", "--state", str(tmp_path / "m2")))
    assert "token" in err and "meshwg invite" in err
    assert not os.path.exists(tmp_path / "m")     # nothing half-created


def test_status_without_members(tmp_path):
    err = one_line_error(run("status", "--interface", "nomember0"))
    assert "nomember0" in err
