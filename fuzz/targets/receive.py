"""The engine's receive path with real keys (meshwg.core: receive_datagram, handshake
admission and processing, transport opening, inner-packet checks). Responder B has a live
session with initiator A. Nothing may escape: hostile datagrams are dropped and counted.

The first byte chooses how the rest is delivered to B:
  0  as a raw datagram from A's address;
  1  as transport data to B's live receiver index (rest: counter and ciphertext);
  2  sealed by A's live session (rest: the inner packet B must check);
  3  sealed by A's live session, from a new address (roaming);
  4  as a raw datagram from A's address while B is under load (cookie replies, mac2).
State carries over between inputs (replay windows, endpoints, rate limits); the pair is
rebuilt every REBUILD inputs or when the session is gone, so a crash replays on a fresh pair.
"""

from __future__ import annotations

import ipaddress
import struct

from fuzz.targets._keys import private, public
from meshwg.core.protocol import WireGuardProtocol

ALLOWED: tuple[type[BaseException], ...] = ()
A_ADDR, B_ADDR, ROAM_ADDR = ("192.0.2.1", 51821), ("192.0.2.2", 51822), ("198.51.100.9", 40000)
WALL = 1_700_000_000.0
START = 1000.0
REBUILD = 2000
UNDER_LOAD = 10_000          # a handshake backlog that puts B under load
TOKENS = (b"\x45\x00", b"\x60\x00\x00\x00", b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02",
          b"\x04\x00\x00\x00", b"\x01\x00\x00\x00")


class _Pair:
    def __init__(self) -> None:
        self.now = START
        self.a = WireGuardProtocol(private("A"), wall_offset=WALL)
        self.b = WireGuardProtocol(private("B"), wall_offset=WALL)
        self.pa = self.a.add_peer(public("B"))
        self.a.set_endpoint(self.pa, B_ADDR)
        self.a.add_allowed_ips(self.pa, [ipaddress.ip_network("10.0.0.2/32")])
        self.pb = self.b.add_peer(public("A"))
        self.b.set_endpoint(self.pb, A_ADDR)
        self.b.add_allowed_ips(self.pb, [ipaddress.ip_network("10.0.0.1/32"),
                                         ipaddress.ip_network("fd00::1/128")])
        self.a.initiate_handshake(self.pa, self.now)
        self.pump()
        self.a.send_keepalive(self.pa, self.now)       # confirms B's responder session
        self.pump()
        self.uses = 0

    def pump(self) -> None:
        for _ in range(8):
            out_a, out_b = self.a.take_datagrams(), self.b.take_datagrams()
            if not out_a and not out_b:
                break
            for data, _ in out_a:
                self.b.receive_datagram(bytes(data), A_ADDR, self.now)
            for data, _ in out_b:
                self.a.receive_datagram(bytes(data), B_ADDR, self.now)
        self.a.take_events()
        self.b.take_events()

    def b_index(self) -> bytes | None:
        kp = self.pb.current
        for index, keypair in self.b.keypairs_by_index.items():
            if kp is None or keypair is kp:
                return struct.pack("<I", index)
        return None


_pair: _Pair | None = None


def _fresh() -> _Pair:
    global _pair
    if _pair is None or _pair.uses >= REBUILD:
        _pair = _Pair()
    _pair.uses += 1
    return _pair


def reset() -> None:
    """Start the next input on a fresh pair (replaying a crash)."""
    global _pair
    _pair = None


def one_input(data: bytes) -> None:
    pair = _fresh()
    mode, body = (data[0] % 5, data[1:]) if data else (0, b"")
    pair.now += 0.001
    b = pair.b
    if mode in (0, 4):
        b.receive_datagram(body, A_ADDR, pair.now, UNDER_LOAD if mode == 4 else 0)
    elif mode == 1:
        index = pair.b_index()
        if index is None:
            reset()
            return
        b.receive_datagram(b"\x04\x00\x00\x00" + index + body, A_ADDR, pair.now)
    else:
        sealed = pair.a._seal(pair.pa, body, pair.now)
        if sealed is None:
            reset()
            return
        b.receive_datagram(bytes(sealed), A_ADDR if mode == 2 else ROAM_ADDR, pair.now)
    b.take_datagrams()
    b.take_events()
    pair.a.take_datagrams()
    pair.a.take_events()


def _ipv4(src: str, dst: str, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, 17, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + payload


def handshake_seeds() -> dict[str, bytes]:
    """Real messages between the fixed keys: an initiation, a response, a transport."""
    a = WireGuardProtocol(private("A"), wall_offset=WALL)
    b = WireGuardProtocol(private("B"), wall_offset=WALL)
    pa, pb = a.add_peer(public("B")), b.add_peer(public("A"))
    a.set_endpoint(pa, B_ADDR)
    b.set_endpoint(pb, A_ADDR)
    a.initiate_handshake(pa, START)
    (init, _), = a.take_datagrams()
    b.receive_datagram(bytes(init), A_ADDR, START)
    (resp, _), = b.take_datagrams()
    a.receive_datagram(bytes(resp), B_ADDR, START)
    a.take_datagrams()
    a.send_keepalive(pa, START)
    (keepalive, _), = a.take_datagrams()
    return {"initiation": bytes(init), "response": bytes(resp), "keepalive": bytes(keepalive)}


def seeds() -> dict[str, bytes]:
    packet = _ipv4("10.0.0.1", "10.0.0.2", b"\x30\x39\x00\x35\x00\x0c\x00\x00ping")
    out = {f"raw-{k}": b"\x00" + v for k, v in handshake_seeds().items()}
    out["transport-garbage"] = b"\x01" + bytes(8) + bytes(32)
    out["inner-ipv4"] = b"\x02" + packet
    out["inner-ipv6"] = b"\x02" + struct.pack("!IHBB16s16s", 6 << 28, 4, 17, 64,
                                              ipaddress.IPv6Address("fd00::1").packed,
                                              ipaddress.IPv6Address("fd00::2").packed) + b"abcd"
    out["roam-ipv4"] = b"\x03" + packet
    out["inner-keepalive"] = b"\x02"
    out["load-initiation"] = b"\x04" + out["raw-initiation"][1:]
    return out
