"""`meshwg rendezvous status` (discovery/daemons/rendezvous_status.py, discovery/cli.py):
what the daemon's status file says, as text, and the command reading it. The running
daemon writing it, and a dead primary in it: test_zone_rendezvous_mesh_lab.py and
test_member_names_lab.py (namespaces)."""

from __future__ import annotations

import json
import os
import subprocess

from discovery.daemons.rendezvous_status import directory_status, format_status, status_path
from discovery.stores.zone_rendezvous import ZoneState
from tests.discovery.daemons.test_mesh_cli import MESHWG, ROOT, one_line_error

BASE = {"interface": "meshwg-rdv", "address": "10.99.0.1", "network": "10.99.0.0/24",
        "zone": "mesh.internal.", "endpoint": "203.0.113.7:51820", "members": 3,
        "pid": 1, "running": True, "updated_at": 1000.0}
DNS = {"kind": "dns", "servers": "dns://192.0.2.53:53,dns://192.0.2.54:53",
       "read_from": "192.0.2.54:53", "problem": None,
       "primary_problem": "cannot reach DNS server 192.0.2.53:53 (timed out)"}


class _Embedded:
    directory = ""


def test_embedded_directory() -> None:
    assert directory_status(_Embedded()) == {"kind": "embedded"}
    lines = format_status({**BASE, "directory": directory_status(_Embedded())})
    assert lines == ["rendezvous meshwg-rdv: 10.99.0.1 (mesh 10.99.0.0/24, zone mesh.internal., "
                     "endpoint 203.0.113.7:51820), 3 members",
                     "  directory: embedded (this rendezvous's state)"]


def test_a_zone_state_with_a_dead_primary() -> None:
    state = object.__new__(ZoneState)        # its fields as the daemon reads them, no server
    state.__dict__.update(_state=_Embedded(), read_from="192.0.2.54:53", problem="",
                          primary_problem=DNS["primary_problem"])
    state._state.directory = DNS["servers"]
    assert directory_status(state) == DNS
    lines = format_status({**BASE, "directory": DNS})
    assert lines[1:] == [
        "  directory: dns://192.0.2.53:53,dns://192.0.2.54:53, read from 192.0.2.54:53",
        "  PROBLEM: the primary is not writable: cannot reach DNS server 192.0.2.53:53 "
        "(timed out); enrollment, invites and revocation wait for it"]
    none = {**DNS, "problem": "cannot reach ...; cannot reach ..."}
    assert "  PROBLEM: no directory server answers: cannot reach ...; cannot reach ...; " \
           "serving the membership as last read" in format_status({**BASE, "directory": none})
    fine = {**DNS, "primary_problem": None, "read_from": "192.0.2.53:53"}
    assert format_status({**BASE, "directory": fine})[-1] == "  primary: answers"


def test_a_killed_rendezvous_is_not_running() -> None:
    lines = format_status({**BASE, "running": False, "pid": 4242, "directory": DNS}, now=1090.0)
    assert lines[1] == ("  NOT RUNNING: process 4242 is gone (killed?); this status is from "
                        "90s ago. `meshwg rendezvous run` starts it again")


def test_the_command_reads_the_file(tmp_path) -> None:
    out = subprocess.run(MESHWG + ["rendezvous", "status", "--state", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "no running `meshwg rendezvous run --state" in one_line_error(out)
    doc = {key: value for key, value in BASE.items() if key != "running"}
    with open(status_path(tmp_path), "w") as f:
        json.dump({**doc, "pid": os.getpid(), "directory": DNS}, f)
    out = subprocess.run(MESHWG + ["rendezvous", "status", "--state", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    shown = json.loads(out.stdout)
    assert shown["running"] is True and shown["directory"] == DNS and shown["members"] == 3
    out = subprocess.run(MESHWG + ["rendezvous", "status", "--state", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    assert out.stdout.splitlines() == format_status({**doc, "pid": os.getpid(), "running": True,
                                                     "directory": DNS})
    with open(status_path(tmp_path), "w") as f:
        f.write("{not json")
    out = subprocess.run(MESHWG + ["rendezvous", "status", "--state", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert str(status_path(tmp_path)) in one_line_error(out)
