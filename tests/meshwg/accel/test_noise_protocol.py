"""The protocol's handshake tests again, with the compiled handshake chain
(WireGuardProtocol.handshake_accel set for every protocol a test makes), and pairs where
one side runs the compiled chain and the other the Python one."""

from __future__ import annotations

import pytest

from meshwg import accel
from meshwg.core.handshake import Handshakes
from tests.meshwg.core import harness
# The Python chain runs these in tests/meshwg/core; here they run on the compiled one.
from tests.meshwg.core.test_handshake_fast import *  # noqa: F401,F403
from tests.meshwg.core.test_path_events import *  # noqa: F401,F403
from tests.meshwg.core.test_protocol import *  # noqa: F401,F403
from tests.meshwg.core.test_protocol_timers import *  # noqa: F401,F403
from tests.meshwg.core.test_wall_clock import *  # noqa: F401,F403
# last: its `pair` fixture has the name of the harness's pair() the others import
from tests.meshwg.core.test_cookie import *  # noqa: F401,F403,E402

fast = accel.select_handshake(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled handshake chain not built")


@pytest.fixture(autouse=True)
def compiled_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Handshakes, "handshake_accel", fast)


@pytest.mark.parametrize("initiator_fast,responder_fast", [(True, False), (False, True)])
def test_one_side_compiled_the_other_python(initiator_fast: bool, responder_fast: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Handshakes, "handshake_accel", None)
    net, a, b = harness.pair()
    a.protocol.handshake_accel = fast if initiator_fast else None
    b.protocol.handshake_accel = fast if responder_fast else None
    for _round in range(3):                      # rekeys too: each handshake a fresh one
        before = a.peer(b).current
        a.protocol.initiate_handshake(a.peer(b), net.now)
        net.pump()
        assert a.peer(b).current is not before and a.peer(b).current is not None
        packet, back = a.packet_to(b, b"over the new session"), b.packet_to(a, b"and back")
        a.send(packet)
        b.send(back)
        net.pump()
        assert b.received[-1][1] == packet and a.received[-1][1] == back
        net.now += 1.0
    assert a.protocol.stats.get("handshake_failed", 0) == b.protocol.stats.get("handshake_failed", 0) == 0


def test_established_pair_on_the_compiled_chain() -> None:
    net, a, b = harness.established()
    assert a.protocol.handshake_accel is fast and b.protocol.handshake_accel is fast
    assert a.peer(b).current is not None and b.peer(a).current is not None
