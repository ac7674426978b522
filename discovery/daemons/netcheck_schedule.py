"""The member's own netcheck, in the background (when: discovery.netcheck.schedule).

A thread of its own (meshwg.util.service.Service's wake-or-deadline loop) runs the netcheck
probes (discovery.netcheck.command.run: a few datagrams to the rendezvous's observation
responder, under 5 s) when the schedule says so, saves the report in the member state
directory as ``meshwg netcheck --state`` does (discovery.netcheck.facts) and hands the
facts it gives to the member daemon (``on_facts(families, hard_nat)``, from this thread).
Nothing waits for it: the join, the tunnels and the main loop go on meanwhile. Idle, the
thread sleeps until the next check (half an hour) or an address change.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service

from discovery.netcheck.command import run as run_netcheck
from discovery.netcheck.facts import checked_at, facts_of, save_report
from discovery.netcheck.schedule import NetcheckSchedule

log = logging.getLogger("meshwg.member")

Facts = tuple[set[int] | None, bool | None]


class BackgroundNetcheck:
    """netcheck against ``rendezvous`` (its WireGuard "HOST:PORT") for the member state in
    ``state_dir``; ``run`` and ``clock`` are netcheck's probes and wall-clock time."""

    def __init__(self, state_dir: str, rendezvous: str, on_facts: Callable[[Facts], None],
                 run: Callable[[str], dict] = run_netcheck, clock: Callable[[], float] = time.time):
        self.state_dir, self.rendezvous, self.on_facts = state_dir, rendezvous, on_facts
        self.run, self.clock = run, clock
        self.schedule = NetcheckSchedule(clock(), checked_at(state_dir))
        self.checks = 0                      # checks run
        self.last_error: str | None = None   # why the last one found nothing
        self._lock = threading.Lock()
        self._service = Service("member-netcheck")

    def start(self) -> "BackgroundNetcheck":
        self._service.spawn(self._service.loop, self._round, name="member-netcheck")
        return self

    def stop(self) -> None:
        self._service.stop()

    def addresses_changed(self) -> None:
        """Our addresses changed (any thread): check again soon."""
        with self._lock:
            self.schedule.addresses_changed(self.clock())
        self._service.wake()

    def _round(self) -> float | None:
        now = self.clock()
        with self._lock:
            due = self.schedule.due
        if now < due:
            return due - now
        found = self.check(now)
        with self._lock:
            self.schedule.ran(self.clock(), found)
            return max(0.0, self.schedule.due - self.clock())

    def check(self, now: float) -> bool:
        """Probe, save and hand over the facts; False when the check found nothing."""
        self.checks += 1
        try:
            report = self.run(self.rendezvous)
        except (MeshwgError, OSError) as exc:
            self.last_error = str(exc)
            log.info("netcheck: %s", exc)
            return False
        if report.get("udp") is not True:
            self.last_error = "no UDP answer from the rendezvous"
            log.info("netcheck: %s (%s)", self.last_error, self.rendezvous)
            return False
        self.last_error = None
        try:
            save_report(self.state_dir, report, now)
        except OSError as exc:
            log.warning("netcheck: not saved in %s: %s", self.state_dir, exc.strerror or exc)
        facts = facts_of(report)
        log.info("netcheck: hard NAT %s", facts[1])
        self.on_facts(facts)
        return True

    def status(self) -> dict[str, Any]:
        """For the status file: checks run, the next one (wall-clock), the last error."""
        with self._lock:
            due = self.schedule.due
        return {"checks": self.checks, "next_at": round(due, 1), "error": self.last_error}
