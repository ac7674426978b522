"""Which data path runs: MESHWG_FASTPATH, the engine option, the fallback with one
warning when the extension is missing, and what status and `meshwg --version` say."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from meshwg import accel
from meshwg.device.device import Device


def test_env_switch() -> None:
    assert accel.wanted_from_env({}) and accel.wanted_from_env({"MESHWG_FASTPATH": "1"})
    for off in ("0", "false", "no", "off", " OFF "):
        assert not accel.wanted_from_env({"MESHWG_FASTPATH": off})
    assert accel.select(False) is None


def test_missing_extension_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(accel, "_compiled", None)
    monkeypatch.setattr(accel, "_import_error", "No module named 'meshwg.accel._fastpath'")
    monkeypatch.setattr(accel, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="meshwg.accel"):
        assert accel.select(True) is None
        assert accel.select(None) is None
    warnings = [r for r in caplog.records if r.name == "meshwg.accel"]
    assert len(warnings) == 1 and "pure Python" in warnings[0].getMessage()
    assert accel.describe(None) == "pure Python (cryptography), compiled path not built"


@pytest.mark.skipif(not accel.available(), reason="compiled data path not built")
def test_device_option_and_description(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHWG_FASTPATH", raising=False)
    device = Device("mwtest0")            # not started: no interface, no socket
    try:
        assert device.protocol.fastpath is not None
        assert device.data_path.startswith("compiled (OpenSSL")
        device.use_fastpath(False)
        assert device.protocol.fastpath is None
        assert device.data_path == "pure Python (cryptography)"
        monkeypatch.setenv("MESHWG_FASTPATH", "0")
        device.use_fastpath(None)
        assert device.protocol.fastpath is None
    finally:
        device.stop()


def test_version_names_the_data_path() -> None:
    for value, expected in (("1", "compiled" if accel.available() else "pure Python"),
                            ("0", "pure Python")):
        out = subprocess.run([sys.executable, "-c", "from meshwg.cli import main; main()",
                              "--version"], capture_output=True, text=True,
                             env={"MESHWG_FASTPATH": value, "PATH": "/usr/bin:/bin"})
        assert f"(data path: {expected}" in out.stdout, out


def test_the_extension_is_built_where_the_build_packages_are() -> None:
    """`make test` installs gcc, libssl-dev and python3-dev and builds the extension with
    pip; where they are present the compiled path must be there, or CI would run the
    compiled-path tests as skips and call them passed."""
    import shutil
    import sysconfig
    from pathlib import Path
    headers = Path("/usr/include/openssl/evp.h").exists()
    python_h = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if not (shutil.which("gcc") and headers and python_h):
        pytest.skip("no gcc, libssl-dev or python3-dev here: the pure-Python path is expected")
    assert accel.available(), accel.describe(None)
