"""TSIG key files (discovery.dnssd.tsig_file.read_tsig_key: the file given to
``rendezvous init --tsig-key``, in tsig-keygen's named.conf syntax). Refusal: TsigKeyError.

The input is the file's bytes, written to one temporary file the target reuses (removed
at exit; the reader's size bound, ASCII check and FILE:LINE errors are fuzzed too). An
accepted key must be a valid dnspython key: its name a DNS name, its algorithm one of
ALGORITHMS and its secret non-empty."""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import tempfile

from discovery.dnssd.tsig_file import ALGORITHMS, MAX_FILE_BYTES, TsigKeyError, read_tsig_key

ALLOWED = (TsigKeyError,)
MAX_LEN = MAX_FILE_BYTES + 64       # past the size bound
TOKENS = (b"key", b"algorithm", b"secret", b"{", b"}", b";", b"\"", b"hmac-sha256",
          b"hmac-md5", b"/*", b"*/", b"//", b"#", b"\n", b"\t", b"==", b"\\", b".")

# tmpfs when there is one: truncating a file on a disk costs ~3 ms, on tmpfs ~40 us
_FOLDER = tempfile.mkdtemp(prefix="meshwg-fuzz-tsig-",
                           dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
_PATH = os.path.join(_FOLDER, "key")


@atexit.register
def _remove() -> None:
    for path in (_PATH, _FOLDER):
        try:
            (os.rmdir if path == _FOLDER else os.unlink)(path)
        except OSError:
            pass


def one_input(data: bytes) -> None:
    with open(_PATH, "wb") as handle:
        handle.write(data)
    key = read_tsig_key(_PATH)
    assert key.algorithm in ALGORITHMS and key.secret and key.name
    key.keyring()          # dnspython takes the name, algorithm and secret


def _keygen(name: str, algorithm: str, size: int) -> bytes:
    """A file as ``tsig-keygen -a ALGORITHM NAME`` prints it (a fixed secret)."""
    secret = base64.b64encode(hashlib.shake_256(name.encode()).digest(size)).decode()
    return (f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n').encode()


def seeds() -> dict[str, bytes]:
    return {
        "keygen-sha256": _keygen("meshwg-update.", "hmac-sha256", 32),
        "keygen-sha512": _keygen("transfer", "hmac-sha512", 64),
        "keygen-md5": _keygen("legacy.example.", "hmac-md5", 16),
        "comments": (b"# made by tsig-keygen\n/* the update key */\nkey \"k.example\" {\n"
                     b"  algorithm \"HMAC-SHA256\"; // quoted, upper case\n"
                     b"  secret \"" + base64.b64encode(bytes(range(32))) + b"\";\r\n};\n"),
        "one-line": b'key k { secret "AAECAwQFBgcICQoLDA0ODw=="; algorithm hmac-sha1; };',
    }
