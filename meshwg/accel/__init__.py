"""The compiled data path: meshwg.accel._fastpath, a C extension over OpenSSL's libcrypto
(EVP ChaCha20-Poly1305, one context per key) that seals and opens WireGuard transport
messages (header, counter nonce, padding; one packet or a run of them per call, the GIL
released around runs) and sums the checksums of many pieces of a buffer.

It is optional: built by `pip install` where a compiler and libssl-dev exist
(setup.py), else meshwg runs its pure Python path (cryptography's AEAD objects), which
stays selectable: MESHWG_FASTPATH=0, `meshwg up --no-fastpath`, Device(fastpath=False).
Python keeps every decision either way (keys, counters, replay window, routing, timers).

meshwg.accel._noise, also optional (libsodium-dev as well), runs the handshake's chain
(meshwg.core.noise's steps: X25519 and ChaCha20-Poly1305 from libsodium, BLAKE2s from
libcrypto); select_handshake picks it with the same switch as the data path.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Mapping

try:
    from meshwg.accel import _fastpath as _compiled
except ImportError as exc:          # pragma: no cover - depends on the build
    _compiled = None
    _import_error = str(exc)
else:
    _import_error = ""

try:        # the handshake chain (meshwg.core.noise's steps over libsodium and libcrypto)
    from meshwg.accel import _noise as _noise_compiled
except ImportError as exc:          # pragma: no cover - depends on the build
    _noise_compiled = None
    _noise_import_error = str(exc)
else:
    _noise_import_error = ""

log = logging.getLogger("meshwg.accel")
_warned = False
_noise_warned = False
OFF_VALUES = ("0", "false", "no", "off")


def available() -> bool:
    """Is the compiled extension built and importable?"""
    return _compiled is not None


def wanted_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """MESHWG_FASTPATH: "0", "false", "no" or "off" asks for the pure Python path;
    unset or anything else for the compiled one."""
    return environ.get("MESHWG_FASTPATH", "").strip().lower() not in OFF_VALUES


def select(enabled: bool | None = None, warn: bool = True) -> ModuleType | None:
    """The compiled module to seal and open with, or None for the pure Python path.
    `enabled` None follows MESHWG_FASTPATH (wanted_from_env). When the compiled path is
    wanted but not built, logs one warning line (once per process, unless `warn` is
    false) and returns None."""
    global _warned
    if enabled is None:
        enabled = wanted_from_env()
    if not enabled:
        return None
    if _compiled is None and warn and not _warned:
        _warned = True
        log.warning("compiled data path not built (%s): using the pure Python path; "
                    "install gcc, libssl-dev and python3-dev and reinstall meshwg", _import_error)
    return _compiled


def select_handshake(enabled: bool | None = None, warn: bool = True) -> ModuleType | None:
    """The compiled handshake chain (meshwg.accel._noise) or None for the Python one,
    chosen as select() chooses the data path (same switch, same one-time warning)."""
    global _noise_warned
    if enabled is None:
        enabled = wanted_from_env()
    if not enabled:
        return None
    if _noise_compiled is None and warn and not _noise_warned:
        _noise_warned = True
        log.warning("compiled handshake chain not built (%s): using the pure Python one; "
                    "install gcc, libssl-dev, libsodium-dev, libgcrypt20-dev and python3-dev "
                    "and reinstall meshwg", _noise_import_error)
    return _noise_compiled


def describe(module: ModuleType | None) -> str:
    """One line naming a data path select() returned, for status and `meshwg version`."""
    if module is None:
        return "pure Python (cryptography)" + ("" if available() else ", compiled path not built")
    return f"compiled ({module.OPENSSL_VERSION})"
