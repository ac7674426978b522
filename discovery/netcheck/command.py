"""`meshwg netcheck [--json] [--state DIR | --rendezvous HOST:PORT]`.

The rendezvous comes from the member state (discovery.stores.member: its
``rendezvous_endpoint``, the WireGuard HOST:PORT) unless given; its observation responder
listens on that port + 2 and + 3 (discovery.netcheck.responder). A report about a member's
network (the rendezvous read from --state) is kept there too (discovery.netcheck.facts).
"""

from __future__ import annotations

import json
import sys
import time

from meshwg.util.endpoint import parse_port, split_hostport
from meshwg.util.errors import MeshwgError

from discovery.netcheck.classify import Observations, classify, summary_lines
from discovery.netcheck.facts import save_report
from discovery.netcheck.probe import gather
from discovery.netcheck.responder import observe_ports

DEFAULT_STATE = "/var/lib/meshwg"


def rendezvous_endpoint(state_dir: str) -> str:
    """The rendezvous's WireGuard HOST:PORT from a member state directory (StateError when
    it is missing or unreadable)."""
    from discovery.stores.member import MemberState
    return MemberState.load(state_dir).rendezvous_endpoint


class NetcheckError(MeshwgError):
    """netcheck cannot run: the rendezvous host does not resolve."""


def run(rendezvous: str) -> dict:
    """Probe the rendezvous at ``rendezvous`` (HOST:PORT, its WireGuard port) -> report.
    NetcheckError when its host has no address."""
    host, port_text = split_hostport(rendezvous)
    port = parse_port(port_text)
    return classify(check_resolved(gather(host, observe_ports(port), rendezvous)))


def check_resolved(obs: Observations) -> Observations:
    """``obs``, or NetcheckError when the rendezvous host had no address in any family."""
    if obs.ipv4.target is None and obs.ipv6.target is None:
        raise NetcheckError(f"netcheck: rendezvous {obs.rendezvous}: the host does not resolve")
    return obs


def cmd_netcheck(args) -> int:
    target = args.rendezvous or rendezvous_endpoint(args.state)
    report = run(target)
    if not args.rendezvous:     # facts about this member's network, for `meshwg status`
        try:
            save_report(args.state, report, time.time())
        except OSError as exc:
            print(f"meshwg: netcheck: not saved in {args.state}: {exc.strerror or exc}",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(summary_lines(report)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("netcheck", help="what this network allows: UDP, NAT type, hairpin, IPv4/IPv6, "
                                        "latency to the rendezvous (in under 5 s)")
    p.add_argument("--state", default=DEFAULT_STATE,
                   help=f"member state directory, for the rendezvous endpoint (default {DEFAULT_STATE})")
    p.add_argument("--rendezvous", metavar="HOST:PORT",
                   help="the rendezvous's WireGuard endpoint (default: from --state)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_netcheck)
