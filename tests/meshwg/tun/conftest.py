"""Fixtures of the TUN offload tests."""

from __future__ import annotations

import pytest

from meshwg.tun import checksum


@pytest.fixture(params=["numpy", "pure"])
def checksum_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the vectorised (numpy, when installed) and the pure-Python sums."""
    if request.param == "numpy":
        if checksum.numpy_module() is None:
            pytest.skip("numpy not installed: only the pure-Python path exists here")
    else:
        monkeypatch.setattr(checksum, "_np", None)
    return request.param
