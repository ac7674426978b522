"""Which relay carries a pair, free of I/O: both ends of a pair compute the same ranking
of the relays they know, send through the best one they can reach, and reply through
the one the other end's datagrams came through.

- Relays are the rendezvous's (each rendezvous the member keeps a tunnel to that runs
  one: with several, issue 10, the pool holds a relay per kept rendezvous, all in the
  rendezvous class) and those members offer in the directory (discovery.dnssd.relays).
  At most MAX_RELAYS are used: the rendezvous relays by key, then the member relays with
  the smallest keys, so both ends of a pair consider the same set.
- ranking(a, b, relays): a pair's relays, best first: relays that are neither end of the
  pair before one of the two members themselves (used only when it is the only one),
  member relays before the rendezvous's (they offered to take that load off it), then by
  BLAKE2s over the pair's keys and the relay's key, so pairs spread over the relays and
  both ends compute the same order without talking.
- RelayHealth: a relay is alive while it answers binds. While pairs are relayed, each
  relay is asked for a bind every PROBE_INTERVAL seconds; one that leaves a bind
  unanswered for DEAD_AFTER seconds is down until it answers again (the relay client
  retries every second by itself).
- choose(): a pair stays on the relay its engine uses while that relay is alive and
  ranks in the best class of the live ones (the other end may have moved first:
  WireGuard roaming has already pointed our engine at the proxy of the relay its
  datagrams came through); otherwise the best-ranked live relay. Classes, best first:
  another member's relay, the rendezvous's, one of the pair's own members. So a pair
  that started on the rendezvous's relay moves to a member relay once it is known, and
  both ends, ranking alike, move together. With no relay alive a pair keeps the one it
  is on (nothing is better).

A relay is named by its public key (the rendezvous's or the relaying member's
WireGuard key). Times are seconds of one monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint

MAX_RELAYS = 4            # relays a member binds at (a proxy socket per peer at each)
PROBE_INTERVAL = 2.0      # seconds between binds at each relay while pairs are relayed
DEAD_AFTER = 3.0          # seconds a bind may go unanswered before the relay counts as down
_RANK_LABEL = b"meshwg relay rank v1"


@dataclass(frozen=True)
class Relay:
    """One relay: its public key, UDP endpoint, the name status shows ("rendezvous" or
    the member's name), whether it is a rendezvous's, and its TLS relay ((ip, TCP port),
    certificate pin) when one is known (a rendezvous's: used when UDP is blocked)."""

    public_key: bytes
    endpoint: Endpoint
    name: str
    rendezvous: bool = False
    tls: tuple[Endpoint, bytes] | None = None


def usable_relays(relays: Iterable[Relay], limit: int = MAX_RELAYS) -> list[Relay]:
    """The relays a member binds at: the rendezvous relays first, then member relays,
    each by key, `limit` in all (one per key)."""
    unique: dict[bytes, Relay] = {}
    for relay in relays:
        unique.setdefault(relay.public_key, relay)
    ordered = sorted(unique.values(), key=lambda r: (not r.rendezvous, r.public_key))
    return ordered[:limit]


def ranking(a: bytes, b: bytes, relays: Iterable[Relay]) -> list[Relay]:
    """The pair (a, b)'s relays, best first (the same list on both ends)."""
    pair = min(a, b) + max(a, b)

    def rank(relay: Relay) -> tuple[bool, bool, bytes]:
        return (*_class(a, b, relay), crypto.hash_(_RANK_LABEL, pair, relay.public_key))

    return sorted(relays, key=rank)


def choose(a: bytes, b: bytes, relays: Iterable[Relay], alive: set[bytes],
           current: bytes | None = None) -> Relay | None:
    """The relay the pair (a = us, b = the peer) uses now: `current` (the relay whose proxy
    the engine's endpoint is, if any) while it is alive and in the best live class, else
    the best-ranked live relay. When none is alive, `current` stays (nothing is better;
    it may be slow to answer, not gone); None without one."""
    relays = list(relays)
    live = [r for r in ranking(a, b, relays) if r.public_key in alive]
    if not live:
        return next((r for r in relays if r.public_key == current), None)
    best = live[0]
    for relay in live:
        if relay.public_key == current and _class(a, b, relay) <= _class(a, b, best):
            return relay
    return best


def _class(a: bytes, b: bytes, relay: Relay) -> tuple[bool, bool]:
    """A member's relay (False, False) before the rendezvous's (False, True) before one of
    the pair's own members (True, ...)."""
    return relay.public_key in (a, b), relay.rendezvous


@dataclass
class _Probe:
    asked_at: float | None = None      # when the last bind was asked for
    next_ask: float = 0.0


@dataclass
class RelayHealth:
    """Liveness of relays from their bind acknowledgements. The member asks probes_due()
    which relays to send a bind to now, tells asked() it did, and passes each relay's last
    acknowledgement time (the relay client's `bound_at`) to alive()."""

    probe_interval: float = PROBE_INTERVAL
    dead_after: float = DEAD_AFTER
    _probes: dict[bytes, _Probe] = field(default_factory=dict)

    def forget_others(self, keys: Iterable[bytes]) -> None:
        keep = set(keys)
        for key in [k for k in self._probes if k not in keep]:
            del self._probes[key]

    def alive(self, key: bytes, acked_at: float | None, now: float) -> bool:
        """Acknowledged at least once, and the last bind asked for is answered or not yet
        DEAD_AFTER old."""
        if acked_at is None:
            return False
        probe = self._probes.get(key)
        if probe is None or probe.asked_at is None or acked_at >= probe.asked_at:
            return True
        return now - probe.asked_at < self.dead_after

    def probes_due(self, keys: Iterable[bytes], acked: Mapping[bytes, float | None],
                   now: float) -> list[bytes]:
        """The relays to ask for a bind now (while pairs are relayed): those not asked
        for PROBE_INTERVAL whose last bind was answered (an unanswered one is retried by
        the client every second anyway)."""
        due = []
        for key in keys:
            probe = self._probes.setdefault(key, _Probe())
            answered = probe.asked_at is None or (acked.get(key) or -1.0) >= probe.asked_at
            if now >= probe.next_ask and answered:
                due.append(key)
        return due

    def asked(self, key: bytes, now: float) -> None:
        probe = self._probes.setdefault(key, _Probe())
        probe.asked_at, probe.next_ask = now, now + self.probe_interval

    def next_deadline(self, keys: Iterable[bytes], acked: Mapping[bytes, float | None],
                      now: float) -> float | None:
        """When probes_due or alive may answer differently for `keys` (None: never)."""
        times = []
        for key in keys:
            probe = self._probes.get(key)
            if probe is None or probe.asked_at is None:
                times.append(now)
                continue
            if (acked.get(key) or -1.0) >= probe.asked_at:
                times.append(probe.next_ask)
            elif now - probe.asked_at < self.dead_after:
                times.append(probe.asked_at + self.dead_after)
            else:                       # down: look again for its answer to the client's retries
                times.append(now + self.probe_interval)
        return max(min(times), now) if times else None
