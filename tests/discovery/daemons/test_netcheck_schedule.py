"""The member's background netcheck (discovery.daemons.netcheck_schedule) against a real
observation responder on loopback: it checks soon after start without a saved report,
saves what it found as `meshwg netcheck --state` does, hands the facts over and then
sleeps for the period; it leaves a recent report alone, and a rendezvous that does not
answer saves nothing and is asked again after the back-off."""

from __future__ import annotations

import socket
import threading

from discovery.daemons.netcheck_schedule import BackgroundNetcheck
from discovery.lab.netns import poll
from discovery.netcheck.facts import checked_at, own_facts, save_report
from discovery.netcheck.schedule import PERIOD, RETRY
from tests.discovery.netcheck.test_responder import responder  # noqa: F401 -- the fixture

DEADLINE = 30.0        # seconds: on a loaded machine, not a speed claim


def _collector():
    got: list = []
    event = threading.Event()

    def on_facts(facts):
        got.append(facts)
        event.set()
    return got, event, on_facts


def test_checks_at_start_saves_the_report_and_hands_the_facts_over(responder, tmp_path):  # noqa: F811
    base, server = responder
    got, event, on_facts = _collector()
    check = BackgroundNetcheck(str(tmp_path), f"127.0.0.1:{base}", on_facts).start()
    try:
        assert event.wait(DEADLINE), f"no facts: {check.status()}"
        assert got == [({4}, False)]          # loopback: IPv4 answers, the same mapping
        saved = checked_at(tmp_path)
        assert saved is not None and own_facts(tmp_path, saved) == ({4}, False)
        status = check.status()
        assert status["checks"] == 1 and status["error"] is None
        assert status["next_at"] >= saved + PERIOD - 1
    finally:
        check.stop()


def test_a_recent_report_is_not_checked_again(tmp_path):
    save_report(tmp_path, {"udp": True, "ipv4": True, "hard_nat": True}, now=1000.0)
    got, _, on_facts = _collector()
    check = BackgroundNetcheck(str(tmp_path), "127.0.0.1:9", on_facts, clock=lambda: 1010.0)
    assert check.schedule.due == 1000.0 + PERIOD
    assert check._round() == 1000.0 + PERIOD - 1010.0     # the loop sleeps until then
    assert check.checks == 0 and got == []


def test_no_answer_saves_nothing_and_retries_after_the_back_off(tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # a port where nothing answers
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    got, _, on_facts = _collector()
    check = BackgroundNetcheck(str(tmp_path), f"127.0.0.1:{port}", on_facts).start()
    try:
        poll(lambda: check.checks >= 1 and check.status()["error"] is not None, DEADLINE,
             "the first check")
        assert got == [] and checked_at(tmp_path) is None
        assert "no UDP answer" in check.status()["error"]
        assert check.schedule.due >= check.schedule.last_run + RETRY - 1
    finally:
        check.stop()


def test_an_unresolvable_rendezvous_is_an_error_not_a_crash(tmp_path):
    got, _, on_facts = _collector()
    check = BackgroundNetcheck(str(tmp_path), "no-such-host.invalid:51820", on_facts)
    assert check.check(0.0) is False
    assert "does not resolve" in check.status()["error"] and got == []
