"""Handshakes per second a meshwg responder completes on one core (I/O-free protocol core).

Many initiator peers (each a WireGuardProtocol) each build one initiation; the responder
consumes all of them and answers each with a response. Only the responder's work is timed
(CPU seconds of this process, so time other processes take is not counted; contention for
caches and the core's clock still is: on a loaded machine figures are lower bounds).
Each round uses a fresh responder and fresh initiations; the result has every round and
their median, so a caller can report median and range.

The floor underneath: each consumed initiation costs four X25519 operations whatever the
language (three variable-base: es, ee, se, the static-static one being cached per peer as
wireguard-go does; one fixed-base for the responder's ephemeral public key);
`x25519_floor_per_second` measures them alone with the implementation the chain uses
(libsodium called from C with the compiled chain, through PyNaCl with the Python one).

The responder runs the compiled handshake chain (meshwg.accel._noise) where it is built and
MESHWG_FASTPATH allows, as the device does; --no-fastpath measures the Python chain.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import types

from meshwg import accel as accel_select
from meshwg.core import crypto, messages, noise
from meshwg.core.crypto import generate_private_key, public_key
from meshwg.core.protocol import WireGuardProtocol


def build(n: int, chain=None):
    """(responder, [(initiation datagram, source)]) with n initiator peers it knows;
    `chain` is the responder's handshake_accel (None: the Python chain)."""
    responder_key = generate_private_key()
    responder = WireGuardProtocol(responder_key)
    responder.handshake_accel = chain
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


