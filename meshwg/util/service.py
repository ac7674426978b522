"""The threaded service loop every meshwg and discovery server uses, written once.

A Service owns a few threads that block on their sockets without timeouts (an idle server
costs no CPU: nothing wakes it but traffic) and stop together: stop() sets the stop flag,
wakes every waiting thread through a self-pipe, joins them and runs the close hooks. An
exception raised in a thread is logged and counted (`errors`), never escapes, and ends
only that thread's current piece of work: loops go on, per-connection handlers end.

    svc = Service("notify-listener")
    def loop():
        while svc.wait_readable(sock):      # False once stop() is called
            handle(sock.recvfrom(2048))     # sock is non-blocking
    svc.spawn(loop)
    ...
    svc.stop()

Stream servers use serve_connections (the accept loop, one thread per connection, a limit)
and StreamReader (lines or exact sizes with a deadline, ended by stop()). The accept loop
survives what the system runs out of (descriptors, buffers, threads: it pauses accepting
briefly and serves on), and stop() is prompt whatever clients do: it shuts down every
connection a handler holds (ending a send to a client that does not read) and waits for
all threads together at most `timeout` seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("meshwg.service")

# accept() errors that say the process or system is out of something (descriptors, buffer
# memory): accepting again at once would spin, so the accept loop pauses, doubling from
# the first to the last of ACCEPT_BACKOFF seconds while they last, and serves on
RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_BACKOFF = (0.01, 1.0)


class Service:
    """Threads, a stop flag and a wake-up pipe shared by one server's loops."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors = 0                     # exceptions caught in this service's threads
        self.accept_errors = 0              # accepts that failed for want of resources
        self._conns: set[Any] = set()       # connections handlers hold (serve_connections)
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._threads: list[threading.Thread] = []
        self._on_close: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()        # for loop(): wake() asks for a round now

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def spawn(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> threading.Thread:
        """Run target(*args) in a daemon thread; its exceptions are logged and counted."""
        def guarded() -> None:
            try:
                target(*args)
            except Exception:           # noqa: BLE001 -- a server thread never dies loudly
                if not self._stopping.is_set():
                    with self._lock:
                        self.errors += 1
                    log.exception("%s: unexpected error (dropped)", self.name)

        thread = threading.Thread(target=guarded, name=name or self.name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def on_close(self, action: Callable[[], Any]) -> None:
        """Run `action` (close a socket, ...) in stop(), after the threads have ended."""
        self._on_close.append(action)

    def wait_readable(self, *files: Any, timeout: float | None = None) -> list[Any]:
        """Block until one of `files` (sockets or descriptors) is readable, `timeout`
        seconds pass (None: no limit) or stop() is called. Returns the readable ones ([]
        on timeout or stop; check `stopping`)."""
        if self._stopping.is_set():
            return []
        poller = select.poll()
        by_fd = {}
        for f in files:
            fd = f if isinstance(f, int) else f.fileno()
            by_fd[fd] = f
            poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        except OSError:
            return []
        if self._stopping.is_set():
            return []
        return [by_fd[fd] for fd, _ in ready if fd in by_fd]

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless stopped first; True when the time passed."""
        return not self._stopping.wait(seconds)

    def loop(self, step: Callable[[], float | None]) -> None:
        """A wake-or-deadline loop (run it with spawn): step() runs at once, then again
        when wake() is called or the seconds it returned have passed (None: only when
        woken), until the service stops. An exception in step() is logged and counted,
        and the next round comes a second later."""
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                delay = step()
            except Exception:           # noqa: BLE001 -- the loop goes on
                with self._lock:
                    self.errors += 1
                log.exception("%s: loop round failed", self.name)
                delay = 1.0
            if self._stopping.is_set():
                break
            self._wakeup.wait(None if delay is None else max(0.0, delay))

    def wake(self) -> None:
        """Ask loop() for a round now (any thread, any time; cheap when already awake)."""
        self._wakeup.set()

    def serve_connections(self, listener: Any, handle: Callable[[Any, Any], Any], *,
                          limit: int = 64, name: str | None = None,
                          on_reject: Callable[[], Any] | None = None,
                          per_source: int | None = None) -> None:
        """The accept loop of a stream server: run it in a thread of this service
        (`spawn(lambda: svc.serve_connections(listener, handle, ...))`; the listener
        non-blocking).
        Each connection goes to handle(conn, peer) in a thread of its own, at most
        `limit` at once, and, once half of them are taken, at most `per_source` from one
        source address (peer[0]; None: no such limit), so a few abusive hosts cannot hold
        every slot while many clients behind one address are served when it is quiet: one
        more is closed at once and on_reject() called. The connection is closed when handle returns, and shut down by stop(). Accept errors
        never end the loop: for want of descriptors or memory (RESOURCE_ERRORS, or no
        thread to be had) it pauses (ACCEPT_BACKOFF) and accepts again, logging once per
        spell (`accept_errors` counts them). Returns when the service stops."""
        slots = threading.BoundedSemaphore(limit)
        pause = 0.0
        per_peer: dict[Any, int] = {}       # connections being served by source address

        def release(conn: Any, peer: Any) -> None:
            with self._lock:
                self._conns.discard(conn)
                if per_source is not None:
                    per_peer[peer[0]] -= 1
                    if not per_peer[peer[0]]:
                        del per_peer[peer[0]]
            slots.release()

        def serve_one(conn: Any, peer: Any) -> None:
            try:
                with conn:
                    handle(conn, peer)
            finally:
                release(conn, peer)

        while not self._stopping.is_set():
            if not self.wait_readable(listener):
                self.sleep(ACCEPT_BACKOFF[0])   # stopped (the loop ends), or poll failed
                continue
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue                    # the client gave up before we got to it
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRORS:
                    log.debug("%s: accept failed: %s", self.name, exc)  # ECONNABORTED, ...
                    continue
                pause = self._accept_pause(pause, exc)
                continue
            with self._lock:
                crowded = (per_source is not None and per_peer.get(peer[0], 0) >= per_source
                           and sum(per_peer.values()) >= limit // 2)
            if crowded or not slots.acquire(blocking=False):
                conn.close()
                if on_reject is not None:
                    on_reject()
                continue
            with self._lock:
                self._conns.add(conn)
                if per_source is not None:
                    per_peer[peer[0]] = per_peer.get(peer[0], 0) + 1
            try:
                self.spawn(serve_one, conn, peer, name=name or f"{self.name}-conn")
            except RuntimeError as exc:     # can't start new thread
                conn.close()
                release(conn, peer)
                pause = self._accept_pause(pause, exc)
                continue
            if pause:
                log.warning("%s: accepting connections again", self.name)
                pause = 0.0

    def _accept_pause(self, pause: float, exc: BaseException) -> float:
        """Count a failed accept, log the first of a spell, wait; the next pause."""
        with self._lock:
            self.accept_errors += 1
        if not pause:
            log.warning("%s: cannot accept a connection (%s): pausing accepts, serving on",
                        self.name, exc)
        pause = min(max(pause * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
        self.sleep(pause)
        return pause

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every thread (idempotent), then run the close hooks. Connections that
        handlers hold are shut down first (a handler blocked sending to a client that
        does not read returns); the threads get `timeout` seconds in all, not each."""
        if self._stopping.is_set() and self._wake_w < 0:
            return
        self._stopping.set()
        self._wakeup.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        with self._lock:
            threads = list(self._threads)
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        current = threading.current_thread()
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        for action in self._on_close:
            try:
                action()
            except OSError:
                pass
        self._on_close.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


class Waker:
    """A self-pipe that lets other threads wake a loop blocked in Service.wait_readable:
    pass the Waker among the files; when it comes back readable, drain() it. wake() never
    blocks (a full pipe already wakes the loop)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def drain(self) -> None:
        try:
            os.read(self._r, 4096)
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class StreamReader:
    """Lines and exact sizes from a stream socket, received only when poll says bytes are
    there, so a read ends at the end of the stream, at `deadline` (time.monotonic()
    seconds), after `idle_timeout` seconds without a byte, or when `service` stops,
    whichever comes first. Without a service it waits with poll alone (a client)."""

    def __init__(self, conn: Any, service: Service | None = None, *,
                 deadline: float | None = None, idle_timeout: float | None = None,
                 chunk: int = 4096) -> None:
        self.conn = conn
        self.service = service
        self.deadline = deadline
        self.idle_timeout = idle_timeout
        self.chunk = chunk
        self.ended = False          # the peer ended the stream (not a timeout or a stop)
        self._buf = bytearray()

    def readline(self, limit: int) -> bytes:
        """Up to and including the next newline, at most `limit` bytes; fewer (no newline)
        when the stream ends, the time is up or the service stops first."""
        while True:
            end = self._buf.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buf) >= limit or not self._fill():
                return self._take(min(limit, len(self._buf)))

    def read_line(self, limit: int) -> bytes | None:
        """One whole line (with its newline) of at most `limit` bytes, else None."""
        line = self.readline(limit)
        return line if line.endswith(b"\n") else None

    def read(self, size: int) -> bytes:
        """`size` bytes; fewer when the stream ends, the time is up or the service stops."""
        while len(self._buf) < size and self._fill():
            pass
        return self._take(min(size, len(self._buf)))

    def read_exact(self, size: int) -> bytes | None:
        """Exactly `size` bytes, else None."""
        data = self.read(size)
        return data if len(data) == size else None

    def _wait(self) -> bool:
        timeout = self.idle_timeout
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            timeout = remaining if timeout is None else min(timeout, remaining)
        if self.service is not None:
            return bool(self.service.wait_readable(self.conn, timeout=timeout))
        poller = select.poll()
        poller.register(self.conn, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))

    def _fill(self) -> bool:
        while self._wait():
            try:
                data = self.conn.recv(self.chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return False
            if not data:
                self.ended = True
                return False
            self._buf += data
            return True
        return False

    def _take(self, size: int) -> bytes:
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out
