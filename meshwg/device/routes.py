"""The interface's routes, converged to the allowed IPs in the background.

A `wg set` with 100,000 allowed IPs used to hold the control socket while each route was
added with its own netlink call (40 s; removing the peer 35 s). Now a set request only
changes the protocol's table and wakes the route worker, a thread that brings the routes
through the interface to what the table holds: the difference, in batches
(meshwg.netlink.routes.change_routes). A newer change ends the batches of an older one
and the next round starts from what the kernel actually has, so the routes converge to
the latest table however often it changes.

A prefix a route through the interface covers already (its address's route, a wider
allowed IP) is not added, as wg-quick does (`covered`; looked at again each round). A route
the kernel has already (through another device: `exists`) is left alone and
logged once until the allowed IPs change again; other refusals are retried every
RETRY_INTERVAL seconds. Default routes (/0) are not routed here: they need wg-quick's
policy routing (`meshwg up` adds it, meshwg.netlink.routing).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from meshwg.netlink.link import NetconfigError

if TYPE_CHECKING:
    from meshwg.netlink.routes import Network
from meshwg.util.service import Service

log = logging.getLogger("meshwg.device")

RETRY_INTERVAL = 30.0      # seconds before routes the kernel refused are tried again


class RouteWorker:
    """Routes through interface `name` kept equal to wanted() (the networks of every
    peer), by a thread of its own; changed() says the wanted set may differ now."""

    def __init__(self, name: str, wanted: Callable[[], set[Network]]) -> None:
        self.name = name
        self._wanted = wanted
        self.service = Service(f"routes-{name}")
        self.routed: set[Network] = set()       # routes this worker added (worker thread)
        self.exists: set[Network] = set()       # wanted, but the kernel routes them elsewhere
        self.failed: dict[Network, str] = {}    # refused, with the kernel's reason
        self._lock = threading.Lock()
        self._generation = 0                    # changed() calls so far
        self._exists_generation = 0             # the change `exists` was found in

    def start(self) -> None:
        """Converge once now (the routes are in place when start returns, as with
        wg-quick), then keep converging in the background."""
        self.converge()
        self.service.spawn(self.service.loop, self.converge)

    def stop(self) -> None:
        """End the worker (between two batches); the routes stay until the interface goes."""
        self.service.stop()

    def changed(self) -> None:
        """The allowed IPs changed: converge again (cheap; returns at once)."""
        with self._lock:
            self._generation += 1
        self.service.wake()

    def converge(self) -> float | None:
        """One round: add what is wanted and missing, delete what is routed and no longer
        wanted. Returns the seconds until the next round (None: when changed)."""
        with self._lock:
            generation = self._generation
        if generation != self._exists_generation:  # changed: try those once more
            self.exists.clear()
            self._exists_generation = generation
        wanted = {net for net in self._wanted() if net.prefixlen}   # /0: policy routing's
        stale = self.routed - wanted
        new = wanted - self.routed - self.exists     # refused ones again: changed or retry
        retry = None
        if stale or new:
            # here, not with the engine: the routes' netlink (pyroute2) costs 0.4-1.4 s to import
            from meshwg.netlink.routes import change_routes
            try:
                result = change_routes(self.name, add=new, delete=stale, skip_covered=True,
                                       stop=lambda: self.service.stopping
                                       or self._generation != generation)
            except NetconfigError as exc:       # the interface is gone, or netlink failed
                log.debug("%s: routes not changed: %s", self.name, exc)
                return RETRY_INTERVAL
            self.routed.difference_update(result.deleted, result.missing)
            self.routed.update(result.added)
            for net in result.deleted + result.missing + result.added:
                self.failed.pop(net, None)
            fresh = set(result.exists) - self.exists
            self.exists.update(fresh)
            for net in sorted(fresh, key=str)[:10]:
                log.warning("%s: not routing %s through it: the kernel routes it elsewhere "
                            "already", self.name, net)
            if len(fresh) > 10:
                log.warning("%s: ... and %d more routes that exist elsewhere", self.name,
                            len(fresh) - 10)
            for net, reason in result.failed:
                if net not in self.failed:
                    log.warning("%s: route %s: %s (retried every %.0f s)", self.name, net,
                                reason, RETRY_INTERVAL)
                self.failed[net] = reason
        for net in [n for n in self.failed if n not in wanted and n not in self.routed]:
            del self.failed[net]                # no longer wanted: nothing to retry
        if self.failed:
            retry = RETRY_INTERVAL
        return 0.0 if self._generation != generation else retry
