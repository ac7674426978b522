"""Scale of the meshwg engine with many configured peers (100, 1,000, 10,000 by default).

No TUN device, no socket: a `Device` that is never started, configured through the same
UAPI path `wg setconf` uses (uapi.parse_set -> Device.apply), and its WireGuardProtocol
driven directly with packets and a virtual clock. For each peer count it reports:

- memory per peer (tracemalloc, what the device retains): configured only, and with one
  transport keypair (an established session) each
- UAPI set (parse + apply of all peers) and get (Device.status + format_get) times
- per-packet time of the allowed-IP lookup, the keypair index lookup, encrypt_packets
  (TUN -> UDP, batches of 64, destinations spread over every peer) and receive_datagram
- next_deadline() and tick() per call with every peer holding a 25 s persistent
  keepalive, and the timer thread's CPU share when driven like Device._timer_loop

    .venv/bin/python bench/scale.py [--peers 100 1000 10000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import random
import time
import tracemalloc
from typing import Any, Callable

from meshwg.core.crypto import generate_private_key
from meshwg.device.device import Device
from meshwg.core.keypair import Keypair
from meshwg.core.noise import TransportKeys
from meshwg.uapi.codec import format_get, parse_set

KEEPALIVE = 25
BATCH = 64
T0 = 1000.0


def peer_address(i: int) -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + i + 1))


def set_lines(keys: list[bytes]) -> list[str]:
    """A `wg setconf`-style set request: one /32 each, an endpoint, a persistent keepalive."""
    lines = [f"private_key={generate_private_key().hex()}", "replace_peers=true"]
    for i, key in enumerate(keys):
        lines += [f"public_key={key.hex()}", f"endpoint=192.0.2.{i % 250 + 1}:{20000 + i % 40000}",
                  f"persistent_keepalive_interval={KEEPALIVE}", "replace_allowed_ips=true",
                  f"allowed_ip={peer_address(i)}/32"]
    return lines


def build(keys: list[bytes]) -> tuple[Device, float]:
    """A never-started Device with every peer configured; returns it and the set time."""
    device = Device("scale0", manage_routes=False)
    lines = set_lines(keys)
    start = time.perf_counter()
    device.apply(parse_set(lines))
    return device, time.perf_counter() - start


def add_sessions(device: Device, now: float) -> None:
    """One keypair per peer, its own remote (same key both ways, remote index = local index),
    so the datagrams we seal are ones we can also receive."""
    p = device.protocol
    for peer in p.peers.values():
        key = os.urandom(32)
        index = p._new_index()
        kp = Keypair(TransportKeys(key, key, b""), index, index, True, now, peer)
        peer.current = kp
        p.keypairs_by_index[index] = kp


def retained(make: Callable[[], Any]) -> tuple[Any, int]:
    """The object `make` returns and the bytes it keeps allocated (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    obj = make()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return obj, used


def per_call(fn: Callable[[], Any], min_time: float = 0.2) -> float:
    """Seconds per call of fn (best of three runs of at least min_time)."""
    best = float("inf")
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / 3:
                break
        best = min(best, elapsed / calls)
    return best


def ipv4_packet(src: str, dst: str, size: int = 128) -> bytes:
    header = bytearray(20)
    header[0] = 0x45
    header[2:4] = size.to_bytes(2, "big")
    header[8] = 64
    header[9] = 17
    header[12:16] = ipaddress.IPv4Address(src).packed
    header[16:20] = ipaddress.IPv4Address(dst).packed
    return bytes(header) + bytes(size - 20)


def measure(n: int, rng: random.Random) -> dict[str, float]:
    keys = [os.urandom(32) for _ in range(n)]
    row: dict[str, float] = {"peers": n}

    # memory: configured peers, then with one keypair each
    (device, _), configured = retained(lambda: build(keys))
    row["bytes_per_peer"] = configured / n
    _, sessions = retained(lambda: add_sessions(device, T0))
    row["bytes_per_peer_with_session"] = (configured + sessions) / n
    del device
    gc.collect()

    # UAPI set and get
    device, set_time = build(keys)
    p = device.protocol
    row["uapi_set_ms"] = set_time * 1e3
    row["uapi_get_ms"] = per_call(lambda: format_get(device.status()), 0.5) * 1e3

    # lookups
    addresses = [ipaddress.IPv4Address(peer_address(rng.randrange(n))).packed for _ in range(4096)]
    lookup = p.allowed_ips.lookup
    row["allowedip_lookup_ns"] = per_call(lambda: [lookup(a) for a in addresses]) / len(addresses) * 1e9
    add_sessions(device, T0)
    indices = rng.sample(list(p.keypairs_by_index), min(4096, n))
    table = p.keypairs_by_index
    row["index_lookup_ns"] = per_call(lambda: [table.get(i) for i in indices]) / len(indices) * 1e9

    # data path
    now = T0 + 1.0
    dests = [peer_address(rng.randrange(n)) for _ in range(BATCH * 16)]
    batches = [[ipv4_packet(d, d) for d in dests[i:i + BATCH]] for i in range(0, len(dests), BATCH)]
    sealed: list[tuple[bytes, Any]] = []

    def encrypt() -> None:
        for batch in batches:
            sealed.extend(p.encrypt_packets(batch, now))

    row["encrypt_us_per_packet"] = per_call(encrypt, 0.5) / len(dests) * 1e6
    datagrams = [d for d, _ in sealed]
    endpoints = {kp.local_index: kp.peer.endpoint for kp in p.keypairs_by_index.values()}
    sources = [endpoints[int.from_bytes(d[4:8], "little")] for d in datagrams]
    receive = p.receive_datagram
    start = time.perf_counter()
    opened = sum(receive(d, s, now) is not None for d, s in zip(datagrams, sources))
    row["receive_us_per_packet"] = (time.perf_counter() - start) / len(datagrams) * 1e6
    assert opened == len(datagrams), (opened, len(datagrams), dict(p.stats))

    # timers: spread the persistent keepalive deadlines over one interval
    for peer in p.peers.values():
        peer.persistent_keepalive_at = now + rng.uniform(0, KEEPALIVE)
    p.take_datagrams()
    row["next_deadline_us"] = per_call(p.next_deadline) * 1e6
    quiet = now - 1.0      # nothing due
    row["tick_idle_us"] = per_call(lambda: p.tick(quiet)) * 1e6
    row.update(timer_loop(p, now, 5.0))
    return row


def timer_loop(p, start: float, seconds: float) -> dict[str, float]:
    """Drive next_deadline/tick like Device._timer_loop over `seconds` of virtual time
    (each firing sends one keepalive); CPU seconds per virtual second."""
    now = start
    wakeups = fired = 0
    cpu = time.process_time()
    while now < start + seconds:
        deadline = p.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)          # the device sleeps until the next deadline
        p.tick(now)
        fired += len(p.take_datagrams())
        wakeups += 1
    used = time.process_time() - cpu
    return {"timer_cpu_share": used / seconds, "timer_wakeups_per_s": wakeups / seconds,
            "keepalives_per_s": fired / seconds}


