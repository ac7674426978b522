"""The protocol's timer durations, injectable so tests can run a rekey in seconds."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace

from meshwg.core import constants as C


@dataclass(frozen=True, slots=True)
class Timers:
    rekey_after_time: float = C.REKEY_AFTER_TIME
    reject_after_time: float = C.REJECT_AFTER_TIME
    rekey_attempt_time: float = C.REKEY_ATTEMPT_TIME
    rekey_timeout: float = C.REKEY_TIMEOUT
    keepalive_timeout: float = C.KEEPALIVE_TIMEOUT
    cookie_refresh_time: float = C.COOKIE_REFRESH_TIME
    rekey_after_messages: int = C.REKEY_AFTER_MESSAGES
    reject_after_messages: int = C.REJECT_AFTER_MESSAGES
    # not WireGuard's: data sent and nothing authenticated received for this long emits
    # PathUnanswered (0: off; the mesh member's fast fallback sets ~1 s), and received
    # data is answered with a keepalive within half of it (not KEEPALIVE_TIMEOUT)
    unanswered_after: float = 0.0

    @property
    def max_handshake_attempts(self) -> int:
        return max(1, int(self.rekey_attempt_time / self.rekey_timeout))

    @property
    def key_zeroing_time(self) -> float:
        return 3 * self.reject_after_time

    @property
    def rekey_on_receive_age(self) -> float:
        """An initiator rekeys on receive once its keypair is this old (165 s by default)."""
        return self.reject_after_time - self.keepalive_timeout - self.rekey_timeout

    def jitter(self) -> float:
        return random.uniform(0.0, C.REKEY_TIMEOUT_JITTER_MAX * self.rekey_timeout / C.REKEY_TIMEOUT)

    def with_overrides(self, overrides: dict[str, float]) -> "Timers":
        """A copy with some durations replaced; raises ValueError naming an unknown or bad timer."""
        names = {f.name for f in fields(self)}
        clean: dict[str, float] = {}
        for name, value in overrides.items():
            if name not in names:
                raise ValueError(f"unknown timer {name!r} (known: {', '.join(sorted(names))})")
            if value <= 0:
                raise ValueError(f"timer {name} must be positive, got {value}")
            clean[name] = int(value) if name.endswith("messages") else float(value)
        return replace(self, **clean)
