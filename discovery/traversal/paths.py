"""Choosing and keeping a direct path to each peer. I/O-free: the member daemon feeds it
what it observes (candidates, the engine's endpoint, handshake time, rx bytes) with the
current time, and it answers which candidates to probe now and how to describe the path.

Rules (from what users of wgsd, Tailscale and Nebula asked for):
- Candidates come in tiers: LAN (mDNS, or a host candidate inside one of our own LAN
  subnets), then the reflexive address the rendezvous observed, then other host
  candidates. Probing is a handshake initiation sent to a candidate without changing the
  endpoint, so a candidate never replaces a working endpoint before it authenticated.
- A peer without a working path is probed on all candidates, LAN tier first, with
  exponential backoff (1 s doubling to 30 s): nothing floods.
- A working path over the internet is upgraded to a LAN candidate when one appears
  (probed at most every UPGRADE_INTERVAL).
- A path is working when a handshake completed within REJECT_AFTER_TIME and bytes arrived
  within `silence_timeout` (peers keep each other alive with persistent keepalives). A path
  that goes silent is re-probed at once; a peer whose reflexive address changes while we
  use the old one is re-probed at once.
- A peer with a relay (set_relay: the local proxy endpoint of discovery.relay.client)
  moves onto it when no direct path works: no candidates, or probing unanswered for
  RELAY_AFTER seconds, also after a direct path went silent (relays_due). Every probe round
  of a pair without a working path also goes through its relay (the same initiation):
  the first answer sets the endpoint (roaming), so a pair has its first packet over the
  relay as soon as over a direct path, without waiting RELAY_AFTER. Direct probing goes on
  with backoff; an authenticated answer moves the engine's endpoint back (roaming).
- Hysteresis (issue 9 case 3): a working path is kept when a candidate answers. Probes
  of a working pair are held (the engine's endpoint stays; the answer comes back as
  ProbeAnswered), except those of a relayed pair that did not fall back lately (a direct
  answer moves it at once, as above): an answering candidate that ranks
  better (lan > direct > relay; same rank: under SAME_RANK_RTT_FACTOR of the current RTT)
  goes on trial, probed alone every TRIAL_INTERVAL, and is adopted once it answered
  TRIAL_ANSWERS times over at least TRIAL_SPAN seconds (unanswered for TRIAL_TIMEOUT: dropped).
  Only a pair without a working path lets the first answer move it (roaming).
- Fast fallback: the engine reports data sent and nothing authenticated back for ~1 s
  (PathUnanswered, meshwg.core.timers unanswered_after): the path is bad at once, the pair
  moves back to the direct path a trial replaced within PREVIOUS_FOR, else onto its relay
  (or, without one, probes every other candidate with the first answer winning), and the
  bad endpoint is probed in the background every FAST_PROBE_MAX at most
  for FAST_PROBE_FOR, coming back only by trial. An idle pair sends no data, so it is never
  judged. A fallback whose endpoint answers within FALSE_ALARM_WINDOW was a one-way flow,
  not a failure: the pair then needs twice the silence before the next one (up to GRACE_MAX).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from meshwg.util.endpoint import format_endpoint

REJECT_AFTER_TIME = 180.0
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
UPGRADE_INTERVAL = 10.0
GIVE_UP_REPORT_AFTER = 10.0   # after this long without an answer, status explains why
RELAY_AFTER = 1.0             # seconds of unanswered probing before a pair moves to its relay
OBSERVE_FRACTION = 2.5        # a working path is looked at every silence_timeout / 2.5
TRIAL_INTERVAL = 1.0          # a candidate on trial is probed this often
TRIAL_ANSWERS = 3             # answers it needs ...
TRIAL_SPAN = 2.0              # ... spread over at least this many seconds to be adopted
TRIAL_TIMEOUT = 3.0           # a trial unanswered this long is dropped
SAME_RANK_RTT_FACTOR = 0.5    # a same-rank candidate must answer in half the current RTT
FAST_PROBE_MAX = 2.0          # after a fallback, the backoff stays under this ...
FAST_PROBE_FOR = 120.0        # ... for this long
FALSE_ALARM_WINDOW = 2.0      # a left endpoint answering this soon was not broken
GRACE_START = 1.0             # seconds of unanswered data that make a path bad
GRACE_MAX = 16.0              # a peer's KEEPALIVE_TIMEOUT (10 s) answers one-way flows
MOVE_PIN = 2.0                # s a moved endpoint is kept against roaming (the peer's packets
                              # still on the old path; meshwg.core move_endpoint)
PREVIOUS_FOR = 60.0           # a fallback goes back to the direct path a trial left this recently
RTT_KEPT = 16                 # RTTs remembered per peer (the latest endpoints)

Endpoint = tuple[str, int]


@dataclass
class Candidates:
    lan: list[Endpoint] = field(default_factory=list)
    reflexive: Endpoint | None = None
    host: list[Endpoint] = field(default_factory=list)

    def all(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        for ep in self.lan + ([self.reflexive] if self.reflexive else []) + self.host:
            if ep not in out:
                out.append(ep)
        return out


@dataclass
class PeerPath:
    """What the path manager tracks for one peer."""
    candidates: Candidates = field(default_factory=Candidates)
    endpoint: Endpoint | None = None
    last_handshake: float | None = None    # wall-clock seconds, as `wg` reports it
    rx_bytes: int = 0
    last_rx_change: float | None = None
    next_probe: float = 0.0
    backoff: float = BACKOFF_START
    probing_since: float | None = None
    probes_sent: int = 0
    last_upgrade_probe: float = -1e9
    lan_tier_tried: bool = False
    was_working: bool = False
    suspect: bool = False        # the path may have broken (peer's mapping moved, we moved)
    relay: Endpoint | None = None   # the local proxy endpoint of a relay for this peer
    relay_name: str = ""
    relay_others: tuple[Endpoint, ...] = ()   # proxies of the peer's other relays
    rtt: dict[Endpoint, float] = field(default_factory=dict)   # latest probe RTT (s)
    round_held: bool = False     # the latest probe round does not move the endpoint
    trial: Endpoint | None = None
    trial_answers: list[float] = field(default_factory=list)
    trial_next: float = 0.0
    move_to: Endpoint | None = None   # adopted: set the engine's endpoint at the next plan
    bad: Endpoint | None = None       # reported unanswered while it is the endpoint
    bad_rx: int | None = None         # rx_bytes first observed after that
    left: Endpoint | None = None      # the endpoint the last fallback left ...
    left_at: float | None = None      # ... and when
    fast_probe_until: float = -1e9
    previous: Endpoint | None = None  # the direct endpoint a trial's move left ...
    previous_at: float = -1e9         # ... and when
    grace: float = GRACE_START


def in_networks(host: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in networks if net.version == ip.version)


class PathManager:
    def __init__(self, local_networks: list | None = None, silence_timeout: float = 25.0):
        self.local_networks = list(local_networks or [])   # our LAN subnets
        self.silence_timeout = silence_timeout
        self.peers: dict[bytes, PeerPath] = {}
        self.own_families: set[int] | None = None     # set_own_facts (netcheck)
        self.own_hard_nat: bool | None = None
        self._pinned: set[bytes] = set()        # moves_due's deliberate moves (move_pin)

    def set_local_networks(self, networks: list) -> None:
        self.local_networks = list(networks)

    def forget(self, key: bytes) -> None:
        self.peers.pop(key, None)

    def update_candidates(self, key: bytes, candidates: Candidates, now: float) -> None:
        path = self.peers.setdefault(key, PeerPath())
        old = path.candidates
        # host candidates inside one of our own subnets are LAN candidates too
        lan = list(candidates.lan)
        others = []
        for ep in candidates.host:
            (lan if in_networks(ep[0], self.local_networks) else others).append(ep)
        candidates = Candidates(lan=_unique(lan), reflexive=candidates.reflexive, host=_unique(others))
        reflexive_moved = (old.reflexive is not None and candidates.reflexive != old.reflexive
                           and path.endpoint == old.reflexive)
        new_lan = any(ep not in old.lan for ep in candidates.lan)
        path.candidates = candidates
        if reflexive_moved:
            self._probe_soon(path, now, suspect=True)
        elif new_lan and not self._on_lan(path):
            self._probe_soon(path, now)

    def observe(self, key: bytes, endpoint: Endpoint | None, last_handshake: float | None,
                rx_bytes: int, now: float) -> None:
        """What the engine reports for the peer (from a `get`)."""
        path = self.peers.setdefault(key, PeerPath())
        if path.bad is not None:
            if endpoint != path.bad or (path.bad_rx is not None and rx_bytes != path.bad_rx):
                path.bad = None    # moved away, or the bad endpoint delivered again
            elif path.bad_rx is None:
                path.bad_rx = rx_bytes     # the count when it was reported bad
        if rx_bytes != path.rx_bytes:
            path.rx_bytes = rx_bytes
            path.last_rx_change = now
        path.endpoint = endpoint
        path.last_handshake = last_handshake or None
        working = self.direct_working(key, now)
        if working:
            path.backoff = BACKOFF_START
            path.probing_since = None
            path.probes_sent = 0
        elif path.was_working:
            self._probe_soon(path, now)     # went silent: look for a path again at once
        path.was_working = working

    def is_working(self, key: bytes, now: float) -> bool:
        path = self.peers.get(key)
        if path is None or path.endpoint is None or path.last_handshake is None:
            return False
        if path.endpoint == path.bad:
            return False
        if now - path.last_handshake > REJECT_AFTER_TIME:
            return False
        if _on_relay(path):
            # a relayed pair is kept while its session is fresh (the initiator rekeys every
            # 120 s, which needs an answer through the relay): there is no fallback below
            # the relay (its keepalives flow both ways, meshwg/core/receive.py)
            return True
        return path.last_rx_change is not None and now - path.last_rx_change <= self.silence_timeout

    def direct_working(self, key: bytes, now: float) -> bool:
        """Working, and not through the relay."""
        path = self.peers.get(key)
        return self.is_working(key, now) and not _on_relay(path)

    def set_relay(self, key: bytes, endpoint: Endpoint | None, name: str = "rendezvous",
                  others: tuple[Endpoint, ...] | list[Endpoint] = ()) -> None:
        """The chosen relay's local proxy endpoint for this peer (None: no relay), the
        relay's name for status, and the proxies of the peer's other relays
        (discovery.relay.pool): a path on one of those is relayed too, and moves to the
        chosen one at once."""
        path = self.peers.setdefault(key, PeerPath())
        path.relay, path.relay_name, path.relay_others = endpoint, name, tuple(others)

    def _relay_wanted(self, path: PeerPath, now: float) -> bool:
        """A relay is known and not in use, and no direct path works: none to try, or
        probing has gone RELAY_AFTER unanswered."""
        if path.relay is None or path.endpoint == path.relay:
            return False
        if _on_relay(path) or (path.bad is not None and path.endpoint == path.bad):   # (another relay) stopped answering
            return True
        if not path.candidates.all():
            return True
        return path.probing_since is not None and now - path.probing_since >= RELAY_AFTER

    def relays_due(self, now: float) -> dict[bytes, Endpoint]:
        """Peers to move onto their relay now (the engine's endpoint set to the proxy).
        Direct probing goes on; an authenticated answer moves the endpoint back (roaming)."""
        return {key: path.relay for key, path in self.peers.items()
                if not self.direct_working(key, now) and self._relay_wanted(path, now)}

    def path_unanswered(self, key: bytes, endpoint: Endpoint | None, silent_for: float,
                        now: float) -> None:
        """The engine sent data to `endpoint` and heard nothing for `silent_for` s
        (PathUnanswered): unless the pair is relayed (nothing below it) or the silence is
        under the pair's grace, the endpoint is bad now; moves_due moves the pair onto its
        relay, and every candidate is probed at once."""
        path = self.peers.get(key)
        if path is None or endpoint is None or endpoint != path.endpoint or _on_relay(path):
            return
        if silent_for < path.grace:
            return
        path.bad, path.bad_rx = endpoint, None
        path.left, path.left_at = endpoint, now
        if path.previous is not None and path.previous != endpoint \
                and now - path.previous_at <= PREVIOUS_FOR:
            path.move_to = path.previous    # back to the direct path a trial replaced
        path.previous = None
        path.fast_probe_until = now + FAST_PROBE_FOR
        path.trial = None
        self._probe_soon(path, now)

    def probe_answered(self, key: bytes, endpoint: Endpoint, rtt: float, now: float) -> None:
        """A probe was answered from `endpoint` after `rtt` s (ProbeAnswered). The RTT is
        kept; while the pair works (held probes) a better endpoint goes on trial and is
        adopted once it answered TRIAL_ANSWERS times over TRIAL_SPAN (moves_due)."""
        path = self.peers.get(key)
        if path is None:
            return
        path.rtt.pop(endpoint, None)
        path.rtt[endpoint] = rtt
        while len(path.rtt) > RTT_KEPT:
            del path.rtt[next(iter(path.rtt))]
        if endpoint == path.left and path.left_at is not None:
            if now - path.left_at <= FALSE_ALARM_WINDOW:      # it was not broken
                path.grace = min(GRACE_MAX, path.grace * 2)
            path.left_at = None
        if endpoint == path.endpoint:
            if path.bad == endpoint:
                path.bad = None
            return
        if not path.round_held:
            return          # the answer moved the engine's endpoint (roaming)
        if not self._better(path, endpoint):
            if path.trial == endpoint:
                path.trial = None
            return
        if path.trial != endpoint:
            path.trial, path.trial_answers = endpoint, []
        path.trial_answers.append(now)
        path.trial_next = now + TRIAL_INTERVAL
        if len(path.trial_answers) >= TRIAL_ANSWERS and now - path.trial_answers[0] >= TRIAL_SPAN:
            path.move_to, path.trial = endpoint, None

    def _rank(self, path: PeerPath, endpoint: Endpoint | None) -> int:
        """relay 0 < direct 1 < lan 2 (describe's labels)."""
        if endpoint is None:
            return -1
        if endpoint == path.relay or endpoint in path.relay_others:
            return 0
        return 2 if self._label(endpoint, path.candidates)[0] == "lan" else 1

    def _better(self, path: PeerPath, endpoint: Endpoint) -> bool:
        """`endpoint` ranks above the current one, or the same with clearly lower RTT."""
        mine, theirs = self._rank(path, path.endpoint), self._rank(path, endpoint)
        if theirs != mine:
            return theirs > mine
        current, new = path.rtt.get(path.endpoint), path.rtt.get(endpoint)
        return current is not None and new is not None and new < SAME_RANK_RTT_FACTOR * current

    def moves_due(self, now: float) -> dict[bytes, Endpoint]:
        """Peers whose engine endpoint is to be set now: onto the relay (relays_due, also
        after a fallback) or to an endpoint adopted after its trial."""
        moves = self.relays_due(now)
        self._pinned = {key for key in moves if self.peers[key].bad is not None}   # fallbacks
        for key, path in self.peers.items():
            if path.move_to is not None:
                self._pinned.add(key)
                if path.endpoint is not None and not _on_relay(path) and path.endpoint != path.bad:
                    path.previous, path.previous_at = path.endpoint, now   # a trial's move
                moves[key], path.move_to = path.move_to, None
        return moves

    def move_pin(self, key: bytes) -> float:
        """Seconds the move moves_due gave for this peer is kept against roaming: MOVE_PIN
        for a fallback or a trial's adoption (the pair worked: packets still on the old
        path must not undo it), 0 for a pair finding its first path."""
        return MOVE_PIN if key in self._pinned else 0.0

    def probe_hold(self, key: bytes) -> bool:
        """The probes probes_due gave for this peer must not move its endpoint."""
        path = self.peers.get(key)
        return path is not None and path.round_held

    def _on_lan(self, path: PeerPath) -> bool:
        return path.endpoint is not None and path.endpoint in path.candidates.lan

    def _probe_soon(self, path: PeerPath, now: float, suspect: bool = False) -> None:
        """Probe at the next round. `suspect`: even if the path still looks alive (its NAT
        mapping or ours moved, and waiting for silence would cost `silence_timeout`)."""
        path.next_probe = now
        path.backoff = BACKOFF_START
        path.lan_tier_tried = False
        path.suspect = path.suspect or suspect

    def path_may_have_moved(self, key: bytes, now: float) -> None:
        """Our own addresses changed: re-probe this peer now."""
        path = self.peers.get(key)
        if path is not None:
            self._probe_soon(path, now, suspect=True)

    def probes_due(self, now: float) -> dict[bytes, list[Endpoint]]:
        """Candidates to probe now, per peer."""
        due: dict[bytes, list[Endpoint]] = {}
        for key, path in self.peers.items():
            cands = path.candidates
            working = self.is_working(key, now)
            # a relayed pair's direct answer moves it at once (roaming), unless the pair
            # fell back from that direct path lately: then only a trial brings it back
            path.round_held = working and not path.suspect and (
                not _on_relay(path) or now < path.fast_probe_until)
            if path.trial is not None and (not working or now - path.trial_answers[-1] > TRIAL_TIMEOUT):
                path.trial = None
            if path.trial is not None and not path.suspect:
                if now >= path.trial_next:     # the candidate on trial, alone
                    path.trial_next = now + TRIAL_INTERVAL
                    due[key] = [path.trial]
                continue
            if path.suspect and now >= path.next_probe and cands.all():
                path.suspect = False            # one full round to every candidate, at once
                path.next_probe = now + BACKOFF_START
                due[key] = cands.all()
                path.probes_sent += len(due[key])
                continue
            if self.direct_working(key, now):
                if cands.lan and not self._on_lan(path) and now - path.last_upgrade_probe >= UPGRADE_INTERVAL:
                    path.last_upgrade_probe = now
                    due[key] = list(cands.lan)
                continue
            if now < path.next_probe:
                continue
            everything = cands.all()
            if not everything:
                continue
            if path.probing_since is None:
                path.probing_since = now
            if cands.lan and not path.lan_tier_tried:
                targets = list(cands.lan)      # LAN first; the rest on the next round
                path.lan_tier_tried = True
                path.next_probe = now + BACKOFF_START
            else:
                targets = everything
                path.next_probe = now + path.backoff
                cap = FAST_PROBE_MAX if now < path.fast_probe_until else BACKOFF_MAX
                path.backoff = min(cap, path.backoff * 2)
            if path.bad is not None and path.endpoint == path.bad:
                # the first answer wins: not the bad path (a relaying stranger answers
                # handshakes and drops data)
                targets = [ep for ep in targets if ep != path.bad] or targets
            path.probes_sent += len(targets)
            if path.relay is not None and not _on_relay(path):
                targets.append(path.relay)   # the same initiation through the relay too
            due[key] = targets
        return due

    def next_deadline(self, now: float) -> float | None:
        """The earliest time (seconds, the clock of `now`) at which probes_due, is_working
        or describe may answer differently without new candidates or events: a probe round
        or LAN upgrade falls due, a working path must be looked at again (observe() every
        silence_timeout / OBSERVE_FRACTION, so that silence is noticed within that much
        of `silence_timeout`), a handshake ages out, probing has lasted long enough to
        be reported as failing. None when nothing is scheduled."""
        times: list[float] = []
        for key, path in self.peers.items():
            cands = path.candidates
            if path.move_to is not None:
                times.append(now)
            if path.trial is not None:
                times.append(path.trial_next)
            if path.relay is not None and not _on_relay(path) and path.probing_since is not None:
                times.append(path.probing_since + RELAY_AFTER)
            if self.direct_working(key, now):
                times.append(min(now + self.silence_timeout / OBSERVE_FRACTION,
                                 path.last_handshake + REJECT_AFTER_TIME))
                if path.suspect and cands.all():
                    times.append(path.next_probe)
                elif cands.lan and not self._on_lan(path):
                    times.append(path.last_upgrade_probe + UPGRADE_INTERVAL)
                continue
            if path.endpoint is not None and path.last_handshake is not None \
                    and now - path.last_handshake <= REJECT_AFTER_TIME:
                times.append(now + self.silence_timeout / OBSERVE_FRACTION)   # may come back
            if not cands.all():
                continue
            times.append(path.next_probe)
            if path.probing_since is not None and now - path.probing_since < GIVE_UP_REPORT_AFTER:
                times.append(path.probing_since + GIVE_UP_REPORT_AFTER)
        return max(min(times), now) if times else None

    def describe(self, key: bytes, now: float) -> tuple[str, str]:
        """(path, reason): path is 'lan' (endpoint in one of our subnets), 'direct' (a public
        or reflexive address), 'direct (private address)' (private, not our LAN) or 'none'.
        The reason names no running
        duration, so it changes only when the path's state does (the member writes its
        status file on change)."""
        path = self.peers.get(key)
        if path is None:
            return "none", "unknown peer"
        if self.is_working(key, now):
            if _on_relay(path):
                return "relay", f"relay via {path.relay_name}: {self._why_not_direct(path, now)}"
            return self._label(path.endpoint, path.candidates)
        if not path.candidates.all():
            return "none", "no candidate endpoints known yet (peer not in the directory or not on the LAN)"
        if path.endpoint is not None and path.last_handshake is not None:
            if now - path.last_handshake <= REJECT_AFTER_TIME:
                return "none", (f"path to {format_endpoint(path.endpoint)} went silent; probing "
                                f"{len(path.candidates.all())} candidates")
        n = len(path.candidates.all())
        if path.probing_since is not None and now - path.probing_since >= GIVE_UP_REPORT_AFTER:
            return "none", (f"no direct path: {self._why_no_answer(path)}; no relay available "
                            f"yet; retrying every {int(path.backoff)} s")
        return "none", f"no direct path yet: probing {n} candidate(s)"

    def set_own_facts(self, families: set[int] | None = None, hard_nat: bool | None = None) -> None:
        """What this node knows of its own connectivity (from `meshwg netcheck`): the IP
        versions it can send on (None: unknown) and whether its NAT maps per destination
        (None: unknown). Only describe()'s reasons use them."""
        self.own_families = set(families) if families is not None else None
        self.own_hard_nat = hard_nat

    def _label(self, endpoint: Endpoint | None, candidates: Candidates | None = None
               ) -> tuple[str, str]:
        """(path, reason) for a working path, by what its endpoint is: 'lan' for an
        endpoint on one of our subnets that is a private address or one the peer announced
        on the LAN (mDNS); a public address is 'direct' even when it shares one of our
        subnets (two servers on one public subnet are not a LAN)."""
        host = endpoint[0] if endpoint else ""
        public = not in_networks(host, PRIVATE_NETWORKS)
        announced = candidates is not None and endpoint in candidates.lan
        if endpoint is not None and public and not announced:
            return "direct", "endpoint at the peer's public address"
        if in_networks(host, self.local_networks):
            return "lan", "endpoint on one of our LAN subnets"
        if in_networks(host, PRIVATE_NETWORKS):
            return "direct (private address)", (f"endpoint {host} is a private address not on our "
                                                f"LAN subnets (VPN, carrier NAT or routed LAN)")
        return "direct", "endpoint at the peer's public or reflexive address"

    def _why_not_direct(self, path: PeerPath, now: float) -> str:
        """Why a relayed pair is not direct (no running durations)."""
        if not path.candidates.all():
            return "no direct candidate endpoints known"
        if path.probing_since is not None and now - path.probing_since >= GIVE_UP_REPORT_AFTER:
            return f"no direct path: {self._why_no_answer(path)}; still probing"
        return f"direct candidates not answered yet (probing {len(path.candidates.all())})"

    def _why_no_answer(self, path: PeerPath) -> str:
        """What was found when no candidate answered, most specific first."""
        cands = path.candidates.all()
        families = {_family(ep[0]) for ep in cands} - {None}
        if self.own_families is not None and families and not families & self.own_families:
            mine = "/".join(f"IPv{v}" for v in sorted(self.own_families)) or "none"
            theirs = "/".join(f"IPv{v}" for v in sorted(families))
            return f"no common address family (we have {mine}, the peer's candidates are {theirs})"
        text = f"{len(cands)} candidate(s) did not answer in over {int(GIVE_UP_REPORT_AFTER)} s"
        if self.own_hard_nat:
            text += " (our own NAT maps per destination, as netcheck found: hole punching fails)"
        return text


PRIVATE_NETWORKS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",                                   # RFC 6598 carrier NAT
    "169.254.0.0/16", "fc00::/7", "fe80::/10")]       # link-local, RFC 4193 ULA


def _on_relay(path: PeerPath | None) -> bool:
    """The engine's endpoint is one of the peer's relay proxies (chosen or other)."""
    return path is not None and path.endpoint is not None and (
        (path.relay is not None and path.endpoint == path.relay) or path.endpoint in path.relay_others)


def _family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _unique(items: list[Endpoint]) -> list[Endpoint]:
    out: list[Endpoint] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
