"""meshwg.util.files (atomic writes, JsonFile) and meshwg.util.service (the server loop)."""

from __future__ import annotations

import json
import os
import socket
import threading

from meshwg.util.files import JsonFile, atomic_write
from meshwg.util.service import Service


def test_atomic_write_replaces_the_file_with_its_mode(tmp_path) -> None:
    path = tmp_path / "state"
    atomic_write(path, "one")
    inode = os.stat(path).st_ino
    atomic_write(path, b"two", mode=0o640)
    assert path.read_bytes() == b"two" and os.stat(path).st_ino != inode
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state"]        # no temporary left


def test_json_file_writes_only_changes_and_removes_only_its_own(tmp_path) -> None:
    path = tmp_path / "run" / "x.json"
    f = JsonFile(path)
    assert f.write({"a": 1}, extra={"at": 1}) and not f.write({"a": 1}, extra={"at": 2})
    assert json.loads(path.read_text()) == {"a": 1, "at": 1} and f.writes == 1
    other = JsonFile(path)          # e.g. a second process that failed to start
    other.remove()
    assert path.exists()
    f.remove()
    assert not path.exists()


def test_service_stop_wakes_a_blocked_loop_and_counts_errors() -> None:
    svc = Service("test")
    a, b = socket.socketpair()
    a.setblocking(False)
    got, failed = [], threading.Event()

    def loop() -> None:
        while svc.wait_readable(a):
            got.append(a.recv(16))

    def broken() -> None:
        failed.set()
        raise RuntimeError("a handler bug")

    svc.spawn(loop)
    svc.spawn(broken)
    b.send(b"hello")
    assert failed.wait(5)
    deadline = threading.Event()
    for _ in range(100):                       # poll with a deadline, no bare sleep
        if got:
            break
        deadline.wait(0.05)
    svc.stop(timeout=5)                        # returns although loop() blocks in poll
    assert got == [b"hello"] and svc.errors == 1 and svc.stopping
    assert svc.wait_readable(a) == []          # stopped: never blocks again
    svc.stop()                                 # idempotent
    a.close()
    b.close()


def test_service_loop_runs_at_once_on_wake_and_at_its_deadline() -> None:
    """Service.loop: a round at start, one per wake(), one when the returned delay has
    passed; a failing round is counted and retried; stop() ends a loop that waits."""
    svc = Service("loop")
    rounds: list[str] = []
    ran = threading.Event()
    delays = iter([None, 0.05, None])          # 1st: wait for wake; 2nd: due soon; 3rd: wait

    def step():
        rounds.append("round")
        ran.set()
        try:
            delay = next(delays)
        except StopIteration:
            raise RuntimeError("a round that fails") from None
        return delay

    svc.spawn(svc.loop, step)
    assert ran.wait(5)
    ran.clear()
    svc.wake()                                 # second round now
    assert ran.wait(5)
    ran.clear()
    assert ran.wait(5)                         # third round: after its 0.05 s delay
    ran.clear()
    svc.wake()                                 # fourth round fails: counted, retried after 1 s
    assert ran.wait(5)
    ran.clear()
    assert ran.wait(5) and svc.errors >= 1
    svc.stop(timeout=5)
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "loop")
