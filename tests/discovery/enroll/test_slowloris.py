"""Issue 9 case 6: slow (slowloris) connections on the enrollment port, over real TCP on
loopback. 64 connections from one host (127.0.0.2) that drip bytes and never finish a
line; meanwhile 19 joiners from another (127.0.0.1) enroll one after another, all of
them. Before: the
abusers held every slot and 2 of 19 got through."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from discovery.enroll.transport import EnrollmentServer
from discovery.lab.netns import poll

from tests.discovery.enroll.test_enrollment import Rendezvous, rz  # noqa: F401 -- the fixture

ABUSER = "127.0.0.2"


class Slowloris:
    """`count` connections from ABUSER to `port` that send one byte of a request every
    `every` seconds, reconnecting when the server closes one: the classic attack."""

    def __init__(self, port: int, count: int, every: float = 0.2):
        self.port, self.count, self.every = port, count, every
        self.stop = threading.Event()
        self.cut = 0                    # connections the server closed on us
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                         source_address=(ABUSER, 0))
            s.setblocking(False)
            return s
        except OSError:
            return None

    def _run(self) -> None:
        conns = [c for c in (self._connect() for _ in range(self.count)) if c]
        while not self.stop.wait(self.every):
            for i, c in enumerate(conns):
                try:
                    c.send(b"{")
                    if c.recv(1, socket.MSG_PEEK) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    self.cut += 1
                    c.close()
                    conns[i] = self._connect() or c
        for c in conns:
            c.close()

    def __enter__(self) -> "Slowloris":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


def test_legitimate_joiners_get_through_64_slow_connections(rz: Rendezvous) -> None:
    with Slowloris(rz.port, 64) as attack:
        poll(lambda: rz.server.stats["dropped_busy"] >= 60, 60, "the abuser's surplus refused")
        token = rz.invite(reusable=True)
        results: dict[int, object] = {}
        for i in range(19):             # one after another, as joiners arrive
            try:
                results[i] = rz.enroll(token, f"joiner-{i}")
            except Exception as exc:    # noqa: BLE001 -- reported below
                results[i] = exc
        failed = {i: r for i, r in results.items() if isinstance(r, Exception)}
        assert not failed, failed
        assert len(rz.state.members()) == 19
        # the abuser's held connections end at the request deadline, dripping or not
        poll(lambda: attack.cut >= 4, 60, "dripping connections cut at the request deadline")


def test_a_dripping_client_is_cut_at_the_deadline_not_kept_alive(tmp_path: Path) -> None:
    from discovery.stores.rendezvous import RendezvousState
    st = RendezvousState.init(tmp_path / "rz", "100.64.0.0/24", "127.0.0.1:51820")
    server = EnrollmentServer(st, "127.0.0.1", 0, timeout=1.0).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 60 and not closed:
                try:
                    c.sendall(b" ")             # one byte well within any idle timeout
                    c.settimeout(0.2)
                    closed = c.recv(1) == b""
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
            assert closed, "a client dripping bytes kept its connection for 60 s"
        assert server.stats["dropped_unreadable"] == 1
    finally:
        server.stop()
        st.close()
