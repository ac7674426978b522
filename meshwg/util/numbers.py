"""Decimal numbers read from outside text, bounded before they are converted."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def bounded_int(text: str, high: int, low: int = 0) -> int | None:
    """A decimal number in low..high (ASCII digits only; leading zeros allowed, as strtoul
    reads them), or None; never converts more digits than `high` has (so a line of 5,000
    digits is refused, not a ValueError from int's digit limit)."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        return None
    return int(digits)
