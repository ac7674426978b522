"""Bounded JSON for outside input (meshwg/util/jsonbound.py), issue 9 case 7."""

from __future__ import annotations

import json

import pytest

from meshwg.util.jsonbound import MAX_DEPTH, JSONLimitError, loads_bounded


def test_ordinary_documents_parse() -> None:
    doc = {"v": 1, "a": [1, 2.5, -3, "x]}[{"], "b": {"c": None, "d": True}, "n": 2**63}
    assert loads_bounded(json.dumps(doc), 4096) == doc
    assert loads_bounded(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, 100) is not None


@pytest.mark.parametrize("data, match", [
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested"),
    (b"[" * 100_000, "nested"),                            # RecursionError without the check
    (b'{"a":' + b"9" * 5000 + b"}", "number of 5000"),     # int's digit limit, CPU
    (b"1" * 40, "number of 40"), (b"1e99999", "out of range"),
    (b"NaN", "not a JSON number"), (b"-Infinity", "not a JSON number"),
    (b'"' + b"a" * 200 + b'"', "bytes of JSON"),
    (b"\xff\xfe", "UTF-8"), (b"{", "not valid JSON"), (b"", "not valid JSON"),
])
def test_hostile_documents_are_one_error(data: bytes, match: str) -> None:
    with pytest.raises(JSONLimitError, match=match):
        loads_bounded(data, 150 if b"a" * 200 in data else 200_000)


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"k": "' + "[" * 50 + '\\"' + "{" * 50 + '"}'
    assert loads_bounded(text, 1000)["k"].startswith("[[")
