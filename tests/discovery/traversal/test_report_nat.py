"""A candidate report's NAT kind (discovery.traversal.report "nat"): delivered to on_nat,
absent means unknown, anything but "hard" / "easy" makes the report malformed (dropped,
counted, refused)."""

from __future__ import annotations

import queue
import socket

import pytest

from discovery.traversal.report import CandidateReportServer, ReportError, parse_nat, send_report


@pytest.fixture
def server():
    kinds: queue.Queue = queue.Queue()
    srv = CandidateReportServer("127.0.0.1", 0, lambda source, c: None,
                                on_nat=lambda source, kind: kinds.put((source, kind))).start()
    try:
        yield srv, kinds
    finally:
        srv.stop()


@pytest.mark.parametrize("kind", ["hard", "easy", None])
def test_the_nat_kind_reaches_on_nat(server, kind) -> None:
    srv, kinds = server
    send_report("127.0.0.1", srv.port, ["10.1.0.10:51821"], nat=kind)
    assert kinds.get(timeout=5) == ("127.0.0.1", kind)
    assert srv.received == 1 and srv.dropped == 0


@pytest.mark.parametrize("value", ["symmetric", "", 1, True, ["hard"]])
def test_a_bad_nat_value_is_refused_and_counted(server, value) -> None:
    srv, kinds = server
    with pytest.raises(ValueError):
        parse_nat(value)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b'{"candidates": [], "nat": %s}\n' % repr(value).replace("'", '"')
                     .replace("True", "true").encode())
        assert b'"ok": false' in sock.recv(256)
    assert srv.dropped == 1 and kinds.empty()


def test_sending_a_bad_kind_is_a_report_error(server) -> None:
    srv, _ = server
    with pytest.raises(ReportError):
        send_report("127.0.0.1", srv.port, [], nat="open")
