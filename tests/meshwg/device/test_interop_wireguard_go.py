"""meshwg <-> Debian wireguard-go (configured by Debian's wg): wire compatibility.

Each case gives only the initiating side the other's endpoint, so the handshake is
necessarily initiated by that side. NETLAB_INTEROP_SUBJECT=wireguard-go puts
wireguard-go in meshwg's place, which checks the tests themselves.
"""

from __future__ import annotations

import os
import time

import pytest

from discovery.lab.engines import tunnel_pair
from discovery.lab.netns import Cleanup, poll
from discovery.lab.traffic import tcp_transfer
from discovery.lab.wg import genpsk

pytestmark = pytest.mark.netns

SUBJECT = os.environ.get("NETLAB_INTEROP_SUBJECT", "meshwg")
TRANSFER_BYTES = 4_000_000


@pytest.fixture(params=["subject-initiates", "wireguard-go-initiates"])
def initiator(request: pytest.FixtureRequest) -> str:
    return request.param


# Each initiator runs with and without a preshared key; the case without runs meshwg's
# compiled data path (meshwg.accel, when built), the case with the pure Python one.
@pytest.fixture(params=[(False, "compiled"), (True, "python")],
                ids=["no-psk-compiled", "psk-python"])
def psk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    with_psk, data_path = request.param
    monkeypatch.setenv("MESHWG_FASTPATH", "1" if data_path == "compiled" else "0")
    return genpsk() if with_psk else None


def _counters_agree(a: int, b: int) -> bool:
    return abs(a - b) <= max(4096, 0.01 * max(a, b))


def test_handshake_ping_transfer_and_wg_show(lab: Cleanup, initiator: str,
                                             psk: str | None) -> None:
    started = int(time.time())
    if initiator == "subject-initiates":
        pair = tunnel_pair(lab, SUBJECT, "wireguard-go", psk=psk, endpoints="a")
        subject, subject_ns, subject_ip = pair.a, pair.ns_a, pair.tunnel_a
        other, other_ns, other_ip = pair.b, pair.ns_b, pair.tunnel_b
    else:
        pair = tunnel_pair(lab, "wireguard-go", SUBJECT, psk=psk, endpoints="a")
        subject, subject_ns, subject_ip = pair.b, pair.ns_b, pair.tunnel_b
        other, other_ns, other_ip = pair.a, pair.ns_a, pair.tunnel_a
    first_ns, first_target = pair.ns_a, pair.tunnel_b  # the side that has the endpoint

    # The responder has no endpoint, so only the initiator can start the handshake.
    assert pair.b.endpoints()[pair.a.public_key] == "(none)"
    first_ns.wait_ping(first_target, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == f"{pair.underlay_a}:{pair.port_a}"
    subject_ns.wait_ping(other_ip, timeout=10)
    other_ns.wait_ping(subject_ip, timeout=10)

    up = tcp_transfer(subject_ns, other_ns, other_ip, TRANSFER_BYTES, timeout=30)
    assert up.intact, up
    down = tcp_transfer(other_ns, subject_ns, subject_ip, TRANSFER_BYTES,
                        port=5202, timeout=30)
    assert down.intact, down

    # `wg show` against the subject's interface reports the handshake and the traffic.
    handshake = subject.latest_handshakes()[other.public_key]
    assert started - 1 <= handshake <= int(time.time()) + 1
    assert abs(handshake - other.latest_handshakes()[subject.public_key]) <= 5

    # Totals: each side received at least what was moved to it, and never more than the
    # other side sent (bulk TCP may lose datagrams to full socket buffers, so tx >= rx).
    s_rx, s_tx = subject.transfer()[other.public_key]
    o_rx, o_tx = other.transfer()[subject.public_key]
    assert s_rx >= TRANSFER_BYTES and s_tx >= TRANSFER_BYTES, (s_rx, s_tx)
    assert s_rx <= o_tx + 4096 and o_rx <= s_tx + 4096, ((s_rx, s_tx), (o_rx, o_tx))

    # Paced traffic loses nothing: the counter deltas must then agree across the two
    # implementations (subject rx ~ wireguard-go tx and the reverse).
    before_s, before_o = subject.transfer()[other.public_key], other.transfer()[subject.public_key]
    paced = tcp_transfer(other_ns, subject_ns, subject_ip, seconds=1.5, rate=1_000_000,
                         port=5203, timeout=30)
    assert paced.intact, paced

    def deltas() -> tuple[int, int, int, int]:
        (s_rx, s_tx), (o_rx, o_tx) = (subject.transfer()[other.public_key],
                                      other.transfer()[subject.public_key])
        return (s_rx - before_s[0], s_tx - before_s[1], o_rx - before_o[0], o_tx - before_o[1])

    def agreeing() -> tuple[int, int, int, int] | None:
        d = deltas()
        return d if _counters_agree(d[0], d[3]) and _counters_agree(d[1], d[2]) else None
    d_s_rx, _, _, _ = poll(
        agreeing, 10, interval=0.2,
        what=lambda: f"subject rx/tx deltas to match wireguard-go tx/rx: "
                        f"(s_rx, s_tx, o_rx, o_tx) = {deltas()}")
    assert d_s_rx >= paced.received_bytes
    assert f"peer: {other.public_key}" in subject.show()
    if psk:
        assert subject.show("preshared-keys").split()[-1] == psk
