"""A member's relays: one RelayClient (discovery.relay.client) per relay it knows, and
the choice of relay per peer (discovery.relay.choice, which holds the rules).

The member hands it the client of the rendezvous it enrolled at (add_fixed) and the other
relays (set_relays: the relays of the other rendezvous it keeps tunnels to, issue 10, and
those the directory offers; clients started and stopped to match, so a rendezvous dropped
or forgotten takes its relay out of the pool); each client keeps a proxy
socket per peer (set_peers). plan() answers, from the engine's current endpoints, which
proxy each peer should use, the proxies of its other relays (an endpoint on one of those
is relayed too, and moved at once), the relay names for status, and when to look again;
while pairs are relayed it asks every relay for a bind every PROBE_INTERVAL seconds, so a
relay that stops answering is left within PROBE_INTERVAL + DEAD_AFTER seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint, format_endpoint

from discovery.relay.choice import Relay, RelayHealth, choose, usable_relays
from discovery.relay.client import RelayClient

log = logging.getLogger("meshwg.relay")


@dataclass
class RelayPlan:
    """Per peer key: the proxy endpoint of its chosen relay, the proxies of its other
    relays, the chosen relay's name; when to plan again (wall-clock seconds, or None)."""

    endpoints: dict[bytes, Endpoint] = field(default_factory=dict)
    others: dict[bytes, list[Endpoint]] = field(default_factory=dict)
    names: dict[bytes, str] = field(default_factory=dict)
    next_deadline: float | None = None


class RelayPool:
    """The relay clients of the member with `private_key` whose engine listens on
    `engine_port`; `on_bound()` is called (from a client's thread) when a relay first
    answers."""

    def __init__(self, private_key: bytes, engine_port: int,
                 on_bound: Callable[[], None] | None = None):
        self.private_key = private_key
        self.own_key = crypto.public_key(private_key)
        self.engine_port = engine_port
        self.on_bound = on_bound
        self.health = RelayHealth()
        self.relays: dict[bytes, Relay] = {}
        self.clients: dict[bytes, RelayClient] = {}
        self._fixed: dict[bytes, tuple[Relay, RelayClient]] = {}
        self._peers: list[bytes] = []

    # ------------------------------------------------------------------ relays
    def add_fixed(self, relay: Relay, client: RelayClient) -> None:
        """A relay whose client the caller owns (the rendezvous's): never stopped here."""
        self._fixed[relay.public_key] = (relay, client)
        self.relays[relay.public_key] = relay
        self.clients[relay.public_key] = client

    def set_relays(self, offered: Iterable[Relay]) -> None:
        """The relays known now besides the fixed ones (other rendezvous's, members'):
        clients started, moved or stopped."""
        wanted = {r.public_key: r for r in usable_relays(
            [relay for relay, _ in self._fixed.values()] + list(offered))}
        for key in [k for k in self.relays if k not in wanted or wanted[k] != self.relays[k]]:
            if key in self._fixed and key in wanted:
                continue
            self.relays.pop(key)
            client = self.clients.pop(key, None)
            if client is not None and key not in self._fixed:
                log.info("relay %s: no longer used", client.name)
                client.stop()
        for key, relay in wanted.items():
            if key not in self.clients:
                client = RelayClient(self.private_key, relay.public_key, relay.endpoint,
                                     self.engine_port, name=relay.name, on_bound=self.on_bound,
                                     tls_target=relay.tls)
                client.set_peers(self._peers)
                self.clients[key] = client.start()
                self.relays[key] = relay
                log.info("relay %s at %s: binding", relay.name, relay.endpoint)
        self.health.forget_others(self.clients)

    def set_peers(self, keys: Iterable[bytes]) -> None:
        self._peers = list(keys)
        for client in self.clients.values():
            client.set_peers(self._peers)

    # ------------------------------------------------------------------ choice
    def _acked(self) -> dict[bytes, float | None]:
        return {key: client.bound_at if client.bound else None for key, client in self.clients.items()}

    def plan(self, engine: Mapping[bytes, Endpoint | None], now: float) -> RelayPlan:
        """`engine`: each peer's current endpoint; `now`: wall-clock seconds (the member's
        clock, for next_deadline)."""
        mono = time.monotonic()
        acked = self._acked()
        keys = list(self.clients)
        proxies = {key: client.endpoints() for key, client in self.clients.items()}
        by_proxy = {endpoint: key for key, eps in proxies.items() for endpoint in eps.values()}
        plan = RelayPlan()
        relayed = False
        alive = {key for key in keys if self.health.alive(key, acked[key], mono)}
        for peer in self._peers:
            current = by_proxy.get(engine.get(peer)) if engine.get(peer) else None
            relayed = relayed or current is not None
            relay = choose(self.own_key, peer, [self.relays[k] for k in keys], alive, current)
            if relay is None:
                continue
            endpoint = proxies[relay.public_key].get(peer)
            if endpoint is None:
                continue
            plan.endpoints[peer] = endpoint
            plan.names[peer] = relay.name
            plan.others[peer] = [eps[peer] for key, eps in proxies.items()
                                 if key != relay.public_key and peer in eps]
        if relayed:
            for key in self.health.probes_due(keys, acked, mono):
                self.health.asked(key, mono)
                self.clients[key].rebind()
            deadline = self.health.next_deadline(keys, self._acked(), mono)
            if deadline is not None:
                plan.next_deadline = now + (deadline - mono)
        return plan

    def status(self) -> list[dict]:
        """One row per relay for `meshwg status`: name, endpoint, whether it is a
        rendezvous's, bound (a bind was acknowledged), alive (RelayHealth), transport."""
        mono, acked = time.monotonic(), self._acked()
        return [{"name": self.relays[key].name, "endpoint": format_endpoint(self.relays[key].endpoint),
                 "rendezvous": self.relays[key].rendezvous, "bound": client.bound,
                 "alive": self.health.alive(key, acked[key], mono), "transport": client.transport}
                for key, client in self.clients.items()]

    # ------------------------------------------------------------------ counters, lifecycle
    def peer_counters(self) -> dict[bytes, tuple[int, int]]:
        """Relayed (rx_bytes, tx_bytes) per peer key, over every relay."""
        out: dict[bytes, tuple[int, int]] = {}
        for client in self.clients.values():
            for key, (rx, tx) in client.peer_counters().items():
                old = out.get(key, (0, 0))
                out[key] = (old[0] + rx, old[1] + tx)
        return out

    def rebind(self, key: bytes | None = None) -> None:
        """Bind again now: everywhere (our addresses changed), or at the relay `key` only
        (a new session with that rendezvous: it may have restarted and lost our binding;
        from any thread)."""
        for relay_key, client in list(self.clients.items()):
            if key is None or relay_key == key:
                client.rebind()

    def stop(self) -> None:
        """Stop the clients this pool started (not the fixed ones)."""
        for key, client in list(self.clients.items()):
            if key not in self._fixed:
                client.stop()
        self.clients = {k: c for k, c in self.clients.items() if k in self._fixed}
