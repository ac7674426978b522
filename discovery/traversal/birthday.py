"""Hard-NAT traversal by birthday-paradox probing: when to try it, with whom, in which
role, for how long, and when to try again. I/O-free: the member daemon feeds it the
directory, the path manager and the sockets' state with the current time; the sockets
live in discovery.traversal.birthday_sockets.

The technique (Tailscale, "How NAT traversal works", the birthday paradox section): one
side ("hard") is behind an endpoint-dependent NAT, so every destination gets a fresh
public port and its reflexive address is useless to others; the other side ("easy") maps
endpoint-independently but filters per address and port. The hard side opens SOCKETS
sockets, each sending one small datagram to the easy side's reflexive endpoint: SOCKETS
mappings open on its NAT, at random public ports. The easy side sends probes from its
WireGuard socket (through the same mapping the hard side aimed at) to random ports of the
hard side's public IP; each probe also opens the easy NAT's filter for that port. A probe
that hits one of the SOCKETS ports reaches the hard side's socket: that socket becomes
the pair's path (a loopback proxy for the hard side's engine) and the hard side's engine
sends a handshake initiation through it. Only authenticated WireGuard traffic moves
either engine onto the new path (roaming); a failed attempt leaves the relay untouched.

With n sockets and k distinct probes over the P ports of the NAT's range the chance of
a hit is 1 - C(P-n, k) / C(P, k), about 1 - exp(-n k / P): 256 x 256 ~ 64 %, 256 x 1024
~ 98 %, 256 x 1600 ~ 99.8 % for P = 64,512 (Linux's default NAT source range 1024-65535).

Rules:
- Only between a side whose own netcheck found a hard NAT and a side whose netcheck found
  none (the directory's TXT key ``nat=hard|easy``, reported by each member): two hard
  sides would need ~65,536 probes a side. Unknown facts: no attempt.
- Only after the cheap candidates failed: the pair has had no direct path for
  START_AFTER seconds (the path manager's probing time; on the relay or not).
- Bounded: SOCKETS sockets, PROBES probes at PROBE_RATE per second, an attempt ends after
  HARD_WINDOW (hard side) or EASY_WINDOW (easy side) seconds; at most MAX_HARD hard and
  MAX_EASY easy attempts at once; after a failure the pair waits RETRY_START seconds,
  doubling up to RETRY_MAX.
- Both sides decide alone from the same facts, at about the same time (both see the pair
  fail); the easy side starts spraying EASY_DELAY seconds after its decision, so the hard
  side's mappings are there first, and the hard side's sockets stay open longer than the
  easy side sprays.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Mapping

from meshwg.device.api import PeerUpdate
from meshwg.util.endpoint import Endpoint

from discovery.dnssd.member import MemberRecord
from discovery.traversal.paths import PathManager

HARD, EASY = "hard", "easy"     # roles, and the TXT key's values
NAT_TXT_KEY = "nat"             # the directory key carrying a member's NAT kind

SOCKETS = 256                   # the hard side's sockets (fresh NAT mappings)
PROBES = 1600                   # the easy side's distinct probed ports per attempt
PROBE_RATE = 200.0              # probes per second, per pair
PORT_RANGE = (1024, 65535)      # where NATs pick public ports (Linux's default range)
START_AFTER = 3.0               # seconds without a direct path before an attempt
EASY_DELAY = 1.0                # seconds between the easy side's decision and its first probe
HARD_WINDOW = 20.0              # seconds the hard side's sockets wait for a probe
EASY_WINDOW = EASY_DELAY + PROBES / PROBE_RATE + 4.0   # spraying, then the handshake
RETRY_START = 30.0              # seconds after a failed attempt before the next; doubles
RETRY_MAX = 960.0
MAX_HARD = 16                   # hard attempts at once (each holds SOCKETS sockets): the
                                # easy sides spray on their own clocks, so a pair queued
                                # behind others misses them (and then backs off out of step)
MAX_EASY = 4                    # easy attempts at once
HIT_PROBE_INTERVAL = 1.0        # seconds between handshakes through a hit, until it works
RELEASE_AFTER = 60.0            # seconds a found path may go unused (or silent) before it closes


def nat_kind(hard_nat: bool | None) -> str | None:
    """The TXT value for netcheck's hard-NAT fact: 'hard', 'easy' or None (unknown)."""
    return None if hard_nat is None else (HARD if hard_nat else EASY)


