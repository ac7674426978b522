"""Programs the mDNS lab runs inside namespaces: ``python -m discovery.lab.mdns_agent CMD``.

``node``: runs MdnsAnnouncer + MdnsBrowser sharing one MdnsService, prints one JSON line
per event on stdout (``{"event": KIND, "t": unix time, ...}``: started, peers, updated,
announcer-stopped, counters) and obeys commands read from stdin: ``update``
(update_addresses), ``stop-announcer``, ``counters``, ``quit``.

``rogue``: publishes three instances that break the record layout (a key that is not
base64, a borrowed instance name, an unknown TXT version), prints a ``registered`` event
and keeps them up until stdin closes.

``flood``: announces ``--count`` bogus instances of the members' service type as bare PTR
records (nothing resolves them: no SRV, TXT or address), three times a second apart,
prints a ``flooded`` event and stays until stdin closes (issue 9 case 4).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, Sequence

from meshwg.core.keys import decode_key, encode_key


def _emitter() -> Any:
    lock = threading.Lock()

    def emit(event: str, **fields: Any) -> None:
        with lock:
            print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)
    return emit


def run_node(args: argparse.Namespace) -> None:
    from discovery.lan.announcer import MdnsAnnouncer
    from discovery.lan.browser import MdnsBrowser
    from discovery.lan.service import MdnsService

    emit = _emitter()

    def on_change(peers: dict) -> None:
        emit("peers", peers=[
            {"pub": encode_key(p.public_key), "name": p.name, "mesh": p.mesh_id,
             "mesh_address": p.mesh_address, "addresses": p.addresses, "port": p.port}
            for p in peers.values()])

    key = decode_key(args.key, "--key")
    service = MdnsService(interfaces=args.interface, ipv6=args.ipv6)
    announcer = MdnsAnnouncer(args.mesh, key, args.name, args.mesh_address, args.port,
                              service=service)
    browser = MdnsBrowser(args.mesh, key, on_change, service=service)
    announcer.start()
    browser.start()
    emit("started", addresses=announcer.addresses)
    for line in sys.stdin:
        command = line.strip()
        if command == "update":
            announcer.update_addresses()
            emit("updated", addresses=announcer.addresses)
        elif command == "stop-announcer":
            announcer.stop()
            emit("announcer-stopped")
        elif command == "counters":
            c = browser.counters
            emit("counters", malformed=c.malformed, other_mesh=c.other_mesh, own=c.own,
                 unresolved=c.unresolved, deferred=c.deferred, crowded=c.crowded)
        elif command == "quit":
            break
    announcer.stop()
    browser.stop()


def run_rogue(args: argparse.Namespace) -> None:
    from zeroconf import ServiceInfo, Zeroconf

    from discovery.lan.records import SERVICE_TYPE, encode_txt

    zc = Zeroconf(interfaces=[args.address])
    key = b"R" * 32
    bad = [
        # pub is not base64
        ("mwg-notbase64", {"v": "1", "pub": "%%%", "mesh": args.mesh, "addr": "100.64.9.1",
                           "name": "rogue1"}),
        # well-formed TXT, but the instance name is not the one derived from mesh and key
        ("mwg-borrowedname", encode_txt(args.mesh, key, "rogue2", "100.64.9.2")),
        # unknown TXT version
        ("mwg-version9", {**encode_txt(args.mesh, b"S" * 32, "rogue3", "100.64.9.3"), "v": "9"}),
    ]
    infos = [ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=4000, properties=txt,
                         server=f"{label}.local.", parsed_addresses=[args.address])
             for label, txt in bad]
    for info in infos:
        zc.register_service(info)
    _emitter()("registered", count=len(infos))
    sys.stdin.read()
    zc.close()


def run_flood(args: argparse.Namespace) -> None:
    from zeroconf import DNSOutgoing, DNSPointer, Zeroconf, const

    from discovery.lan.records import SERVICE_TYPE

    zc = Zeroconf(interfaces=[args.address])
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    for i in range(args.count):
        out.add_answer_at_time(DNSPointer(SERVICE_TYPE, const._TYPE_PTR, const._CLASS_IN, 4500,
                                          f"mwg-{args.prefix}{i:04d}.{SERVICE_TYPE}"), 0)
    for round_ in range(3):
        if round_:
            time.sleep(1)  # RFC 6762 8.3: repeated announcements one second apart
        zc.send(out)
    _emitter()("flooded", count=args.count)
    sys.stdin.read()
    zc.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m discovery.lab.mdns_agent",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="announce and browse, JSON events on stdout")
    node.add_argument("--mesh", required=True)
    node.add_argument("--key", required=True, help="base64 public key")
    node.add_argument("--name", required=True)
    node.add_argument("--mesh-address", required=True)
    node.add_argument("--port", type=int, required=True)
    node.add_argument("--interface", action="append", help="interface to use (repeatable)")
    node.add_argument("--no-ipv6", dest="ipv6", action="store_false")
    rogue = sub.add_parser("rogue", help="publish malformed instances")
    rogue.add_argument("--mesh", required=True)
    rogue.add_argument("--address", required=True, help="IPv4 address to bind and announce")
    flood = sub.add_parser("flood", help="announce bogus PTR-only instances")
    flood.add_argument("--address", required=True, help="IPv4 address to bind")
    flood.add_argument("--count", type=int, default=200)
    flood.add_argument("--prefix", default="bogus", help="instance labels: mwg-PREFIXNNNN")
    args = parser.parse_args(argv)
    if args.command == "node":
        run_node(args)
    elif args.command == "flood":
        run_flood(args)
    else:
        run_rogue(args)


if __name__ == "__main__":
    main()
