"""Signed LAN announcements (discovery.lan.lankey.LanVerifier.verify, issue 9 case 3): a
member's mDNS announcement counts only when its ip=/ts=/sig= verify under the LAN key the
directory publishes for its WireGuard key. Refusal: none -- verify never raises; an
announcement that does not parse (MalformedAnnouncement) is left out by the harness, as
the browser leaves it out.

Input: rounds separated by SEPARATOR, each one announcement in the mdns target's layout
(fuzz/targets/mdns.py: instance, port, addresses, TXT properties split at NUL bytes). One
verifier hears them in turn, the browser's table keeping the newest announcement per key,
with the clock 100 s further each round. The directory vouches for two keys (public("lan")
and public("lan-b"), each with its own fixed LAN key); "lan-c" has none.

Besides never raising, every peer verify returns must be one the directory's LAN key
signed: Ed25519 signatures are deterministic (RFC 8032) and OpenSSL refuses non-canonical
ones, so the key's own signature over the announcement's payload must equal the one heard;
its addresses must be in the signed set and its ts inside the accepted window."""

from __future__ import annotations

from discovery.lan.lankey import (
    MAX_AGE, MAX_SKEW, LanVerifier, bare_address, public_lan_key, signed_payload,
)
from discovery.lan.records import MalformedAnnouncement, parse_announcement
from fuzz.targets import mdns
from fuzz.targets._keys import lan_private, public

ALLOWED = ()
MAX_LEN = 16384
SEPARATOR = b"\x00\x00--\x00\x00"
TOKENS = mdns.TOKENS + (SEPARATOR,)
NOW = mdns.SIGNED_AT + 60
SIGNERS = {public(label): lan_private(label) for label in ("lan", "lan-b")}
LAN_KEYS = {key: public_lan_key(private) for key, private in SIGNERS.items()}


def one_input(data: bytes) -> None:
    verifier = LanVerifier()
    peers = {}
    for round_, chunk in enumerate(data.split(SEPARATOR)):
        now = NOW + 100.0 * round_
        instance, properties, addresses, port = mdns.decode(chunk)
        try:
            peer = parse_announcement(instance, properties, addresses, port, now)
        except MalformedAnnouncement:
            continue
        peers[peer.public_key] = peer
        for key, used in verifier.verify(peers, LAN_KEYS, now).items():
            sig = used.signature
            assert key in LAN_KEYS and sig is not None, "accepted without a vouched key"
            payload = signed_payload(used.mesh_id, key, used.port, sig.addresses, sig.timestamp)
            assert SIGNERS[key].sign(payload) == sig.signature, "accepted a signature the key did not make"
            assert used.addresses and all(bare_address(a) in sig.addresses for a in used.addresses)
            assert now - MAX_AGE <= sig.timestamp <= now + MAX_SKEW


def seeds() -> dict[str, bytes]:
    good = mdns.signed("lan", 51820, ["192.168.1.9", "fe80::9%eth0"])
    return {
        "accepted": good,
        "two-members": SEPARATOR.join([good, mdns.signed("lan-b", 4500, ["10.0.0.7", "fd00::7"])]),
        "replay": SEPARATOR.join([mdns.signed("lan", 51820, ["192.168.1.9"], timestamp=NOW),
                                  mdns.signed("lan", 51820, ["192.168.1.66"])]),
        "other-signer": mdns.signed("lan", 51820, ["192.168.1.66"], signer="lan-b"),
        "no-key": mdns.signed("lan-c", 51820, ["192.168.1.10"]),
        "stranger-address": mdns.signed("lan", 51820, ["192.168.1.9"],
                                        heard=["192.168.1.9", "192.168.1.66"]),
        "unsigned-then-signed": SEPARATOR.join([mdns.seeds()["derived-name"], good]),
    }
