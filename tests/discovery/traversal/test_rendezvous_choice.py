"""The member's choice of rendezvous (discovery/traversal/rendezvous_choice.py): which two
get tunnels, where the directory is read, failover, learning, bounds."""

from __future__ import annotations

import os

import pytest

from discovery.enroll.tokens import RendezvousRef
from discovery.traversal.rendezvous_choice import MAX_KNOWN, RendezvousChoice


def ref(i: int, address: str | None = None) -> RendezvousRef:
    return RendezvousRef(bytes([i]) * 32, f"rz{i}.example:51820", 51821,
                         f"10.0.0.{i}" if address is None else address)


def keys(refs) -> list[int]:
    return [r.public_key[0] for r in refs]


def test_one_rendezvous_changes_nothing() -> None:
    choice = RendezvousChoice([ref(1)])
    assert keys(choice.kept()) == [1]
    assert choice.failed(ref(1).public_key, "timeout", 10.0) is False
    assert choice.current == ref(1).public_key and choice.failovers == 0


def test_tunnels_to_two_reads_from_the_first() -> None:
    choice = RendezvousChoice([ref(1), ref(2), ref(3)])
    assert keys(choice.kept()) == [1, 2]
    assert choice.current == ref(1).public_key


def test_failover_to_the_second_then_a_third_gets_the_spare_tunnel() -> None:
    choice = RendezvousChoice([ref(1), ref(2), ref(3)])
    assert choice.failed(ref(1).public_key, "timeout", 10.0) is True
    assert choice.current == ref(2).public_key
    assert keys(choice.kept()) == [2, 3]          # the failing one is not kept while others are
    choice.answered(ref(1).public_key, 20.0)      # back: kept again as the spare (order)
    assert keys(choice.kept()) == [2, 3]          # after 2 in order: 3, then 1
    assert choice.status()[0]["answers"] is True


def test_with_two_the_failed_one_stays_the_spare_and_both_failing_do_not_rush() -> None:
    choice = RendezvousChoice([ref(1), ref(2)])
    assert choice.failed(ref(1).public_key, "timeout", 10.0) is True
    assert keys(choice.kept()) == [2, 1]
    # the second fails too: it alternates, but not "at once" (the daemon's backoff paces it)
    assert choice.failed(ref(2).public_key, "timeout", 11.0) is False
    assert choice.current == ref(1).public_key
    choice.answered(ref(1).public_key, 12.0)
    assert [row["answers"] for row in choice.status()] == [True, False]
    assert choice.status()[1]["error"] == "timeout"


def test_a_failing_spare_is_replaced_before_it_is_needed() -> None:
    choice = RendezvousChoice([ref(1), ref(2), ref(3)])
    assert choice.failed(ref(2).public_key, "timeout", 10.0) is False    # not current: no move
    assert choice.current == ref(1).public_key
    assert keys(choice.kept()) == [1, 3]


def test_learning_adds_with_an_address_only_bounded_and_says_when_kept_changes() -> None:
    choice = RendezvousChoice([ref(1)])
    assert choice.learn([ref(2, address="")]) is False          # no mesh address: no tunnel
    assert choice.learn([ref(2)]) is True
    assert keys(choice.kept()) == [1, 2]
    assert choice.learn([ref(i) for i in range(3, 40)]) is False
    assert len(choice.known) == MAX_KNOWN
    moved = RendezvousRef(ref(2).public_key, "elsewhere:1", 2, "10.0.0.2")
    choice.learn([moved])
    assert choice.ref(ref(2).public_key).endpoint == "elsewhere:1"


def test_a_member_needs_a_rendezvous_with_an_address() -> None:
    with pytest.raises(ValueError):
        RendezvousChoice([ref(1, address="")])
    choice = RendezvousChoice([ref(1)])
    assert choice.failed(os.urandom(32), "unknown", 1.0) is False     # not ours: ignored
