"""Fixtures of the TUN offload tests."""

from __future__ import annotations

import pytest

from meshwg import accel
from meshwg.tun import checksum


@pytest.fixture(params=["compiled", "numpy", "pure"])
def checksum_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the compiled sums and TSO split (meshwg.accel, when built), the
    vectorised sums (numpy, when installed) and the pure-Python ones."""
    if request.param == "compiled":
        fast = accel.select(True, warn=False)
        if fast is None:
            pytest.skip("compiled data path not built")
        monkeypatch.setattr(checksum, "_compiled", fast)
        return request.param
    monkeypatch.setattr(checksum, "_compiled", None)
    if request.param == "numpy":
        if checksum.numpy_module() is None:
            pytest.skip("numpy not installed: only the pure-Python path exists here")
    else:
        monkeypatch.setattr(checksum, "_np", None)
    return request.param
