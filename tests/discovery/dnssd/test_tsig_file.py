"""discovery.dnssd.tsig_file: tsig-keygen files read into dnspython keys; hostile files are
refused with TsigKeyError naming FILE:LINE, never another exception."""

from __future__ import annotations

import base64
import shutil
import subprocess

import dns.message
import dns.tsig
import pytest

from discovery.dnssd.tsig_file import (MAX_FILE_BYTES, TsigKey, TsigKeyError, parse_tsig_key,
                                       read_tsig_key)
from meshwg.util.errors import MeshwgError

SECRET = bytes(range(32))
GOOD = f"""key "meshwg-update" {{
\talgorithm hmac-sha256;
\tsecret "{base64.b64encode(SECRET).decode()}";
}};
"""


def write(tmp_path, text: str | bytes, name: str = "k.key"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_reads_the_tsig_keygen_format(tmp_path) -> None:
    key = read_tsig_key(write(tmp_path, GOOD))
    assert key == TsigKey("meshwg-update", "hmac-sha256", SECRET)
    assert key.secret_base64 == base64.b64encode(SECRET).decode()
    assert "secret=<hidden>" in repr(key) and key.secret_base64 not in repr(key)


@pytest.mark.skipif(shutil.which("tsig-keygen") is None, reason="tsig-keygen missing (bind9)")
@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sha512", "hmac-sha1"])
def test_reads_what_tsig_keygen_prints(tmp_path, algorithm) -> None:
    text = subprocess.run(["tsig-keygen", "-a", algorithm, "rv1.mesh.example"],
                          capture_output=True, text=True, check=True).stdout
    key = read_tsig_key(write(tmp_path, text))
    assert key.name == "rv1.mesh.example" and key.algorithm == algorithm
    assert len(key.secret) == {"hmac-sha256": 32, "hmac-sha512": 64, "hmac-sha1": 20}[algorithm]


def test_signs_and_verifies_with_dnspython(tmp_path) -> None:
    key = read_tsig_key(write(tmp_path, GOOD))
    query = dns.message.make_query("mesh.test.", "SOA")
    query.use_tsig(key.keyring())
    wire = query.to_wire()
    assert dns.message.from_wire(wire, keyring=key.keyring()).had_tsig
    other = TsigKey(key.name, key.algorithm, bytes(32))
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(wire, keyring=other.keyring())
    assert key.key().name == dns.message.from_wire(wire, keyring=key.keyring()).keyname


def test_comments_unquoted_name_and_blank_lines_are_fine() -> None:
    text = ("# made by tsig-keygen\n\n// another comment\n/* block\n comment */\n"
            f"key meshwg-read {{ algorithm HMAC-SHA256; secret \"{base64.b64encode(SECRET).decode()}\"; }};\n")
    key = parse_tsig_key(text, "x.key")
    assert (key.name, key.algorithm, key.secret) == ("meshwg-read", "hmac-sha256", SECRET)


B64 = base64.b64encode(SECRET).decode()
HOSTILE = [
    ("", "x.key:1: file ends; expected 'key'"),
    ("zone \"x\" {};", "x.key:1: expected 'key', found 'zone'"),
    ('key "k" {\n algorithm hmac-sha256;\n};\n', "x.key:4: key 'k' has no secret"),
    (f'key "k" {{\n secret "{B64}";\n}};', "x.key:3: key 'k' has no algorithm"),
    (f'key "k" {{\n algorithm hmac-sha256;\n secret "{B64}";\n secret "{B64}";\n}};',
     "x.key:4: secret given twice"),
    (f'key "k" {{\n algorithm rot13;\n secret "{B64}";\n}};', "x.key:2: algorithm 'rot13'"),
    ('key "k" {\n algorithm hmac-sha256;\n secret "not base64!";\n};',
     "x.key:3: the secret is not base64"),
    ('key "k" {\n algorithm hmac-sha256;\n secret @@@@;\n};', "x.key:3: unexpected character '@'"),
    ('key "k" {\n algorithm hmac-sha256;\n secret "abc";\n};', "x.key:3: the secret is not base64"),
    ('key "k" {\n algorithm hmac-sha256;\n secret "";\n};', "x.key:3: the secret is empty"),
    ('key "k" {\n algorithm hmac-sha256;\n secret abcd;\n};', "x.key:3: the secret must be a quoted"),
    (f'key "k" {{\n algorithm hmac-sha256;\n secret "{"A" * 4000}";\n}};',
     "x.key:3: the secret is longer than"),
    (f'key "k" {{ algorithm hmac-sha256; secret "{B64}"; }};\nkey "j" {{ }};',
     "x.key:2: unexpected 'key' after the key statement"),
    (f'key "k" {{ algorithm hmac-sha256; secret "{B64}"; }}', "file ends; expected ';'"),
    (f'key "k" {{ algorithm hmac-sha256; secret "{B64}"; inline yes; }};',
     "x.key:1: unknown statement 'inline'"),
    (f'key "" {{ algorithm hmac-sha256; secret "{B64}"; }};', "x.key:1: the key name is empty"),
    (f'key "{"a" * 70}" {{ algorithm hmac-sha256; secret "{B64}"; }};', "is not a DNS name"),
    (f'key "k" {{ algorithm hmac-sha256; secret "{B64}\n"; }};', "x.key:1: unexpected character"),
    ("\n; " * 10, "x.key:2: expected 'key', found ';'"),
    ("key " + "{ " * 100, "more than 64 tokens"),
]


@pytest.mark.parametrize("text, message", HOSTILE)
def test_hostile_text_is_refused_naming_file_and_line(text, message) -> None:
    with pytest.raises(TsigKeyError) as caught:
        parse_tsig_key(text, "x.key")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, MeshwgError)


def test_unreadable_huge_and_binary_files(tmp_path) -> None:
    with pytest.raises(TsigKeyError, match="cannot read TSIG key file"):
        read_tsig_key(tmp_path / "missing.key")
    with pytest.raises(TsigKeyError, match="cannot read TSIG key file"):
        read_tsig_key(tmp_path)
    huge = write(tmp_path, GOOD + "#" * MAX_FILE_BYTES, "huge.key")
    with pytest.raises(TsigKeyError, match=f"{huge}: larger than {MAX_FILE_BYTES} bytes"):
        read_tsig_key(huge)
    binary = write(tmp_path, b"key\n\xff\xfe", "bin.key")
    with pytest.raises(TsigKeyError, match=f"{binary}:2: not ASCII"):
        read_tsig_key(binary)
