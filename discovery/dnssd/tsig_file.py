"""TSIG key files in the format BIND's ``tsig-keygen`` prints (RFC 8945 keys for dnspython).

``tsig-keygen -a hmac-sha256 NAME > FILE`` writes one ``key`` statement::

    key "NAME" {
            algorithm hmac-sha256;
            secret "BASE64";
    };

:func:`read_tsig_key` reads such a file (named.conf syntax: the same file is ``include``d
by BIND and given to ``nsupdate -k`` and ``dig -k``) into a :class:`TsigKey` whose
:meth:`TsigKey.key` and :meth:`TsigKey.keyring` sign dnspython messages. The file is
outside input: its size, the name, the secret and the number of tokens are bounded, and
anything else than exactly one key statement raises :class:`TsigKeyError` naming
FILE:LINE.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.tsig

from meshwg.util.errors import MeshwgError

__all__ = ["ALGORITHMS", "MAX_FILE_BYTES", "TsigKey", "TsigKeyError", "parse_tsig_key",
           "read_tsig_key"]

MAX_FILE_BYTES = 16 * 1024        # a tsig-keygen file is ~120 bytes
MAX_SECRET_BYTES = 512            # HMAC-SHA512's block is 128 bytes; BIND accepts more, we don't
MAX_TOKENS = 64
# The HMAC algorithms of RFC 8945 section 6 (and RFC 4635), as BIND names them.
ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384",
              "hmac-sha512")

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+) | (?P<newline>\n)
  | (?P<comment>(?:\#|//)[^\n]*) | (?P<block>/\*.*?\*/)
  | (?P<string>"[^"\n]*") | (?P<punct>[{};])
  | (?P<word>[A-Za-z0-9._+/=-]+)
""", re.VERBOSE | re.DOTALL)


class TsigKeyError(MeshwgError, ValueError):
    """A TSIG key file is unreadable or not one valid ``key`` statement (FILE:LINE: why)."""


@dataclass(frozen=True)
class TsigKey:
    """One TSIG key: ``name`` (a DNS name, text, as in the file), ``algorithm`` (one of
    :data:`ALGORITHMS`), ``secret`` (the raw HMAC key bytes)."""

    name: str
    algorithm: str
    secret: bytes

    @property
    def secret_base64(self) -> str:
        """The secret as the file writes it (base64), e.g. for knot.conf."""
        return base64.b64encode(self.secret).decode()

    def key(self) -> dns.tsig.Key:
        """The key for dnspython (``Message.use_tsig(key)``, ``dns.query`` calls)."""
        return dns.tsig.Key(self.name, self.secret, self.algorithm)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """A dnspython keyring holding this key (``UpdateMessage(zone, keyring=...)``,
        ``Message.use_tsig``, ``dns.message.from_wire(keyring=...)``)."""
        key = self.key()
        return {key.name: key}

    def __repr__(self) -> str:          # never print the secret
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r}, secret=<hidden>)"


def read_tsig_key(path: str | os.PathLike) -> TsigKey:
    """The key in ``path`` (a ``tsig-keygen`` file); TsigKeyError names FILE:LINE when the
    file is unreadable, larger than :data:`MAX_FILE_BYTES`, or not exactly one valid key."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TsigKeyError(f"{where}: cannot read TSIG key file: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise TsigKeyError(f"{where}: larger than {MAX_FILE_BYTES} bytes; not a tsig-keygen file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TsigKeyError(f"{where}:{line}: not ASCII text") from exc
    return parse_tsig_key(text, where)


def _tokens(text: str, where: str) -> list[tuple[str, int]]:
    """(token, line) pairs without blanks and comments; at most MAX_TOKENS of them."""
    tokens: list[tuple[str, int]] = []
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise TsigKeyError(f"{where}:{line}: unexpected character {text[pos]!r}")
        kind, value = match.lastgroup, match.group()
        if kind in ("string", "punct", "word"):
            if len(tokens) == MAX_TOKENS:
                raise TsigKeyError(f"{where}:{line}: more than {MAX_TOKENS} tokens; "
                                   "not a tsig-keygen file")
            tokens.append((value, line))
        line += value.count("\n")
        pos = match.end()
    return tokens


def parse_tsig_key(text: str, where: str = "<text>") -> TsigKey:
    """The key in ``text`` (named.conf ``key`` syntax, one statement); ``where`` names the
    source in errors. Raises TsigKeyError."""
    tokens = _tokens(text, where)
    end_line = text.count("\n") + 1
    position = 0

    def take(expected: str | None = None, what: str = "") -> tuple[str, int]:
        nonlocal position
        if position >= len(tokens):
            wanted = repr(expected) if expected is not None else what
            raise TsigKeyError(f"{where}:{end_line}: file ends; expected {wanted}")
        token, line = tokens[position]
        if expected is not None and token != expected:
            raise TsigKeyError(f"{where}:{line}: expected {expected!r}, found {token!r}")
        position += 1
        return token, line

    keyword, line = take(what="'key'")
    if keyword != "key":
        raise TsigKeyError(f"{where}:{line}: expected 'key', found {keyword!r}")
    raw_name, name_line = take(what="a key name")
    name = _name(raw_name.strip('"'), where, name_line)
    take("{")
    fields: dict[str, tuple[str, int]] = {}
    while True:
        token, line = take(what="'algorithm', 'secret' or '}'")
        if token == "}":
            break
        if token not in ("algorithm", "secret"):
            raise TsigKeyError(f"{where}:{line}: unknown statement {token!r} in key {name!r}")
        if token in fields:
            raise TsigKeyError(f"{where}:{line}: {token} given twice in key {name!r}")
        fields[token] = take(what=f"a value for {token}")
        take(";")
    take(";")
    if position < len(tokens):
        extra, line = tokens[position]
        raise TsigKeyError(f"{where}:{line}: unexpected {extra!r} after the key statement "
                           "(one key per file)")
    for needed in ("algorithm", "secret"):
        if needed not in fields:
            raise TsigKeyError(f"{where}:{end_line}: key {name!r} has no {needed}")
    algorithm_text, line = fields["algorithm"]
    algorithm = algorithm_text.strip('"').lower()
    if algorithm not in ALGORITHMS:
        raise TsigKeyError(f"{where}:{line}: algorithm {algorithm_text[:40]!r} is not one of "
                           f"{', '.join(ALGORITHMS)}")
    secret_text, line = fields["secret"]
    if not (secret_text.startswith('"') and secret_text.endswith('"') and len(secret_text) > 1):
        raise TsigKeyError(f"{where}:{line}: the secret must be a quoted base64 string")
    return TsigKey(name, algorithm, _secret(secret_text[1:-1], where, line))


def _name(text: str, where: str, line: int) -> str:
    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise TsigKeyError(f"{where}:{line}: key name {text[:80]!r} is not a DNS name: {exc}") from exc
    if name == dns.name.root or not text:
        raise TsigKeyError(f"{where}:{line}: the key name is empty")
    return text


def _secret(text: str, where: str, line: int) -> bytes:
    if len(text) > (MAX_SECRET_BYTES * 4) // 3 + 4:
        raise TsigKeyError(f"{where}:{line}: the secret is longer than {MAX_SECRET_BYTES} bytes")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TsigKeyError(f"{where}:{line}: the secret is not base64: {exc}") from exc
    if not secret:
        raise TsigKeyError(f"{where}:{line}: the secret is empty")
    return secret
