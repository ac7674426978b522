"""Candidate reports (discovery.traversal.report) over TCP on loopback: delivered, validated,
hostile input dropped and counted, the server stops at once."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest

from discovery.traversal.report import (MAX_CANDIDATES, CandidateReportServer, ReportError,
                                        parse_candidates, send_report)
from meshwg.util.errors import MeshwgError


@pytest.fixture
def server():
    reports: queue.Queue = queue.Queue()
    srv = CandidateReportServer("127.0.0.1", 0, lambda source, c: reports.put((source, c))).start()
    try:
        yield srv, reports
    finally:
        srv.stop()


def test_report_is_delivered_with_its_source_in_canonical_form(server):
    srv, reports = server
    send_report("127.0.0.1", srv.port, ["10.1.0.10:51821", "[fd00:0::5]:51821"])
    assert reports.get(timeout=5) == ("127.0.0.1", ["10.1.0.10:51821", "[fd00::5]:51821"])
    assert srv.received == 1 and srv.dropped == 0


@pytest.mark.parametrize("line", [
    b"not json\n",
    b'{"candidates": "10.1.0.10:1"}\n',
    b'{"candidates": ["host.example:1"]}\n',
    b'{"candidates": ["10.1.0.10:0"]}\n',
    b'{"candidates": [5]}\n',
    b'[1, 2]\n',
    b'{"candidates": [' + b",".join([b'"10.0.0.1:1"'] * (MAX_CANDIDATES + 1)) + b"]}\n",
    b'{"candidates": ["' + b"1" * 5000 + b'"]}\n',
])
def test_malformed_report_is_refused_and_counted(server, line):
    srv, reports = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(line)
        assert sock.recv(256) == b'{"ok": false}\n'
    assert srv.dropped == 1 and reports.empty()
    send_report("127.0.0.1", srv.port, ["10.1.0.10:51821"])      # still serving
    assert reports.get(timeout=5)[1] == ["10.1.0.10:51821"]


def test_sender_that_never_finishes_its_line_is_cut_off(server):
    srv, reports = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b'{"candidates": [')
        started = time.monotonic()
        assert sock.recv(256) == b'{"ok": false}\n'
        assert time.monotonic() - started < 5
    assert srv.dropped == 1


def test_failing_handler_refuses_and_the_server_goes_on():
    calls = []

    def on_report(source, candidates):
        calls.append(candidates)
        if len(calls) == 1:
            raise RuntimeError("store busy")
    srv = CandidateReportServer("127.0.0.1", 0, on_report).start()
    try:
        with pytest.raises(ReportError, match="refused"):
            send_report("127.0.0.1", srv.port, ["10.1.0.10:1"])
        send_report("127.0.0.1", srv.port, ["10.1.0.10:2"])
        assert calls == [["10.1.0.10:1"], ["10.1.0.10:2"]]
    finally:
        srv.stop()


def test_unreachable_rendezvous_is_one_meshwg_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]            # bound, not listening: connection refused
        with pytest.raises(MeshwgError, match=f"127.0.0.1:{port}"):
            send_report("127.0.0.1", port, [], timeout=2)


def test_stop_is_prompt_while_a_sender_is_silent(server):
    srv, _ = server
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        time.sleep(0.05)                         # let the server start waiting on the line
        started = time.monotonic()
        done = threading.Thread(target=srv.stop)
        done.start()
        done.join(5)
        assert not done.is_alive() and time.monotonic() - started < 1.0
    finally:
        sock.close()


def test_parse_candidates_names_the_bad_item():
    with pytest.raises(ValueError, match="nope"):
        parse_candidates(["nope"])


def test_a_silent_sender_does_not_hold_up_the_others(server):
    """Connections are served at once each (meshwg.util.service.serve_connections): a
    member's report is answered while another connection sends nothing."""
    srv, reports = server
    silent = socket.create_connection(("127.0.0.1", srv.port))
    try:
        send_report("127.0.0.1", srv.port, ["10.1.0.10:51821"], timeout=5.0)
        assert reports.get(timeout=5) == ("127.0.0.1", ["10.1.0.10:51821"])
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):    # still waited on: the report did not queue behind it
            silent.recv(64)
    finally:
        silent.close()


def test_a_relay_offer_rides_along_and_its_absence_withdraws_it():
    offers: queue.Queue = queue.Queue()
    srv = CandidateReportServer("127.0.0.1", 0, lambda source, c: None,
                                on_relay=lambda source, port: offers.put((source, port))).start()
    try:
        send_report("127.0.0.1", srv.port, ["10.1.0.10:51821"], relay_port=51831)
        assert offers.get(timeout=5) == ("127.0.0.1", 51831)
        send_report("127.0.0.1", srv.port, ["10.1.0.10:51821"])
        assert offers.get(timeout=5) == ("127.0.0.1", None)
        for bad in (b'"51831"', b"0", b"70000", b"true"):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(b'{"candidates": [], "relay": ' + bad + b"}\n")
                assert sock.recv(256) == b'{"ok": false}\n'
        assert srv.dropped == 4 and offers.empty()
    finally:
        srv.stop()
