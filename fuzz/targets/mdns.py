"""mDNS announcements as the LAN browser hands them over (discovery.lan.records.
parse_announcement: instance name, TXT properties, addresses, SRV port). Refusal:
MalformedAnnouncement.

Input layout (fields split at NUL bytes): instance name, port (decimal text; empty: no
SRV), addresses (comma-separated text), then one TXT property per field ("key=value";
without "=": a key with no value). An instance name of "*" is replaced by the name the
announced mesh and key would give, so inputs get past the name check to the port and
address checks."""

from __future__ import annotations

from discovery.lan.records import MalformedAnnouncement, encode_txt, instance_name, parse_announcement
from discovery.lan.lankey import signable_addresses, signed_txt
from fuzz.targets._keys import lan_private, public
from meshwg.core.keys import KeyFormatError, decode_key

ALLOWED = (MalformedAnnouncement,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b"\x00", b"v=1", b"pub=", b"mesh=", b"addr=", b"name=", b"*", b",", b"fe80::1%eth0",
          b"127.0.0.1", b"ff02::fb", b"65536", b"-1", b"=", b"ip=", b"ts=", b"sig=", b"==")


def decode(data: bytes) -> tuple[str, dict[bytes, bytes | None], list[str], int | None]:
    fields = data.split(b"\x00")
    fields += [b""] * (3 - len(fields))
    instance = fields[0].decode("utf-8", "replace")
    port_text = fields[1].decode("ascii", "replace")
    port = int(port_text) if port_text.isdigit() and len(port_text) < 12 else None
    addresses = [a for a in fields[2].decode("utf-8", "replace").split(",") if a]
    properties: dict[bytes, bytes | None] = {}
    for item in fields[3:]:
        key, sep, value = item.partition(b"=")
        properties[key] = value if sep else None
    if instance == "*":
        try:
            mesh = (properties.get(b"mesh") or b"").decode()
            instance = instance_name(mesh, decode_key((properties.get(b"pub") or b"").decode(), "pub"))
        except (UnicodeDecodeError, KeyFormatError):
            pass
    return instance, properties, addresses, port


def one_input(data: bytes) -> None:
    instance, properties, addresses, port = decode(data)
    parse_announcement(instance, properties, addresses, port, 1_700_000_000.0)


def encode(instance: str, port: int | None, addresses: list[str], txt: dict[str, str]) -> bytes:
    return b"\x00".join([instance.encode(), b"" if port is None else str(port).encode(),
                         ",".join(addresses).encode()]
                        + [f"{k}={v}".encode() for k, v in txt.items()])


MESH = "fedcba9876543210" * 2
SIGNED_AT = 1_700_000_000


def signed(label: str, port: int, addresses: list[str], heard: list[str] | None = None,
           signer: str | None = None, timestamp: int = SIGNED_AT) -> bytes:
    """An announcement of WireGuard key public(label) whose ip=/ts=/sig= are signed by
    lan_private(signer or label) over the unscoped `addresses`; `heard`: the A/AAAA
    addresses heard with it (default: `addresses`)."""
    key = public(label)
    txt = encode_txt(MESH, key, label, "100.64.0.9")
    txt.update(signed_txt(lan_private(signer or label), MESH, key, port,
                          signable_addresses(addresses), timestamp))
    return encode("*", port, addresses if heard is None else heard, txt)


def seeds() -> dict[str, bytes]:
    mesh, key = MESH, public("lan")
    txt = encode_txt(mesh, key, "laptop", "100.64.0.9")
    name = instance_name(mesh, key)
    return {
        "signed": signed("lan", 51820, ["192.168.1.9", "fe80::9%eth0"]),
        "signed-v6": signed("lan", 4500, ["2001:db8::9", "fd00::9", "10.0.0.9"]),
        "announcement": encode(name, 51820, ["192.168.1.9", "fe80::9%eth0"], txt),
        "derived-name": encode("*", 51820, ["10.1.2.3", "2001:db8::9"], txt),
        "v6-addr": encode("*", 1, ["::1", "224.0.0.251"], encode_txt(mesh, key, "", "fd00::9/64")),
    }
