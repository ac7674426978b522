"""Invite tokens (discovery.enroll.tokens.decode_token). Refusal: TokenError.

The first byte chooses the input's form: even -- the rest is the text as typed or pasted
(undecodable bytes replaced); odd -- the rest is a token body, which the harness wraps as
"mwg1." + base64url(body + checksum), so mutations get past the checksum to the fields."""

from __future__ import annotations

import base64
import hashlib

from discovery.enroll.tokens import (
    TOKEN_PREFIX, RendezvousRef, Token, TokenError, decode_token, encode_token,
)
from fuzz.targets._keys import public

ALLOWED = (TokenError,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b"mwg1.", b"\x01", b"\x02", b":", b"[", b"]", b"%", b"\x00\x00")


def wrap(body: bytes) -> str:
    packed = body + hashlib.sha256(body).digest()[:4]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def one_input(data: bytes) -> None:
    if data and data[0] & 1:
        decode_token(wrap(data[1:]))
    else:
        decode_token(data[1:].decode("utf-8", "replace"))


def sample_token(**changes) -> Token:
    fields = dict(endpoint="203.0.113.5:51820", rendezvous_public_key=public("rendezvous"),
                  invite_id="0123456789abcdef" * 2, secret=bytes(range(32)),
                  expires_at=1_900_000_000, mesh_id="fedcba9876543210" * 2, enroll_port=51821)
    fields.update(changes)
    return Token(**fields)


def seeds() -> dict[str, bytes]:
    out = {}
    tokens = [("v4", sample_token()),
              ("v6-no-expiry", sample_token(endpoint="[2001:db8::5]:51820", expires_at=None))]
    if "relay_pin" in Token.__dataclass_fields__:      # format 2: the relay's TCP port and pin
        tokens.append(("relay-pin", sample_token(relay_tcp_port=443, relay_pin=b"\x11" * 32)))
    # format 3: the mesh's other rendezvous
    others = (RendezvousRef(public("rendezvous b"), "198.51.100.7:51820", 51821, "100.64.0.2",
                            b"\x22" * 32, 443),
              RendezvousRef(public("rendezvous c"), "[2001:db8::c]:4500", 8443))
    tokens += [("others", sample_token(others=others)),
               ("others-relay-pin", sample_token(relay_tcp_port=443, relay_pin=b"\x11" * 32,
                                                 others=others[:1]))]
    for label, token in tokens:
        text = encode_token(token)
        payload = text[len(TOKEN_PREFIX):]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        out[f"text-{label}"] = b"\x00" + text.encode()
        out[f"body-{label}"] = b"\x01" + raw[:-4]
    return out
