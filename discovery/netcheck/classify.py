"""What the netcheck observations mean. I/O-free: the probe client (discovery.netcheck.probe)
gathers :class:`Observations`; :func:`classify` turns them into the report `meshwg netcheck`
prints.

Terms are RFC 4787's: a NAT whose mapping (the public ip:port it gives one local socket)
is the same towards every destination is endpoint-independent, the kind hole punching
works through; one that gives a new mapping per destination is endpoint-dependent ("hard",
"symmetric"). Two destinations are the rendezvous responder's two ports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshwg.util.endpoint import format_endpoint

Endpoint = tuple[str, int]


@dataclass
class FamilyObservations:
    """One address family's probe results."""
    route: bool                               # the host has a route towards the rendezvous
    target: str | None = None                 # the rendezvous address probed (None: it has none)
    local: Endpoint | None = None             # our socket's local address (after connect)
    answers: dict[int, Endpoint] = field(default_factory=dict)   # responder port -> observed
    rtts: list[float] = field(default_factory=list)              # seconds, one per answer
    send_error: str | None = None             # why sending failed (no route, ...)


@dataclass
class Observations:
    rendezvous: str                           # "host:port" of the rendezvous (WireGuard)
    ports: tuple[int, ...]                    # responder ports probed
    ipv4: FamilyObservations
    ipv6: FamilyObservations
    hairpin: bool | None = None               # None: not tried (no reflexive address)


def _family_report(obs: FamilyObservations, ports: tuple[int, ...]) -> dict:
    tried = obs.target is not None and obs.route and obs.send_error is None
    answered = [obs.answers[p] for p in ports if p in obs.answers]
    mapped = None
    if len(answered) == len(ports) and len(ports) >= 2:
        mapped = len(set(answered)) > 1
    nat = None
    if answered and obs.local is not None:
        nat = answered[0] != obs.local
    return {
        "route": obs.route,
        "udp": (bool(answered) if tried else None),
        "reflexive": format_endpoint(answered[0]) if answered else None,
        "reflexive_by_port": {str(p): format_endpoint(ep) for p, ep in obs.answers.items()},
        "behind_nat": nat,
        "mapping_varies_by_destination": mapped,
        "latency_ms": round(min(obs.rtts) * 1000, 2) if obs.rtts else None,
        "error": obs.send_error,
    }


def classify(obs: Observations) -> dict:
    """The netcheck report (JSON-ready): per family, then the summary fields.

    ``udp``: True when the rendezvous answered over UDP on any family, False when it was
    probed and never answered (UDP blocked, or the responder unreachable), None when no
    family could be probed. ``hard_nat``: True when the IPv4 mapping differs per
    destination, False when it is the same, None when unknown (fewer than two answers).
    ``hairpin``: whether a packet to our own reflexive address came back to us.
    ``portmap`` belongs to the port-mapping probe (not run here): always None.
    """
    v4 = _family_report(obs.ipv4, obs.ports)
    v6 = _family_report(obs.ipv6, obs.ports)
    probed = [f for f in (v4, v6) if f["udp"] is not None]
    udp = any(f["udp"] for f in probed) if probed else None
    hard = v4["mapping_varies_by_destination"]
    if hard is None:
        hard = v6["mapping_varies_by_destination"]
    latencies = [f["latency_ms"] for f in (v4, v6) if f["latency_ms"] is not None]
    return {
        "rendezvous": obs.rendezvous,
        "ports": list(obs.ports),
        "udp": udp,
        "ipv4": _available(v4),
        "ipv6": _available(v6),
        "hard_nat": hard,
        "hairpin": obs.hairpin,
        "reflexive_ipv4": v4["reflexive"],
        "reflexive_ipv6": v6["reflexive"],
        "latency_ms": min(latencies) if latencies else None,
        "portmap": None,
        "families": {"ipv4": v4, "ipv6": v6},
    }


def _available(family: dict) -> bool | None:
    """A family works (the rendezvous answered over it), does not (no route, or no
    answer), or is unknown (routed, but the rendezvous has no address of that family)."""
    if family["udp"] is not None:
        return family["udp"]
    return False if not family["route"] else None


def _yes_no(value: bool | None, unknown: str = "unknown") -> str:
    return unknown if value is None else ("yes" if value else "no")


def summary_lines(report: dict) -> list[str]:
    """The human-readable report, one fact per line."""
    udp = report["udp"]
    fam = report["families"]
    lines = [f"rendezvous: {report['rendezvous']} (observation ports "
             f"{', '.join(map(str, report['ports']))})",
             "UDP: " + ("reachable" if udp else "blocked (no answer from the rendezvous)"
                        if udp is False else "not tested (no address family to probe)")]
    for name in ("ipv4", "ipv6"):
        f = fam[name]
        if f["udp"] is None:
            state = ("no route" if not f["route"] else f"not tested ({f['error']})" if f["error"]
                     else "not tested (the rendezvous has no such address)")
        else:
            state = "yes" if f["udp"] else "no answer"
        lines.append(f"{name.replace('ip', 'IP')}: {state}")
    lines.append("hard NAT: " + _yes_no(report["hard_nat"]) +
                 (" (mapping varies by destination: hole punching fails)" if report["hard_nat"]
                  else ""))
    lines.append("hairpin: " + _yes_no(report["hairpin"], "not tested"))
    for name in ("ipv4", "ipv6"):
        if report[f"reflexive_{name}"]:
            nat = fam[name]["behind_nat"]
            lines.append(f"reflexive {name.replace('ip', 'IP')}: {report[f'reflexive_{name}']}"
                         + ("" if nat is None else " (behind NAT)" if nat else " (no NAT)"))
    lines.append("latency: " + (f"{report['latency_ms']:.1f} ms" if report["latency_ms"] is not None
                                else "-"))
    lines.append("port mapping: not checked")
    return lines
