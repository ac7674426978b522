"""The reply to get=1 as clients read it (meshwg.uapi.codec.parse_get). Refusal: UapiError."""

from __future__ import annotations

from meshwg.uapi.codec import UapiError, parse_get

ALLOWED = (UapiError,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b"\n", b"=", b"public_key=", b"endpoint=", b"allowed_ip=", b"tx_bytes=",
          b"last_handshake_time_sec=", b"last_handshake_time_nsec=", b"preshared_key=")


def one_input(data: bytes) -> None:
    parse_get(data.decode("utf-8", "replace").split("\n"))


def seeds() -> dict[str, bytes]:
    return {"status": (f"private_key={'e8' * 32}\nlisten_port=51820\nfwmark=0\n"
                       f"public_key={'b1' * 32}\npreshared_key={'00' * 32}\n"
                       "endpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\n"
                       "last_handshake_time_nsec=5\ntx_bytes=100\nrx_bytes=200\n"
                       "persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\n"
                       "allowed_ip=fd00::2/128\nprotocol_version=1\n").encode()}