def role(own: str | None, peer: str | None) -> str | None:
    """Our role towards a peer from both NAT kinds: HARD (we open the sockets), EASY (we
    spray probes) or None (no attempt: both alike, or one unknown)."""
    if own == HARD and peer == EASY:
        return HARD
    if own == EASY and peer == HARD:
        return EASY
    return None


def hit_probability(sockets: int, probes: int, ports: int = PORT_RANGE[1] - PORT_RANGE[0] + 1) -> float:
    """The chance that `probes` distinct random ports hit one of `sockets` random ports
    among `ports` (hypergeometric: 1 - C(ports - sockets, probes) / C(ports, probes))."""
    if probes <= 0 or sockets <= 0:
        return 0.0
    if probes > ports - sockets:
        return 1.0
    miss = sum(math.log1p(-sockets / (ports - i)) for i in range(probes))
    return 1.0 - math.exp(miss)


def draw_ports(rng: random.Random, count: int = PROBES) -> list[int]:
    """`count` distinct random ports of PORT_RANGE, in random order."""
    low, high = PORT_RANGE
    return rng.sample(range(low, high + 1), min(count, high - low + 1))


@dataclass
class Pair:
    """What the daemon knows of one peer: its NAT kind (directory), its reflexive endpoint
    (directory) and since when it has had no direct path (None: it has one)."""

    peer_nat: str | None
    peer_endpoint: Endpoint | None
    stuck_since: float | None


@dataclass
class Attempt:
    """One attempt with one peer. HARD: open `sockets` sockets towards `target` (the
    easy side's reflexive endpoint). EASY: send `ports` probes to (target IP, port) from
    the engine's socket, from `spray_at` on, PROBE_RATE a second."""

    key: bytes
    role: str
    target: Endpoint
    started: float
    ends: float
    sockets: int = 0
    ports: list[int] = field(default_factory=list)
    spray_at: float = 0.0
    last_hit_probe: float = -math.inf


@dataclass
class Step:
    """What one round decided: attempts to start, attempts to end (their spare sockets
    closed, spraying stopped; a found path is kept), found paths to close, handshake
    probes due through found paths (key -> [proxy endpoint]), and when to look again."""

    start: list[Attempt] = field(default_factory=list)
    end: list[bytes] = field(default_factory=list)
    release: list[bytes] = field(default_factory=list)
    probes: dict[bytes, list[Endpoint]] = field(default_factory=dict)
    next_deadline: float | None = None


@dataclass
class _PeerState:
    attempt: Attempt | None = None
    retry: float = RETRY_START
    not_before: float = 0.0
    unused_since: float | None = None
    attempts: int = 0
    successes: int = 0
    last_success_after: float | None = None   # seconds from an attempt's start to direct


def pairs_from(directory: Mapping[bytes, MemberRecord], paths: PathManager, now: float) -> dict[bytes, Pair]:
    """The planner's view of each directory peer: its ``nat`` TXT value, its reflexive
    endpoint and since when the path manager has probed it without a direct answer."""
    out = {}
    for key, record in directory.items():
        path = paths.peers.get(key)
        stuck = None
        if path is not None and not paths.direct_working(key, now):
            stuck = path.probing_since
        out[key] = Pair(record.extra.get(NAT_TXT_KEY), record.endpoint, stuck)
    return out


