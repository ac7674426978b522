"""Which rendezvous a member keeps tunnels to and reads the directory from, when its mesh
has several (issue 10). No I/O: the member daemon tells it what answered and what did
not, and asks which to keep and which to read from.

- The known rendezvous are kept in order: the one enrolled at first, then those the join
  token, the enrollment response and later the directory named (at most MAX_KNOWN).
- A member keeps tunnels to KEEP of them: the current one (it reads the directory there)
  and the next one in order that has not failed since it last answered (so a tunnel to a
  second one is already up when the current one dies; a failing one is replaced by the
  next that has not failed).
- Reads go to the current one. When a read fails there, the current one becomes the other
  kept one at once (a failover), and the daemon reads there straight away; a rendezvous
  that failed answers again by a read succeeding there (or its tunnel's handshake).
- Only rendezvous with a mesh address can be kept: a tunnel carries exactly that /32.
- The directory lists the mesh's rendezvous (a zone's, issue 10): :meth:`listed` learns
  the new ones and forgets the ones no longer listed, except the one enrolled at (its
  relay and netcheck use it) and the current one (the list was just read there, so it
  answers; once a read fails there it is no longer current and the next list that omits
  it forgets it). An empty list (an older or an embedded rendezvous) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from discovery.enroll.tokens import RendezvousRef

KEEP = 2            # rendezvous a member keeps tunnels to
MAX_KNOWN = 9       # the one enrolled at and the 8 others a token may name


@dataclass
class Health:
    """What the member saw of one rendezvous lately."""

    ok_at: float | None = None       # last answer (a directory read, a report, a handshake)
    failed_at: float | None = None   # last failure since then (None: not failing)
    error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failed_at is not None


class RendezvousChoice:
    """The member's rendezvous, in order; `current` is read from, `kept()` get tunnels."""

    def __init__(self, known: list[RendezvousRef]):
        self.known: list[RendezvousRef] = []
        self.health: dict[bytes, Health] = {}
        self.learn(known)
        if not self.known:
            raise ValueError("a member needs at least one rendezvous with a mesh address")
        self.current: bytes = self.known[0].public_key
        self.failovers = 0

    def ref(self, key: bytes) -> RendezvousRef:
        return next(r for r in self.known if r.public_key == key)

    def learn(self, refs: list[RendezvousRef] | tuple[RendezvousRef, ...]) -> bool:
        """Add rendezvous not known yet (with a mesh address; at most MAX_KNOWN); update the
        endpoint of known ones. True when what is kept changed."""
        before = self.kept_keys() if self.known else []
        for ref in refs:
            if not ref.mesh_address:
                continue
            at = next((i for i, r in enumerate(self.known) if r.public_key == ref.public_key), None)
            if at is not None:
                self.known[at] = ref
            elif len(self.known) < MAX_KNOWN:
                self.known.append(ref)
                self.health[ref.public_key] = Health()
        return bool(before) and self.kept_keys() != before

    def listed(self, refs: list[RendezvousRef], pinned: bytes) -> bool:
        """The rendezvous the directory lists now (see the module docstring; `pinned`:
        the one enrolled at). True when `known` changed (the daemon persists it)."""
        if not refs:
            return False
        before = list(self.known)
        wanted = {r.public_key for r in refs if r.mesh_address}
        for ref in before:
            if ref.public_key not in wanted and ref.public_key not in (pinned, self.current):
                self.known.remove(ref)
                del self.health[ref.public_key]
        self.learn(refs)
        return self.known != before

    def kept(self) -> list[RendezvousRef]:
        """The current rendezvous and the next in order (after it, wrapping) not failing;
        a failing one only when no other is left."""
        at = next(i for i, r in enumerate(self.known) if r.public_key == self.current)
        rest = self.known[at + 1:] + self.known[:at]
        rest.sort(key=lambda r: self.health[r.public_key].failing)     # stable: order kept
        return [self.known[at], *rest[:KEEP - 1]]

    def kept_keys(self) -> list[bytes]:
        return [r.public_key for r in self.kept()]

    def answered(self, key: bytes, now: float) -> None:
        health = self.health.get(key)
        if health is not None:
            health.ok_at, health.failed_at, health.error = now, None, None

    def failed(self, key: bytes, error: str, now: float) -> bool:
        """A read at `key` failed. When `key` is the current one, the next kept one becomes
        current; True when that one is not failing too (read there at once; when every
        kept one fails, reads alternate between them at the daemon's retry pace)."""
        health = self.health.get(key)
        if health is None:
            return False
        if not health.failing:
            health.failed_at = now
        health.error = error
        if key != self.current:
            return False
        others = self.kept()[1:]
        if not others:
            return False
        self.current = others[0].public_key
        self.failovers += 1
        return not self.health[self.current].failing

    def status(self) -> list[dict]:
        """One row per known rendezvous for `meshwg status`."""
        kept = self.kept_keys()
        return [{"endpoint": r.endpoint, "mesh_address": r.mesh_address,
                 "current": r.public_key == self.current, "tunnel": r.public_key in kept,
                 "answers": not self.health[r.public_key].failing and
                 self.health[r.public_key].ok_at is not None,
                 "ok_at": self.health[r.public_key].ok_at, "error": self.health[r.public_key].error,
                 "public_key": r.public_key}
                for r in self.known]
