"""Handshakes per second a meshwg responder completes on one core (I/O-free protocol core).

Many initiator peers (each a WireGuardProtocol) each build one initiation; the responder
consumes all of them and answers each with a response. Only the responder's work is timed.
"""

from __future__ import annotations

import argparse
import json
import time

from meshwg.core.crypto import generate_private_key, public_key
from meshwg.core.protocol import WireGuardProtocol


def build(n: int):
    responder_key = generate_private_key()
    responder = WireGuardProtocol(responder_key)
    responder.under_load_rate = 10 ** 9     # measure the handshake itself, not the cookie path
    initiations = []
    for i in range(n):
        key = generate_private_key()
        initiator = WireGuardProtocol(key)
        peer = initiator.add_peer(public_key(responder_key))
        initiator.set_endpoint(peer, ("198.18.0.1", 51820))
        initiator.initiate_handshake(peer, 1.0)
        (packet, _), = initiator.take_datagrams()
        responder.add_peer(public_key(key)).endpoint = None
        initiations.append((packet, (f"198.18.{i // 250}.{i % 250 + 1}", 40000 + i % 1000)))
    return responder, initiations


def measure_handshakes_per_second(n: int = 2000) -> dict:
    responder, initiations = build(n)
    start = time.process_time()
    wall = time.perf_counter()
    for packet, source in initiations:
        responder.receive_datagram(packet, source, 2.0)
    cpu = time.process_time() - start
    elapsed = time.perf_counter() - wall
    responses = [d for d, _ in responder.take_datagrams() if d[0] == 2]
    return {"handshakes": len(responses), "cpu_seconds": cpu, "wall_seconds": elapsed,
            "handshakes_per_second": len(responses) / cpu if cpu else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure_handshakes_per_second(args.n)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"responder completed {result['handshakes']} handshakes in {result['cpu_seconds']:.2f} CPU s: "
              f"{result['handshakes_per_second']:.0f} handshakes/s on one core")


if __name__ == "__main__":
    main()