class BirthdayPlanner:
    """Decides the birthday attempts of one member. `own_nat`: its NAT kind (nat_kind of
    netcheck's fact; None: unknown, never attempts). `rng` draws the probed ports."""

    def __init__(self, own_nat: str | None, rng: random.Random | None = None):
        self.own_nat = own_nat
        self.rng = rng or random.SystemRandom()
        self.peers: dict[bytes, _PeerState] = {}

    def attempt(self, key: bytes) -> Attempt | None:
        state = self.peers.get(key)
        return state.attempt if state is not None else None

    def step(self, now: float, pairs: Mapping[bytes, Pair], proxies: Mapping[bytes, Endpoint],
             engine_endpoints: Mapping[bytes, Endpoint | None]) -> Step:
        """One round. `pairs`: every peer (pairs_from); `proxies`: the paths found so far
        (key -> the loopback proxy the sockets offer the engine); `engine_endpoints`: the
        engine's current endpoint per peer. Times in seconds, the clock of `now`."""
        step = Step()
        times: list[float] = []
        for key in [k for k in self.peers if k not in pairs]:
            if self.peers.pop(key).attempt is not None:
                step.end.append(key)
        for key in proxies:
            if key not in pairs:
                step.release.append(key)
        running = {HARD: 0, EASY: 0}
        for state in self.peers.values():
            if state.attempt is not None:
                running[state.attempt.role] += 1
        for key, pair in pairs.items():
            state = self.peers.setdefault(key, _PeerState())
            proxy = proxies.get(key)
            attempt = state.attempt
            if attempt is not None:
                if pair.stuck_since is None:            # direct now: it worked
                    self._finish(state, key, step, success=True)
                    state.last_success_after = now - attempt.started
                elif now >= attempt.ends:
                    self._finish(state, key, step, success=False)
                    if proxy is not None:
                        step.release.append(key)
                    state.not_before = now + state.retry
                    state.retry = min(RETRY_MAX, state.retry * 2)
                    times.append(state.not_before)
                else:
                    times.append(attempt.ends)
                    if attempt.role == EASY and now < attempt.spray_at:
                        times.append(attempt.spray_at)
                    if proxy is not None:               # a hit: handshake through it
                        if now - attempt.last_hit_probe >= HIT_PROBE_INTERVAL:
                            attempt.last_hit_probe = now
                            step.probes[key] = [proxy]
                        times.append(attempt.last_hit_probe + HIT_PROBE_INTERVAL)
                    continue
                running[attempt.role] -= 1
            if proxy is not None and state.attempt is None and key not in step.release:
                if engine_endpoints.get(key) == proxy and pair.stuck_since is None:
                    state.unused_since = None   # in use and working
                else:
                    state.unused_since = state.unused_since if state.unused_since is not None else now
                    if now - state.unused_since >= RELEASE_AFTER:
                        step.release.append(key)
                        state.unused_since = None
                    else:
                        times.append(state.unused_since + RELEASE_AFTER)
            if state.attempt is not None or pair.stuck_since is None:
                continue
            kind = role(self.own_nat, pair.peer_nat)
            if kind is None or pair.peer_endpoint is None or proxy is not None:
                continue
            due = max(pair.stuck_since + START_AFTER, state.not_before)
            if now < due:
                times.append(due)
                continue
            if running[kind] >= (MAX_HARD if kind == HARD else MAX_EASY):
                continue                    # looked at again when a running attempt ends
            running[kind] += 1
            state.attempt = self._new_attempt(key, kind, pair.peer_endpoint, now)
            state.attempts += 1
            step.start.append(state.attempt)
            times.append(state.attempt.ends)
        step.next_deadline = max(min(times), now) if times else None
        return step

    def _new_attempt(self, key: bytes, kind: str, peer_endpoint: Endpoint, now: float) -> Attempt:
        if kind == HARD:
            return Attempt(key, HARD, peer_endpoint, now, now + HARD_WINDOW, sockets=SOCKETS)
        return Attempt(key, EASY, (peer_endpoint[0], 0), now, now + EASY_WINDOW,
                       ports=draw_ports(self.rng), spray_at=now + EASY_DELAY)

    @staticmethod
    def _finish(state: _PeerState, key: bytes, step: Step, success: bool) -> None:
        state.attempt = None
        step.end.append(key)
        if success:
            state.successes += 1
            state.retry = RETRY_START
            state.not_before = 0.0


def add_probes(peers: list, probes: Mapping[bytes, list[Endpoint]]) -> None:
    """Put the found paths' handshake probes into an update's PeerUpdates
    (meshwg.device.api). A peer's probe round this update already holds is replaced: one
    initiation also sent through the relay (discovery.traversal.paths) could be answered
    there first, and the copy through the found path would then be a replay to the peer;
    a second round in the same update would be rate-limited by the engine. A peer being
    moved (an endpoint set) is left alone this time (the planner asks again)."""
    left = dict(probes)
    for update in peers:
        if update.public_key not in left or update.remove:
            continue
        if update.endpoint is not None:
            del left[update.public_key]
        elif update.probe_endpoints:
            update.probe_endpoints = list(left.pop(update.public_key))
    for key, endpoints in left.items():
        peers.append(PeerUpdate(public_key=key, update_only=True, probe_endpoints=list(endpoints)))
