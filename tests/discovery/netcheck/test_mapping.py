"""discovery.netcheck.mapping: which rendezvous address the engine uses and where the other
families are observed; the observer's schedule and what answers it accepts (I/O-free)."""

from __future__ import annotations

import itertools

import pytest

from discovery.netcheck import wire
from discovery.netcheck.mapping import (
    MAX_PENDING, REFRESH, RETRY_SCHEDULE, STALE_AFTER, MappingObserver, choose_rendezvous,
)

V4, V6 = ("198.18.0.10", 51820), ("fd5e:1ab::10", 51820)
T4, T6 = ("198.18.0.10", 51822), ("fd5e:1ab::10", 51822)


def routes(*families: int):
    return lambda ip: (6 if ":" in ip else 4) in families


def test_dual_stack_member_uses_the_first_address_and_observes_the_other_family() -> None:
    assert choose_rendezvous([V6, V4], routes(4, 6)) == (V6, [T4])
    assert choose_rendezvous([V4, V6], routes(4, 6)) == (V4, [T6])


def test_single_stack_members_use_their_family_and_observe_nothing_else() -> None:
    assert choose_rendezvous([V6, V4], routes(4)) == (V4, [])        # IPv4 only: AAAA first
    assert choose_rendezvous([V4, V6], routes(6)) == (V6, [])        # IPv6 only: A first
    assert choose_rendezvous([V4, V6], routes()) == (V4, [])         # no route: the first
    assert choose_rendezvous([("::ffff:198.18.0.10", 51820)], routes(4)) == (V4, [])


def test_one_target_per_family() -> None:
    other = ("198.18.0.11", 51820)
    assert choose_rendezvous([V6, V4, other], routes(4, 6)) == (V6, [T4])
    with pytest.raises(ValueError):
        choose_rendezvous([], routes(4))


class Txids:
    def __init__(self) -> None:
        self.counter = itertools.count()

    def __call__(self) -> bytes:
        return next(self.counter).to_bytes(wire.TXID_SIZE, "big")


def sent_txid(request: bytes) -> bytes:
    txid = wire.parse_request(request)
    assert txid is not None
    return txid


def test_requests_follow_the_retry_schedule_until_answered_then_refresh() -> None:
    obs = MappingObserver([T4], now=100.0, new_txid=Txids())
    times = []
    now = 100.0
    for _ in range(len(RETRY_SCHEDULE) + 1):
        now = obs.next_deadline()
        requests, changed = obs.due(now)
        assert [target for _, target in requests] == [T4] and not changed
        times.append(now - 100.0)
    assert times == list(RETRY_SCHEDULE) + [RETRY_SCHEDULE[-1] + REFRESH]
    assert obs.due(now) == ([], False)            # nothing due before the deadline


def test_an_answer_from_the_target_is_the_reflexive_endpoint() -> None:
    obs = MappingObserver([T4], now=0.0, new_txid=Txids())
    (request, target), = obs.due(0.0)[0]
    answer = wire.encode_answer(sent_txid(request), ("198.18.1.1", 40007))
    assert obs.answer(answer, T4, 0.05)
    assert obs.endpoints() == [("198.18.1.1", 40007)]
    assert obs.next_deadline() == pytest.approx(0.05 + REFRESH)   # no more retries
    assert not obs.answer(answer, T4, 0.06)       # each id is answered once
    assert obs.answered == 1 and obs.dropped == 1


@pytest.mark.parametrize("source, observed, txid", [
    (("198.18.0.99", 51822), ("198.18.1.1", 40007), None),     # not the responder
    (("198.18.0.10", 51823), ("198.18.1.1", 40007), None),     # the responder's other port
    (T4, ("198.18.1.1", 40007), b"\x99" * wire.TXID_SIZE),     # an id never sent
    (T4, ("fd5e:1ab::20", 40007), None),                       # the wrong family
])
def test_forged_or_stray_answers_are_dropped(source, observed, txid) -> None:
    obs = MappingObserver([T4], now=0.0, new_txid=Txids())
    (request, _), = obs.due(0.0)[0]
    answer = wire.encode_answer(txid or sent_txid(request), observed)
    assert not obs.answer(answer, source, 0.1)
    assert obs.endpoints() == [] and obs.dropped == 1


