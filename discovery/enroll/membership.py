"""Is this key still a member? The question a member asks the rendezvous over the
enrollment port when the rendezvous stops answering through the tunnel, and the answer
only the real rendezvous can give. No I/O (the TCP exchange is
discovery.enroll.transport.ask_membership; the rendezvous answers in
discovery.enroll.service).

Wire form (one newline-terminated JSON object each way, one exchange per connection):

  question {"v":1, "membership":B64(member public key), "nonce":B64(16)}
  answer   {"v":1, "status":"member"|"not_member"|"unknown", "mac":B64}
           mac = HMAC-SHA256(K, label | nonce | rendezvous public key | member public key
                             | status)
           K = HKDF-SHA256(X25519(rendezvous static, member static), info=label)

K is the static-static secret of the two keys: only the rendezvous's private key (or the
member's own) computes it, so no one on the path can forge "not_member"; the member's
fresh nonce makes an old answer worthless. "unknown" (the store cannot be read now) is
signed too but proves nothing. The question carries no secret: anyone may ask about a key,
and learns only what the MAC'd status says to the holder of that key (the status is in
the clear: whether a public key is enrolled is not a secret from a network observer who
sees its tunnel).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshwg.core import crypto
from meshwg.core.keys import KEY_SIZE

VERSION = 1
NONCE_SIZE = 16
MAX_LINE = 512                      # bytes, newline included, each way
_LABEL = b"meshwg membership v1"
_MAC_SIZE = hashlib.sha256().digest_size

MEMBER = "member"
NOT_MEMBER = "not_member"
UNKNOWN = "unknown"
STATUSES = (MEMBER, NOT_MEMBER, UNKNOWN)


class BadAnswer(ValueError):
    """An answer that is malformed, for another nonce or keys, or not from the rendezvous."""


@dataclass(frozen=True)
class Question:
    member_key: bytes
    nonce: bytes

    def to_wire(self) -> bytes:
        return (json.dumps({"v": VERSION, "membership": _b64(self.member_key),
                            "nonce": _b64(self.nonce)}, separators=(",", ":")) + "\n").encode()


def new_question(member_key: bytes) -> Question:
    """A question about `member_key` with a fresh random nonce."""
    return Question(bytes(member_key), secrets.token_bytes(NONCE_SIZE))


def parse_question(line: bytes) -> Question | None:
    """The question in `line`, or None when the line is not a membership question (an
    enrollment request, or garbage: the caller decides)."""
    if len(line) > MAX_LINE or b'"membership"' not in line:
        return None
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            return None
        key, nonce = _unb64(doc.get("membership")), _unb64(doc.get("nonce"))
    except (ValueError, UnicodeDecodeError):
        return None
    if key is None or nonce is None or len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        return None
    return Question(key, nonce)


def _key(own_private: bytes, other_public: bytes) -> bytes:
    shared = crypto.dh(own_private, other_public)       # WeakKeyError for a low-order key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(shared)


def _mac(key: bytes, nonce: bytes, rendezvous_key: bytes, member_key: bytes, status: str) -> bytes:
    return hmac.new(key, b"|".join((_LABEL, nonce, rendezvous_key, member_key, status.encode())),
                    hashlib.sha256).digest()


def answer(question: Question, rendezvous_private: bytes, status: str) -> bytes:
    """The rendezvous's signed answer line. Raises crypto.WeakKeyError when the asked key is
    a low-order point (the caller drops the question)."""
    if status not in STATUSES:
        raise ValueError(f"unknown membership status {status!r}")
    rendezvous_key = crypto.public_key(rendezvous_private)
    mac = _mac(_key(rendezvous_private, question.member_key), question.nonce, rendezvous_key,
               question.member_key, status)
    return (json.dumps({"v": VERSION, "status": status, "mac": _b64(mac)},
                       separators=(",", ":")) + "\n").encode()


def verify_answer(line: bytes, question: Question, member_private: bytes,
                  rendezvous_key: bytes) -> str:
    """The status the rendezvous `rendezvous_key` gave to `question` (asked by the holder of
    `member_private`). Raises BadAnswer for anything else: malformed, truncated, oversized,
    for another nonce or key, or forged."""
    if len(line) > MAX_LINE:
        raise BadAnswer("answer longer than the protocol allows")
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadAnswer("answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise BadAnswer("answer is not a membership answer of this version")
    status, mac = doc.get("status"), _unb64(doc.get("mac"))
    if status not in STATUSES or mac is None or len(mac) != _MAC_SIZE:
        raise BadAnswer("answer without a valid status and mac")
    if crypto.public_key(member_private) != question.member_key:
        raise BadAnswer("the question was not about this member's key")
    try:
        key = _key(member_private, rendezvous_key)
    except crypto.WeakKeyError:
        raise BadAnswer("the rendezvous key is a low-order point") from None
    if not hmac.compare_digest(mac, _mac(key, question.nonce, rendezvous_key,
                                         question.member_key, status)):
        raise BadAnswer("answer mac does not verify (not from the rendezvous, or for "
                        "another question)")
    return status


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes | None:
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class QuestionLimit:
    """At most `per_window` questions per `window` seconds from one source address, and at
    most `max_sources` addresses remembered (more: refused until a window passes). Not
    thread-safe: the caller holds its lock."""

    def __init__(self, per_window: int = 5, window: float = 10.0, max_sources: int = 4096):
        self.per_window, self.window, self.max_sources = per_window, window, max_sources
        self._seen: dict[str, tuple[float, int]] = {}

    def allow(self, source: str, now: float) -> bool:
        start, count = self._seen.get(source, (now, 0))
        if now - start >= self.window or now < start:
            start, count = now, 0
        if source not in self._seen and len(self._seen) >= self.max_sources:
            self._seen = {s: v for s, v in self._seen.items() if 0 <= now - v[0] < self.window}
            if len(self._seen) >= self.max_sources:
                return False
        if count >= self.per_window:
            return False
        self._seen[source] = (start, count + 1)
        return True
