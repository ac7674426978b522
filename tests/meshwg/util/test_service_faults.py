"""Service.serve_connections under faults (issue 9, case 9), for every stream server that
uses it (control socket, enrollment, candidate reports, DNS over TCP, relay): a thread
that cannot be started costs neither the accept loop nor a connection slot, and stop()
is prompt while handlers are blocked sending to clients that do not read."""

from __future__ import annotations

import socket
import threading
import time

from discovery.lab.netns import poll
from meshwg.util.service import Service


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


class ThreadlessService(Service):
    """A Service whose first `failures` connection threads cannot be started."""

    def __init__(self, failures: int) -> None:
        super().__init__("threadless")
        self.failures = failures

    def spawn(self, target, *args, name=None):
        if name == "threadless-conn" and self.failures:
            self.failures -= 1
            raise RuntimeError("can't start new thread")
        return super().spawn(target, *args, name=name)


def test_accept_loop_survives_connections_it_cannot_start_a_thread_for() -> None:
    svc = ThreadlessService(failures=3)
    sock = listener()
    svc.on_close(sock.close)

    def echo(conn, _peer) -> None:
        conn.sendall(b"hello\n")
    # limit=1: a slot lost to a failed thread would refuse every later connection
    svc.spawn(lambda: svc.serve_connections(sock, echo, limit=1, name="threadless-conn"))
    try:
        def served() -> bool:
            try:
                with socket.create_connection(sock.getsockname(), timeout=10) as c:
                    return c.recv(16) == b"hello\n"
            except OSError:
                return False
        poll(served, 60, "a connection served after thread failures")
        assert svc.accept_errors == 3
        # the slot frees a moment after the client has read its answer: a connection
        # that arrives in between is refused, so each later one is a poll; a slot lost
        # for good would make it time out
        for _ in range(3):
            poll(served, 30, "a later connection served (no slot lost)")
    finally:
        svc.stop()


def test_stop_is_prompt_while_handlers_send_to_clients_that_do_not_read() -> None:
    svc = Service("flooder")
    sock = listener()
    svc.on_close(sock.close)
    sending = threading.Semaphore(0)

    def flood(conn, _peer) -> None:
        conn.setblocking(True)
        sending.release()
        conn.sendall(b"x" * (64 << 20))     # blocks: the client never reads
    svc.spawn(lambda: svc.serve_connections(sock, flood, name="flooder-conn"))
    clients = [socket.create_connection(sock.getsockname(), timeout=10) for _ in range(8)]
    try:
        for _ in clients:
            assert sending.acquire(timeout=60)
        started = time.monotonic()
        svc.stop(timeout=5)
        took = time.monotonic() - started
        assert took < 8, f"stop took {took:.1f} s"
        assert not [t for t in threading.enumerate() if t.name == "flooder-conn"]
    finally:
        svc.stop()
        for c in clients:
            c.close()
