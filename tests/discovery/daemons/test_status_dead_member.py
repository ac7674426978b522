"""`meshwg status` shows a member killed with -9 as not running (issue 9, case 14): its
status file stays behind, but its pid file names a process that is gone. The member
here is a stand-in process that writes the files through the daemon's own writers (a real
member needs namespaces; the status command is the same)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from discovery.daemons.member_status import status_path
from discovery.lab.netns import unique_name
from meshwg.util.files import pid_path
from tests import REPO

MEMBER = r"""
import sys, time
from discovery.daemons.member_status import StatusFile, status_path
from meshwg.util.files import write_pid_file
name = sys.argv[1]
StatusFile(status_path(name)).write({
    "interface": name, "peers": [],
    "self": {"name": "m1", "mesh_address": "10.77.0.2", "public_key": "x", "listen_port": 1,
             "mesh_id": "t", "network": "10.77.0.0/24"}})
write_pid_file(name)
print("ready", flush=True)
time.sleep(600)
"""


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshwg", "status", *args], capture_output=True,
                          text=True, timeout=60, cwd=str(REPO))


def test_status_shows_a_member_killed_with_9_as_not_running() -> None:
    name = unique_name("mwdead")
    member = subprocess.Popen([sys.executable, "-c", MEMBER, name], stdout=subprocess.PIPE,
                              text=True, cwd=str(REPO))
    try:
        assert member.stdout.readline().strip() == "ready"
        alive = json.loads(status("--interface", name, "--json").stdout)
        assert alive["running"] is True and alive["pid"] == member.pid
        member.send_signal(signal.SIGKILL)
        member.wait(timeout=30)
        out = status("--interface", name)
        assert out.returncode == 0, out.stderr
        assert "NOT RUNNING" in out.stdout and f"process {member.pid} is gone" in out.stdout
        assert "NAME" not in out.stdout          # no peer table of a dead member
        doc = json.loads(status("--interface", name, "--json").stdout)
        assert doc["running"] is False
    finally:
        if member.poll() is None:
            member.kill()
            member.wait(timeout=30)
        for path in (status_path(name), pid_path(name)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
