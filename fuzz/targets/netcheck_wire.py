"""netcheck probes and answers (discovery.netcheck.wire.parse_request / parse_answer):
anything that is not one is None, never an exception."""

from __future__ import annotations

from discovery.netcheck import wire

ALLOWED: tuple[type[BaseException], ...] = ()


def one_input(data: bytes) -> None:
    wire.parse_request(data)
    wire.parse_answer(data)


def seeds() -> dict[str, bytes]:
    txid = bytes(range(12))[: len(wire.new_txid())]
    return {
        "request": wire.encode_request(txid),
        "answer-v4": wire.encode_answer(txid, ("198.51.100.7", 40000)),
        "answer-v6": wire.encode_answer(txid, ("2001:db8::7", 40001)),
        "answer-mapped": wire.encode_answer(txid, ("::ffff:192.0.2.1", 1)),
    }
