"""The control socket's set operation (meshwg.uapi.codec.parse_set), fed as the server
feeds it: lines of UTF-8 (undecodable bytes replaced). Refusal: UapiError."""

from __future__ import annotations

from meshwg.uapi.codec import UapiError, parse_set

ALLOWED = (UapiError,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b"\n", b"=", b"private_key=", b"public_key=", b"endpoint=", b"allowed_ip=",
          b"listen_port=", b"fwmark=", b"replace_peers=true", b"replace_allowed_ips=true",
          b"remove=true", b"update_only=true", b"persistent_keepalive_interval=",
          b"preshared_key=", b"protocol_version=1", b"[::1]:", b"/128", b"/0")


def one_input(data: bytes) -> None:
    parse_set(data.decode("utf-8", "replace").split("\n"))


def seeds() -> dict[str, bytes]:
    key = "e8" * 32
    return {
        "device": f"private_key={key}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n".encode(),
        "peer": (f"public_key={'b1' * 32}\npreshared_key={'00' * 32}\nendpoint=192.0.2.1:51820\n"
                 "persistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
                 "allowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\nprotocol_version=1\n").encode(),
        "peer-v6-remove": (f"public_key={'c2' * 32}\nendpoint=[2001:db8::1]:443\nremove=true\n"
                           f"public_key={'d3' * 32}\nupdate_only=true\n").encode(),
    }
