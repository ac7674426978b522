"""meshwg's tests, laid out like the packages they test (tests/meshwg/core tests meshwg/core)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent   # the checkout's top folder