class GcClock:
    """Python's cyclic garbage collections while it is installed (gc.callbacks): how many,
    per generation, and their wall seconds."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> "GcClock":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


def measure_round(n: int, fastpath: bool | None = None) -> dict:
    """One responder consuming n initiations: handshakes, CPU and wall seconds, rate, and the
    cyclic garbage collections that ran inside the timed loop (`gc_collections` per
    generation, `gc_seconds`). `fastpath` chooses the chain as the device does (None:
    MESHWG_FASTPATH).

    Building the n initiator peers (WireGuardProtocol objects, each with reference cycles)
    leaves garbage and a large young heap behind; a full collection triggered by it inside
    the timed loop would charge the responder for the harness's allocations (one such
    collection measured 22 ms, 5 % of a round). So the garbage is collected before the clock
    starts; the collections the responder's own allocations cause still run and are timed.
    A daemon pays those too: with 22,000 peers configured, 1.3-2.7 us per handshake over
    10,000 handshakes, all young or generation-1 collections (no full one), the same with
    gc.freeze() after configuration, so the device does not freeze."""
    responder, initiations = build(n, accel_select.select_handshake(fastpath))
    receive = responder.receive_datagram
    gc.collect()
    with GcClock() as collected:
        start = time.process_time()
        wall = time.perf_counter()
        for packet, source in initiations:
            receive(packet, source, 2.0)
        cpu = time.process_time() - start
        elapsed = time.perf_counter() - wall
    responses = sum(1 for d, _ in responder.take_datagrams() if d[0] == 2)
    if responses != n:
        raise RuntimeError(f"responder answered {responses} of {n} initiations: {responder.stats}")
    return {"handshakes": responses, "cpu_seconds": cpu, "wall_seconds": elapsed,
            "handshakes_per_second": responses / cpu if cpu else 0.0,
            "gc_collections": collected.collections, "gc_seconds": collected.seconds}


def x25519_floor_per_second(n: int = 2000, fastpath: bool | None = None) -> float:
    """Handshakes/s if a handshake cost only its four X25519 operations (CPU time), with
    the X25519 the chain `fastpath` chooses calls (the Python chain: meshwg.core.crypto's,
    through PyNaCl)."""
    chain = accel_select.select_handshake(fastpath)
    dh, public_key = (crypto.dh, crypto.public_key) if chain is None else (chain.dh, chain.public_key)
    private, other = generate_private_key(), public_key(generate_private_key())
    start = time.process_time()
    for _ in range(n):
        public_key(private)
        dh(private, other)
        dh(private, other)
        dh(private, other)
    cpu = time.process_time() - start
    return n / cpu if cpu else 0.0


def measure_handshakes_per_second(n: int = 2000, rounds: int = 3,
                                  fastpath: bool | None = None) -> dict:
    """`rounds` rounds of n handshakes: each round's rate, their median, and the X25519 floor.
    `fastpath` chooses the chain as the device does (None: MESHWG_FASTPATH)."""
    chain = accel_select.select_handshake(fastpath)
    per_round = [measure_round(n, fastpath) for _ in range(rounds)]
    rates = [r["handshakes_per_second"] for r in per_round]
    return {"handshakes_per_round": n, "rounds": per_round,
            "chain": "python" if chain is None else f"compiled (libsodium {chain.SODIUM_VERSION})",
            "handshakes_per_second": statistics.median(rates),
            "handshakes_per_second_range": [min(rates), max(rates)],
            "x25519_floor_per_second": x25519_floor_per_second(n, fastpath)}


def breakdown(n: int = 1000, rounds: int = 7) -> dict:
    """Where a compiled-chain handshake's microseconds go (CPU time per handshake), each
    part the minimum over `rounds` rounds of n (the round least disturbed by other load):
    its four X25519 operations; the rest of the C chain (BLAKE2s, HKDF, AEAD, arguments);
    the Python protocol around it (admission and mac1, peer lookup, replay and flood
    checks, index, keypair, response and its macs), timed with the chain's results
    replayed; and the whole, on both chains, with the cyclic garbage collections inside the
    compiled whole (wall time, median of its rounds)."""
    chain = accel_select.select_handshake(True, warn=False)
    if chain is None:
        raise SystemExit("the compiled handshake chain is not built")

    def best(run) -> float:
        return min(run() for _ in range(rounds)) / n * 1e6

    def x25519() -> float:
        a, p = generate_private_key(), public_key(generate_private_key())
        start = time.process_time()
        for _ in range(n):
            chain.dh(a, p), chain.dh(a, p), chain.dh(a, p), chain.public_key(a)
        return time.process_time() - start

    def read_all(responder, initiations) -> dict:
        ck, h = noise.initial_state(responder.public_key)
        lookup = lambda rs: responder.peers[rs].static_static      # noqa: E731
        out = {}
        for packet, _ in initiations:
            m = messages.parse_initiation(packet)
            out[m.ephemeral] = chain.read_message1(responder.private_key, ck, h, m.ephemeral,
                                                   m.encrypted_static, m.encrypted_timestamp,
                                                   lookup)
        return out

    def chain_only() -> float:
        responder, initiations = build(n, chain)
        start = time.process_time()                 # (with parsing each initiation)
        for e, (ck, h, rs, _ts) in read_all(responder, initiations).items():
            chain.write_message2(ck, h, e, rs, bytes(32), b"")
        return time.process_time() - start

    def python_only() -> float:
        responder, initiations = build(n, chain)
        recorded = read_all(responder, initiations)
        _, _, rs, _ = next(iter(recorded.values()))
        response = chain.write_message2(bytes(32), bytes(32), rs, rs, bytes(32), b"")
        responder.handshake_accel = types.SimpleNamespace(
            DecryptionError=chain.DecryptionError, WeakKeyError=chain.WeakKeyError,
            read_message1=lambda s, ck, h, e, es, ep, lookup: (lookup(recorded[e][2]) and
                                                               recorded[e]),
            write_message2=lambda *args: response)
        start = time.process_time()
        for packet, source in initiations:
            responder.receive_datagram(packet, source, 2.0)
        return time.process_time() - start

    gc_seconds: list[float] = []

    def whole(fastpath: bool) -> float:
        measured = measure_round(n, fastpath)
        gc_seconds.append(measured["gc_seconds"])
        return n / measured["handshakes_per_second"]

    x, c, p = best(x25519), best(chain_only), best(python_only)
    compiled = best(lambda: whole(True))
    return {"x25519_us": x, "chain_rest_us": c - x, "python_protocol_us": p,
            "whole_compiled_us": compiled,
            "gc_in_whole_compiled_us": statistics.median(gc_seconds) / n * 1e6,
            "whole_python_chain_us": best(lambda: whole(False))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="handshakes per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-fastpath", action="store_true", help="the Python handshake chain")
    ap.add_argument("--breakdown", action="store_true",
                    help="where a compiled-chain handshake's microseconds go (-n per round)")
    args = ap.parse_args()
    if args.breakdown:
        b = breakdown(args.n if args.n != 2000 else 1000, max(args.rounds, 7))
        print(json.dumps(b, indent=2) if args.json else
              f"per handshake (min of rounds): X25519 x4 {b['x25519_us']:.0f} us, rest of the C "
              f"chain {b['chain_rest_us']:.0f} us, Python protocol {b['python_protocol_us']:.0f} us; "
              f"whole: compiled {b['whole_compiled_us']:.0f} us "
              f"({1e6 / b['whole_compiled_us']:.0f}/s, of which cyclic GC "
              f"{b['gc_in_whole_compiled_us']:.1f} us), Python chain "
              f"{b['whole_python_chain_us']:.0f} us ({1e6 / b['whole_python_chain_us']:.0f}/s)")
        return
    result = measure_handshakes_per_second(args.n, args.rounds,
                                           False if args.no_fastpath else None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        low, high = result["handshakes_per_second_range"]
        print(f"responder ({result['chain']} chain): median {result['handshakes_per_second']:.0f} handshakes/s on one core "
              f"(range {low:.0f}-{high:.0f} over {args.rounds} rounds of {args.n}); "
              f"X25519 alone would allow {result['x25519_floor_per_second']:.0f}/s")


if __name__ == "__main__":
    main()
