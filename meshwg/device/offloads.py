"""Which offloads a device uses: MESHWG_OFFLOAD, read once when the device is made.

"tun" is the TUN device's virtio header offloads (TSO split on read, GRO coalescing on
write; meshwg.tun), "udp" the socket's UDP GSO/GRO (meshwg.conn). Each is used only
where the kernel has it.
"""

from __future__ import annotations

import os
from typing import Mapping

OFFLOAD_PARTS = ("tun", "udp")
# Both measured to pay (bench/bench.py, 2 cores): with TUN TSO/GRO split and merged in
# place, TCP through the tunnel moves ~20% more per CPU second than with UDP GSO/GRO alone.
DEFAULT_OFFLOAD_PARTS = frozenset(OFFLOAD_PARTS)


def offload_parts_from_env(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The offloads MESHWG_OFFLOAD asks for: "0"/"false"/"no"/"off"/"none" none; unset,
    "1", "on" or "default" DEFAULT_OFFLOAD_PARTS; "all" every part; else a comma list
    ("udp": UDP GSO/GRO only; "tun,udp"), unknown names ignored."""
    value = environ.get("MESHWG_OFFLOAD", "").strip().lower()
    if value in ("0", "false", "no", "off", "none"):
        return frozenset()
    if value in ("", "1", "true", "yes", "on", "default"):
        return DEFAULT_OFFLOAD_PARTS
    if value == "all":
        return frozenset(OFFLOAD_PARTS)
    return frozenset(p.strip() for p in value.split(",")) & frozenset(OFFLOAD_PARTS)
