"""Candidate reports as the rendezvous reads them (discovery.traversal.report: one JSON
line through meshwg.util.jsonbound.loads_bounded, then parse_candidates, parse_nat,
parse_relay_port). Refusal: ValueError (JSONLimitError is one) and AttributeError (a JSON
document that is not an object) -- exactly what CandidateReportServer drops and counts."""

from __future__ import annotations

from discovery.traversal.report import (MAX_REPORT, parse_candidates, parse_nat,
                                        parse_relay_port)
from meshwg.util.jsonbound import loads_bounded

ALLOWED = (ValueError, AttributeError)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b'"candidates"', b'"nat"', b'"relay"', b"[", b"]", b"{", b"}", b",", b":", b'"',
          b"null", b"1e999", b"[2001:db8::1]:1", b"%eth0", b"\\ud800")


def one_input(data: bytes) -> None:
    message = loads_bounded(data, MAX_REPORT)
    parse_candidates(message.get("candidates"))
    parse_nat(message.get("nat"))
    parse_relay_port(message.get("relay"))


def seeds() -> dict[str, bytes]:
    return {
        "report": b'{"candidates": ["198.51.100.7:51820", "[2001:db8::7]:51820"], '
                  b'"nat": "easy", "relay": 3478}\n',
        "minimal": b'{"candidates": []}\n',
    }
