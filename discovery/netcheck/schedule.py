"""When a member runs netcheck by itself (I/O-free; the member's runner is
discovery.daemons.netcheck_schedule).

A member needs its NAT kind (netcheck's hard-NAT fact) for birthday probing, and a user who
only runs ``meshwg join`` never ran ``meshwg netcheck``. So the member checks:

- at start, unless the saved report (discovery.netcheck.facts) is younger than FRESH;
  START_DELAY after start, so the join's first handshakes go first;
- after its own addresses change (SETTLE later: changes come in bursts), at most once per
  MIN_GAP;
- every PERIOD otherwise (an idle member sends a few datagrams per half hour);
- RETRY after a check that found nothing (no UDP answer, the host did not resolve),
  doubling up to PERIOD.

Times are wall-clock seconds (the saved report's ``checked_at`` is one).
"""

from __future__ import annotations

PERIOD = 1800.0        # seconds between checks of an unchanged network
FRESH = PERIOD         # a saved report younger than this is not checked again at start
START_DELAY = 1.0      # seconds after start before the first check
SETTLE = 2.0           # seconds after an address change before checking
MIN_GAP = 30.0         # seconds between two checks at least (address changes in a row)
RETRY = 60.0           # seconds after a check that found nothing; doubles up to PERIOD


class NetcheckSchedule:
    """When the next check is due. ``checked_at``: the saved report's time (None: none)."""

    def __init__(self, now: float, checked_at: float | None):
        self.last_run: float | None = None
        self.retry = RETRY
        fresh = checked_at is not None and 0 <= now - checked_at < FRESH
        self.due = checked_at + PERIOD if fresh else now + START_DELAY

    def addresses_changed(self, now: float) -> None:
        """Our addresses changed: check again soon (SETTLE, at most once per MIN_GAP)."""
        soon = now + SETTLE
        if self.last_run is not None:
            soon = max(soon, self.last_run + MIN_GAP)
        self.due = min(self.due, soon)

    def ran(self, now: float, found: bool) -> None:
        """A check ended at ``now``; ``found``: it learnt something (UDP answered)."""
        self.last_run = now
        if found:
            self.retry = RETRY
            self.due = now + PERIOD
        else:
            self.due = now + self.retry
            self.retry = min(PERIOD, self.retry * 2)