COLUMNS = [
    ("peers", "peers", "{:.0f}"),
    ("bytes_per_peer", "B/peer", "{:.0f}"),
    ("bytes_per_peer_with_session", "B/peer+kp", "{:.0f}"),
    ("uapi_set_ms", "set ms", "{:.1f}"),
    ("uapi_get_ms", "get ms", "{:.1f}"),
    ("allowedip_lookup_ns", "route ns", "{:.0f}"),
    ("index_lookup_ns", "index ns", "{:.0f}"),
    ("encrypt_us_per_packet", "enc us/pkt", "{:.2f}"),
    ("receive_us_per_packet", "rcv us/pkt", "{:.2f}"),
    ("next_deadline_us", "next_dl us", "{:.1f}"),
    ("tick_idle_us", "tick us", "{:.1f}"),
    ("timer_cpu_share", "timer CPU", "{:.1%}"),
    ("keepalives_per_s", "ka/s", "{:.0f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = [measure(n, rng) for n in args.peers]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    widths = [max(len(title), 10) for _, title, _ in COLUMNS]
    print("  ".join(title.rjust(w) for (_, title, _), w in zip(COLUMNS, widths)))
    for row in rows:
        print("  ".join(fmt.format(row[key]).rjust(w) for (key, _, fmt), w in zip(COLUMNS, widths)))


if __name__ == "__main__":
    main()
