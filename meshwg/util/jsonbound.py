"""JSON from outside input, bounded: size, nesting depth and number length.

`json.loads` alone lets a peer send a 100,000-level nesting (RecursionError), a
5,000-digit integer (ValueError from int's digit limit, or seconds of CPU) or NaN. Every
parser of network or on-disk input that a peer can write goes through `loads_bounded`,
which refuses each of those with one JSONLimitError (a ValueError) naming the limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from meshwg.util.errors import MeshwgError

MAX_DEPTH = 8                # nested arrays/objects
MAX_NUMBER_LENGTH = 32       # characters of one number literal (a u64 has 20 digits)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


class JSONLimitError(MeshwgError, ValueError):
    """Outside JSON that is malformed or exceeds a limit; the message says which."""


def _number(limit: int, kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > limit:
            raise JSONLimitError(f"a number of {len(text)} characters (limit {limit})")
        value = kind(text)
        if not math.isfinite(value):
            raise JSONLimitError(f"number {text} is out of range")
        return value
    return parse


def _constant(text: str) -> Any:
    raise JSONLimitError(f"{text} is not a JSON number")


def _depth(data: bytes) -> int:
    """Deepest nesting of arrays/objects in `data` (string contents ignored)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub(b'""', data)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(data: bytes | str, max_size: int, *, max_depth: int = MAX_DEPTH,
                  max_number: int = MAX_NUMBER_LENGTH) -> Any:
    """Parse one JSON document of at most `max_size` bytes, `max_depth` levels and
    numbers of at most `max_number` characters; JSONLimitError (a ValueError) otherwise,
    also for invalid UTF-8 or JSON. NaN and Infinity are refused."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_size:
        raise JSONLimitError(f"{len(raw)} bytes of JSON (limit {max_size})")
    deepest = _depth(raw)
    if deepest > max_depth:
        raise JSONLimitError(f"JSON nested {deepest} levels deep (limit {max_depth})")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_number(max_number, int),
                          parse_float=_number(max_number, float), parse_constant=_constant)
    except JSONLimitError:
        raise
    except UnicodeDecodeError:
        raise JSONLimitError("JSON that is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise JSONLimitError(f"not valid JSON ({exc})") from None
