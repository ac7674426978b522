"""The files of running interfaces (issue 9, case 14): status, counters and pid files are
0600 whatever the umask, written in one place (meshwg.util.files); a pid file tells a live
process from one that was killed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from discovery.daemons.member_status import StatusFile, status_path
from meshwg.device.stats import StatsFile
from meshwg.util.files import (JsonFile, atomic_write, process_running, read_pid_file,
                               write_pid_file)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_run_file_is_0600_under_umask_022(tmp_path, umask_022):
    run = str(tmp_path / "run")
    stats = StatsFile("mw0", run)
    assert stats.publish({"malformed": 3})
    status = StatusFile(status_path("mw0", run))
    assert status.write({"interface": "mw0", "peers": [{"name": "b", "endpoint": "192.0.2.1:1"}]})
    plain = JsonFile(os.path.join(run, "other.json"))
    assert plain.write({"a": 1})
    pid = write_pid_file("mw0", run)
    atomic_write(os.path.join(run, "state"), b"x")
    for name in sorted(os.listdir(run)):
        assert mode(os.path.join(run, name)) == 0o600, name
    assert read_pid_file("mw0", run) == os.getpid() and pid.endswith("mw0.pid")


def test_a_world_readable_file_becomes_0600_on_its_next_write(tmp_path, umask_022):
    path = tmp_path / "mw0.stats.json"
    path.write_text("{}")
    os.chmod(path, 0o644)                     # left by an older version
    assert StatsFile("mw0", str(tmp_path)).publish({"replayed": 1})
    assert mode(path) == 0o600


def test_pid_file_liveness(tmp_path):
    run = str(tmp_path)
    assert read_pid_file("none", run) is None
    (tmp_path / "junk.pid").write_text("not a pid\n")
    assert read_pid_file("junk", run) is None
    (tmp_path / "huge.pid").write_text("9" * 40 + "\n")
    assert read_pid_file("huge", run) is None
    assert process_running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_running(child.pid)
    finally:
        child.kill()
    child.wait(timeout=30)
    assert not process_running(child.pid)


def test_pid_file_holding_no_ascii_number_is_no_pid(tmp_path) -> None:
    for text in ("\u00b2", "0", "9" * 5000, "12x", ""):
        (tmp_path / "x.pid").write_text(text)
        assert read_pid_file("x", str(tmp_path)) is None, text
    (tmp_path / "x.pid").write_text("4242\n")
    assert read_pid_file("x", str(tmp_path)) == 4242
