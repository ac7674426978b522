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
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, Callable

log = logging.getLogger("meshwg.service")


class Service:
    """Threads, a stop flag and a wake-up pipe shared by one server's loops."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors = 0                     # exceptions caught in this service's threads
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._threads: list[threading.Thread] = []
        self._on_close: list[Callable[[], Any]] = []
        self._lock = threading.Lock()

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

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every thread (idempotent), then run the close hooks."""
        if self._stopping.is_set() and self._wake_w < 0:
            return
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        current = threading.current_thread()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not current:
                thread.join(timeout)
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
