"""What every meshwg command shares: the user-facing error, privilege checks, signals, pid files."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

from meshwg.util.errors import MeshwgError
from meshwg.util.files import RUN_DIRECTORY as PID_DIRECTORY
from meshwg.util.files import write_pid_file


class CliError(MeshwgError):
    """A user-facing error: printed as one line, exit status 1."""


def fail(message: str) -> None:
    raise CliError(message)


def check_privileges() -> None:
    if os.geteuid() != 0:
        fail("must run as root (creating a TUN interface needs CAP_NET_ADMIN)")
    if not os.path.exists("/dev/net/tun"):
        fail("/dev/net/tun does not exist: this kernel or container has no TUN support")


class StopSignal:
    """SIGINT/SIGTERM handlers installed before anything is created, so a signal that
    arrives while an interface is still being set up stops it cleanly afterwards instead
    of killing the process half-way."""

    def __init__(self):
        self.event = threading.Event()
        self.received: list[int] = []
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        self.received.append(signum)
        self.event.set()

    def wait(self) -> int:
        """Block until SIGINT or SIGTERM (returns at once if one came already). Costs no
        CPU while waiting: the main thread sleeps in the event's lock, which a signal
        interrupts to run the handler that sets the event."""
        self.event.wait()
        return self.received[0]


def run_in_foreground(thing, name: Callable[[], str], banner: Callable[[], str],
                      stop: StopSignal) -> None:
    """Start `thing` (a Device or a mesh daemon: start()/stop()), record its pid as
    PID_DIRECTORY/NAME.pid for `meshwg down`, print the banner, run until SIGINT/SIGTERM,
    then stop it and remove the pid file. `stop` is installed before `thing` was made, so
    a signal during start-up stops it cleanly. MeshwgError from start() goes up to the
    CLI's one handler; other OSErrors become one line."""
    try:
        thing.start()
    except OSError as exc:
        if isinstance(exc, MeshwgError):
            raise
        raise CliError(f"cannot start: {exc.strerror or exc}") from None
    pid_path = write_pid_file(name())
    try:
        print(banner(), file=sys.stderr, flush=True)
        stop.wait()
    finally:
        thing.stop()
        try:
            os.unlink(pid_path)
        except FileNotFoundError:
            pass
