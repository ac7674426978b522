"""The member daemon's hard-NAT traversal: the birthday planner
(discovery.traversal.birthday) and its sockets (discovery.traversal.birthday_sockets),
driven once per reconciliation round.

Only a member that knows its own NAT kind (netcheck's hard-NAT fact, reported to the
rendezvous and published as the TXT key ``nat``) takes part; without it nothing is opened
and no thread runs.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from meshwg.device.api import DeviceStatus, DeviceUpdate
from meshwg.device.device import Device
from meshwg.util.endpoint import Endpoint, format_endpoint

from discovery.dnssd.member import MemberRecord
from discovery.traversal.birthday import (
    EASY, HARD, NAT_TXT_KEY, PROBE_RATE, BirthdayPlanner, add_probes, nat_kind, pairs_from,
)
from discovery.traversal.birthday_sockets import BirthdaySockets
from discovery.traversal.paths import PathManager

log = logging.getLogger("meshwg.member")


class HardNatTraversal:
    """Birthday attempts for one member whose netcheck found `hard_nat` (None: unknown,
    no attempts)."""

    def __init__(self, hard_nat: bool | None):
        self.nat = nat_kind(hard_nat)           # "hard" | "easy" | None: what we report
        self.planner = BirthdayPlanner(self.nat)
        self.sockets: BirthdaySockets | None = None

    def start(self, device: Device, wake: Callable[[], None]) -> None:
        """Open the sockets' thread (only with a known NAT kind); `wake` asks the daemon
        for a round (a probe found a path)."""
        if self.nat is not None:
            self.sockets = BirthdaySockets(device.listen_port, device.send_side, on_hit=wake).start()

    def stop(self) -> None:
        if self.sockets is not None:
            self.sockets.stop()

    def published(self, own: MemberRecord | None) -> bool:
        """Whether the directory's record of us carries our NAT kind (else: report again)."""
        return self.nat is None or (own is not None and own.extra.get(NAT_TXT_KEY) == self.nat)

    def round(self, now: float, directory: Mapping[bytes, MemberRecord], paths: PathManager,
              status: DeviceStatus, update: DeviceUpdate) -> float | None:
        """Decide and carry out this round's attempts; the handshakes through found paths
        are added to `update`. Returns when to look again (None: only on events)."""
        sockets = self.sockets
        if sockets is None:
            return None
        engine = {peer.public_key: peer.endpoint for peer in status.peers}
        step = self.planner.step(now, pairs_from(directory, paths, now), sockets.proxies(), engine)
        for key in step.end:
            sockets.end(key)
        for key in step.release:
            sockets.release(key)
        for attempt in step.start:
            name = directory[attempt.key].name if attempt.key in directory else "?"
            if attempt.role == HARD:
                opened = sockets.open_hard(attempt.key, attempt.target, attempt.sockets)
                log.info("birthday: %s: %d sockets towards %s:%d", name, opened, *attempt.target)
            elif attempt.role == EASY:
                sockets.spray(attempt.key, attempt.target[0], attempt.ports, PROBE_RATE,
                              delay=max(0.0, attempt.spray_at - now))
                log.info("birthday: %s: %d probes to %s", name, len(attempt.ports), attempt.target[0])
        add_probes(update.peers, step.probes)
        return step.next_deadline

    def explain(self, key: bytes, endpoint: Endpoint | None, reason: str) -> str:
        """A path's status reason, told when the engine uses a path birthday probing found
        (its loopback proxy); `reason` otherwise."""
        if self.sockets is None or endpoint is None or self.sockets.proxies().get(key) != endpoint:
            return reason
        return ("birthday probing found a port of our hard NAT that the peer's probe reached; "
                f"through its loopback proxy {format_endpoint(endpoint)}")

    def status(self) -> dict[str, Any] | None:
        """Counters for the status file (None when not taking part)."""
        if self.sockets is None:
            return None
        c = self.sockets.counters
        peers = self.planner.peers.values()
        times = [s.last_success_after for s in peers if s.last_success_after is not None]
        return {"nat": self.nat, "attempts": sum(s.attempts for s in peers),
                "successes": sum(s.successes for s in peers),
                "last_success_after": round(max(times), 2) if times else None,
                "hits": c.hits, "probes_sent": c.probes_sent, "sockets_opened": c.sockets_opened,
                "dropped": c.dropped}
