"""Offloads end to end: 20 MB over TCP through a meshwg tunnel arrive intact (sha256) with
the default offloads (all of them: UDP GSO/GRO and TUN TSO/GRO), with the UDP ones only
(MESHWG_OFFLOAD=udp), with every offload named (MESHWG_OFFLOAD=all), with none
(MESHWG_OFFLOAD=0 and `--no-offload`), and against wireguard-go, whose wire format the
offloads must not change."""

from __future__ import annotations

import pytest

from discovery.lab.engines import TunnelPair, tunnel_pair
from discovery.lab.netns import Cleanup
from discovery.lab.traffic import tcp_transfer

pytestmark = pytest.mark.netns

NBYTES = 20_000_000


def _both_ways(pair: TunnelPair) -> None:
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    there = tcp_transfer(pair.ns_a, pair.ns_b, pair.tunnel_b, NBYTES, port=5201, timeout=40)
    assert there.intact and there.sent_bytes == NBYTES, there
    back = tcp_transfer(pair.ns_b, pair.ns_a, pair.tunnel_a, NBYTES, port=5202, timeout=40)
    assert back.intact and back.sent_bytes == NBYTES, back
    for daemon in (getattr(pair.a, "daemon", None), getattr(pair.b, "daemon", None)):
        if daemon is not None:
            assert daemon.alive, daemon.output()


@pytest.mark.parametrize("setting", ["default", "udp", "all", "0"])
def test_meshwg_pair_moves_20mb_intact(lab: Cleanup, monkeypatch: pytest.MonkeyPatch,
                                       setting: str) -> None:
    if setting == "default":
        monkeypatch.delenv("MESHWG_OFFLOAD", raising=False)
    else:
        monkeypatch.setenv("MESHWG_OFFLOAD", setting)   # the daemons inherit the environment
    _both_ways(tunnel_pair(lab, "meshwg", "meshwg"))


def test_meshwg_with_all_offloads_interoperates_with_wireguard_go(
        lab: Cleanup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHWG_OFFLOAD", "all")
    _both_ways(tunnel_pair(lab, "meshwg", "wireguard-go"))


def test_no_offload_flag_is_accepted() -> None:
    from meshwg.cli.app import build_parser
    args = build_parser().parse_args(["up", "x.conf", "--no-offload"])
    assert args.no_offload is True
