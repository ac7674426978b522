"""The member daemon's hard-NAT traversal: the birthday planner
(discovery.traversal.birthday) and its sockets (discovery.traversal.birthday_sockets),
driven once per reconciliation round.

Only a member that knows its own NAT kind (netcheck's hard-NAT fact, reported to the
rendezvous and published as the TXT key ``nat``) takes part; without it nothing is opened
and no thread runs. The kind comes from the saved report at start or, later, from the
member's own netcheck (:meth:`HardNatTraversal.set_nat`).
"""

from __future__ import annotations

import logging
import resource
from typing import Any, Callable, Mapping

from meshwg.device.api import DeviceStatus, DeviceUpdate
from meshwg.core.keys import encode_key
from meshwg.device.device import Device
from meshwg.util.endpoint import Endpoint, format_endpoint

from discovery.dnssd.member import MemberRecord
from discovery.traversal.birthday import (
    EASY, HARD, MAX_HARD, NAT_TXT_KEY, PROBE_RATE, SOCKETS, BirthdayPlanner, add_probes, nat_kind,
    pairs_from,
)
from discovery.traversal.birthday_sockets import BirthdaySockets
from discovery.traversal.paths import PathManager

log = logging.getLogger("meshwg.member")

DESCRIPTORS_BASE = 1024      # what the daemon holds besides the hard side's sockets, at most


def _descriptors_for(sockets: int) -> None:
    """Raise this process's soft descriptor limit (up to its hard limit) so that `sockets`
    more fit (as Go's runtime raises it for wireguard-go); fewer open when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = DESCRIPTORS_BASE + sockets
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (OSError, ValueError) as exc:
            log.info("birthday: descriptor limit stays %d: %s", soft, exc)


class HardNatTraversal:
    """Birthday attempts for one member whose netcheck found `hard_nat` (None: unknown,
    no attempts)."""

    def __init__(self, hard_nat: bool | None):
        self.nat = nat_kind(hard_nat)           # "hard" | "easy" | None: what we report
        self.planner = BirthdayPlanner(self.nat)
        self.sockets: BirthdaySockets | None = None
        self._started: tuple[Device, Callable[[], None]] | None = None

    def start(self, device: Device, wake: Callable[[], None]) -> None:
        """Open the sockets' thread (only with a known NAT kind); `wake` asks the daemon
        for a round (a probe found a path)."""
        self._started = (device, wake)
        if self.nat == HARD:
            _descriptors_for(MAX_HARD * SOCKETS)
        if self.nat is not None and self.sockets is None:
            self.sockets = BirthdaySockets(device.listen_port, device.send_side, on_hit=wake).start()

    def set_nat(self, hard_nat: bool | None) -> bool:
        """Our NAT kind as netcheck found it again (the member's own check); True when it
        changed (then it is to be reported). The sockets open once a kind is known; a check
        that could not tell (None) keeps the kind we had."""
        kind = nat_kind(hard_nat)
        if kind is None or kind == self.nat:
            return False
        self.nat = self.planner.own_nat = kind
        if self._started is not None:
            self.start(*self._started)
        return True

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
                "dropped": c.dropped,
                "proxies": {encode_key(key): format_endpoint(endpoint)
                            for key, endpoint in self.sockets.proxies().items()}}
