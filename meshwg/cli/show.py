"""`meshwg show [IFACE] [--json]`: interfaces, peers, handshakes, transfer and drop counters."""

from __future__ import annotations

import json
import time

from meshwg.cli.common import fail
from meshwg.core.keys import encode_key
from meshwg.util.endpoint import format_endpoint
from meshwg.device.stats import stats_path


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or (unit == "second" and not parts):
            n, seconds = divmod(seconds, size)
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts) + " ago"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def peer_summary(peer) -> dict:
    """One peer of a DeviceStatus (meshwg.device.api.PeerStatus) as `show --json` and
    `meshwg status` print it: base64 key, "IP:port" endpoint, unix-seconds handshake."""
    return {
        "public_key": encode_key(peer.public_key),
        "preshared_key": peer.preshared_key is not None,
        "endpoint": format_endpoint(peer.endpoint) if peer.endpoint is not None else None,
        "allowed_ips": [str(net) for net in peer.allowed_ips],
        "latest_handshake": peer.last_handshake_sec or None,
        "rx_bytes": peer.rx_bytes, "tx_bytes": peer.tx_bytes,
        "persistent_keepalive": peer.persistent_keepalive,
    }


def interface_summary(name: str) -> dict:
    from meshwg.uapi import client as uapi_client
    dev = uapi_client.get(name)
    out = {"interface": name, "public_key": None, "listen_port": dev.listen_port,
           "fwmark": dev.fwmark, "peers": [peer_summary(p) for p in dev.peers]}
    if dev.private_key:
        from meshwg.core.crypto import public_key
        out["public_key"] = encode_key(public_key(dev.private_key))
    try:
        with open(stats_path(name)) as f:
            out["counters"] = json.load(f).get("counters", {})
    except (OSError, ValueError):
        out["counters"] = {}
    return out


def cmd_show(args) -> int:
    from meshwg.uapi import client as uapi_client
    names = [args.interface] if args.interface else uapi_client.list_interfaces()
    summaries = []
    for name in names:
        try:
            summaries.append(interface_summary(name))
        except uapi_client.ControlError as exc:
            if args.interface:
                fail(str(exc))
    if args.json:
        print(json.dumps(summaries if not args.interface else summaries[0], indent=2))
        return 0
    now = time.time()
    for s in summaries:
        print(f"interface: {s['interface']}")
        if s["public_key"]:
            print(f"  public key: {s['public_key']}")
        print(f"  listening port: {s['listen_port']}")
        if s.get("counters"):
            print("  counters: " + ", ".join(f"{k} {v}" for k, v in s["counters"].items()))
        for p in s["peers"]:
            print(f"\npeer: {p['public_key']}")
            if p["preshared_key"]:
                print("  preshared key: (hidden)")
            if p["endpoint"]:
                print(f"  endpoint: {p['endpoint']}")
            print(f"  allowed ips: {', '.join(p['allowed_ips']) or '(none)'}")
            if p["latest_handshake"]:
                print(f"  latest handshake: {_ago(now - p['latest_handshake'])}")
            if p["rx_bytes"] or p["tx_bytes"]:
                print(f"  transfer: {_bytes(p['rx_bytes'])} received, {_bytes(p['tx_bytes'])} sent")
            if p["persistent_keepalive"]:
                print(f"  persistent keepalive: every {p['persistent_keepalive']} seconds")
        print()
    return 0