def test_garbage_is_dropped() -> None:
    obs = MappingObserver([T4], now=0.0)
    obs.due(0.0)
    for data in (b"", b"MWNC", wire.encode_request(b"\x00" * wire.TXID_SIZE), bytes(300)):
        assert not obs.answer(data, T4, 0.1)
    assert obs.dropped == 4


def test_pending_ids_are_bounded() -> None:
    obs = MappingObserver([T4], now=0.0, new_txid=Txids())
    first = sent_txid(obs.due(0.0)[0][0][0])
    for attempt in range(MAX_PENDING):
        obs.due(RETRY_SCHEDULE[attempt + 1])
    # the oldest id was forgotten: its late answer no longer counts
    assert not obs.answer(wire.encode_answer(first, ("198.18.1.1", 40007)), T4, 9.0)


def test_a_late_answer_to_an_earlier_retry_counts() -> None:
    obs = MappingObserver([T4], now=0.0, new_txid=Txids())
    first = sent_txid(obs.due(0.0)[0][0][0])
    obs.due(RETRY_SCHEDULE[1])
    assert obs.answer(wire.encode_answer(first, ("198.18.1.1", 40007)), T4, 1.5)


def test_a_moved_mapping_is_a_change_and_a_silent_one_goes_stale() -> None:
    obs = MappingObserver([T4], now=0.0, new_txid=Txids())
    request = obs.due(0.0)[0][0][0]
    assert obs.answer(wire.encode_answer(sent_txid(request), ("198.18.1.1", 40007)), T4, 0.1)
    now = obs.next_deadline()
    request = obs.due(now)[0][0][0]
    assert not obs.answer(wire.encode_answer(sent_txid(request), ("198.18.1.1", 40007)), T4, now)
    now = obs.next_deadline()
    request = obs.due(now)[0][0][0]
    assert obs.answer(wire.encode_answer(sent_txid(request), ("198.18.1.1", 40011)), T4, now)
    assert obs.endpoints() == [("198.18.1.1", 40011)]
    # no answer any more: dropped once STALE_AFTER passed, and the retry schedule restarts
    confirmed = now
    for _ in range(10):
        now = obs.next_deadline()
        requests, changed = obs.due(now)
        if changed:
            break
        assert obs.endpoints() == [("198.18.1.1", 40011)] and now < confirmed + STALE_AFTER
    assert changed and now == pytest.approx(confirmed + STALE_AFTER)
    assert obs.endpoints() == [] and requests
    assert obs.next_deadline() == pytest.approx(now + RETRY_SCHEDULE[1])


def test_targets_change_keeps_what_stays() -> None:
    obs = MappingObserver([T4, T6], now=0.0, new_txid=Txids())
    requests = dict((target, data) for data, target in obs.due(0.0)[0])
    assert obs.answer(wire.encode_answer(sent_txid(requests[T4]), ("198.18.1.1", 40007)), T4, 0.1)
    assert obs.answer(wire.encode_answer(sent_txid(requests[T6]), ("fd5e:1ab::20", 51821)), T6, 0.1)
    assert obs.endpoints() == [("198.18.1.1", 40007), ("fd5e:1ab::20", 51821)]
    assert obs.set_targets([T4], 5.0)             # IPv6 gone
    assert obs.endpoints() == [("198.18.1.1", 40007)]
    assert not obs.set_targets([T4], 6.0)
    obs.refresh(6.0)                              # our addresses changed: observe now
    assert [target for _, target in obs.due(6.0)[0]] == [T4]
    assert MappingObserver([], now=0.0).next_deadline() is None
