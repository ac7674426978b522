"""meshwg.device.offloads: which offloads MESHWG_OFFLOAD asks for."""

from __future__ import annotations

from meshwg.device.offloads import DEFAULT_OFFLOAD_PARTS, offload_parts_from_env


def test_offload_env_switch() -> None:
    parts = offload_parts_from_env
    assert parts({}) == parts({"MESHWG_OFFLOAD": "1"}) == DEFAULT_OFFLOAD_PARTS
    for off in ("0", "false", "OFF", "no", "none"):
        assert parts({"MESHWG_OFFLOAD": off}) == frozenset()
    assert parts({"MESHWG_OFFLOAD": "all"}) == {"tun", "udp"}
    assert parts({"MESHWG_OFFLOAD": "tun, udp"}) == {"tun", "udp"}
    assert parts({"MESHWG_OFFLOAD": "tun"}) == {"tun"}
    assert parts({"MESHWG_OFFLOAD": "udp,bogus"}) == {"udp"}
