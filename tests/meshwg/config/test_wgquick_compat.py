"""Issue 9, cases 19 and 20 (parsing): what wg and wg-quick accept is accepted with the same
meaning, the rest is a one-line PATH:LINE error, never a traceback."""

from __future__ import annotations

import pytest

from meshwg.config.wgquick import ConfigError, format_config, parse_config
from meshwg.core.keys import decode_key, generate_private_key_b64, public_key_b64

PRIV = generate_private_key_b64()
PUB = public_key_b64(generate_private_key_b64())
BASE = f"[Interface]\nPrivateKey = {PRIV}\n"
PEER = f"[Peer]\nPublicKey = {PUB}\n"


def no_dns(*args, **kwargs):
    raise AssertionError("the resolver must not be called for IP literals")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/wg/x.conf", resolve=no_dns)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300, str(info.value)
    return info.value


@pytest.mark.parametrize("value, endpoint", [
    ("fd77::2:51820", ("fd77::2", 51820)),         # wg setconf: split at the last colon
    ("[fd77::2]:51820", ("fd77::2", 51820)),
    ("::1:1", ("::1", 1)),
    ("fe80::1%lo:7", ("fe80::1%lo", 7)),
])
def test_ipv6_endpoint_without_brackets_split_at_last_colon(value, endpoint):
    cfg = parse_config(BASE + PEER + f"Endpoint = {value}\n", resolve=no_dns)
    assert cfg.peers[0].endpoint == endpoint


def test_byte_order_mark_before_interface_is_skipped(tmp_path):
    from meshwg.config.wgquick import load_config
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbf" + (BASE + PEER).encode())
    cfg = load_config(str(path), resolve=no_dns)
    assert cfg.private_key == decode_key(PRIV) and len(cfg.peers) == 1
    # a BOM anywhere else is still an error with its line
    assert refused(BASE + "\ufeff" + PEER).line == 3


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_only_newline_ends_a_line(separator):
    """wg-quick reads lines with `read -r`: a comment holding U+2028, NEL, VT or FF stays a
    comment (no hidden PostUp), and such a character inside a value is no line break."""
    cfg = parse_config(BASE + f"# note{separator}PostUp = touch /tmp/x\n", resolve=no_dns)
    assert cfg.post_up == []
    error = refused(BASE + PEER + f"AllowedIPs = 10.0.0.0/24{separator}PersistentKeepalive = 25\n")
    assert error.line == 5 and "AllowedIPs" in str(error)


@pytest.mark.parametrize("line", ["PostUp = echo \x00 hi", "# \x00", "Address = 10.0.0.1\x00/24"])
def test_nul_byte_is_a_line_error(line):
    """A NUL in a hook reached subprocess (ValueError: embedded null byte, a traceback)."""
    error = refused(BASE + line + "\n")
    assert error.line == 3 and "NUL" in str(error)


@pytest.mark.parametrize("source", ["/dev/zero", "sparse"])
def test_endless_or_huge_file_is_refused_without_reading_it_all(source, tmp_path):
    """`meshwg up /dev/zero` grew to a MemoryError traceback (1.9 GB under a 2 GB limit)."""
    from meshwg.config.wgquick import MAX_CONFIG_BYTES, load_config
    path = source
    if source == "sparse":
        path = str(tmp_path / "huge.conf")
        with open(path, "wb") as f:
            f.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError) as info:
        load_config(path, resolve=no_dns)
    assert "larger than 32 MiB" in str(info.value) and info.value.path == path


def test_scoped_address_is_a_line_error():
    """fe80::1%eth0/64 passed the parser and failed later with "configuring IFACE: Cannot
    assign requested address" and no line; wg-quick's `ip address add` refuses it too."""
    error = refused(BASE + "Address = 10.0.0.1/24, fe80::99%eth0/64\n")
    assert error.line == 3 and "fe80::99%eth0/64" in str(error)


def test_crlf_line_ends_are_accepted():
    text = BASE + "PostUp = echo %i\n" + PEER + "AllowedIPs = 10.0.0.0/24\n"
    cfg = parse_config(text.replace("\n", "\r\n"), resolve=no_dns)
    assert cfg.post_up == ["echo %i"] and [str(n) for n in cfg.peers[0].allowed_ips] == ["10.0.0.0/24"]


@pytest.mark.parametrize("key, section", [("PersistentKeepalive", PEER), ("MTU", ""),
                                          ("ListenPort", ""), ("FwMark", ""), ("Table", "")])
def test_thousands_of_digits_are_one_line_errors(key, section):
    value = "9" * 5000
    error = refused(BASE + section + f"{key} = {value}\n")
    assert error.line == (5 if section else 3) and key in str(error)


def test_leading_zeros_accepted_as_strtoul_does():
    cfg = parse_config(BASE + "MTU = 0001280\nTable = 000123\n" + PEER +
                       "PersistentKeepalive = " + "0" * 3000 + "25\n")
    assert cfg.mtu == 1280 and cfg.table == "123" and cfg.peers[0].persistent_keepalive == 25


def test_own_public_key_as_peer_is_left_out_with_a_warning():
    own = public_key_b64(PRIV)
    cfg = parse_config(BASE + PEER + f"[Peer]\nPublicKey = {own}\nAllowedIPs = 10.9.0.0/24\n",
                       "o.conf")
    assert [p.public_key for p in cfg.peers] == [decode_key(PUB)]
    assert cfg.warnings == ["o.conf:5: [Peer] has this interface's own public key; it is left "
                            "out (wg ignores it too)"]


def test_all_zero_private_key_is_refused():
    error = refused("[Interface]\nListenPort = 1\nPrivateKey = " + "A" * 43 + "=\n")
    assert error.line == 3 and "all zeros" in str(error)


def test_wg_quick_keys_are_parsed():
    cfg = parse_config(BASE + "DNS = 10.0.0.53, fd00::53 example.com\ndns = corp.example\n"
                       "Table = 1234\nSaveConfig = True\n"
                       "PreUp = echo pre %i # kept for bash\nPostUp = ip link set %i up\n"
                       "PostUp = echo two\nPreDown = echo a=b\nPostDown = true\nPostDown =\n",
                       "h.conf")
    assert cfg.dns == ["10.0.0.53", "fd00::53"] and cfg.dns_search == ["example.com", "corp.example"]
    assert cfg.table == "1234" and cfg.save_config is True
    assert cfg.pre_up == ["echo pre %i # kept for bash"]
    assert cfg.post_up == ["ip link set %i up", "echo two"]
    assert cfg.pre_down == ["echo a=b"] and cfg.post_down == ["true"]
    assert cfg.warnings == []
    again = parse_config(format_config(cfg), "h.conf")
    assert again == cfg


@pytest.mark.parametrize("value, table", [("off", "off"), ("Auto", "auto"), ("main", "main"),
                                          ("1", "1"), ("4294967295", "4294967295")])
def test_table_forms(value, table):
    assert parse_config(BASE + f"Table = {value}\n").table == table


@pytest.mark.parametrize("line, fragment", [
    ("Table = 0", "routing table number in 1-4294967295: '0'"),
    ("Table = 4294967296", "'4294967296'"),
    ("Table = sometable", "'sometable'"),
    ("SaveConfig = yes", "SaveConfig: neither true nor false: 'yes'"),
    ("DNS = 10.0.0.300", "DNS: not an IP address: '10.0.0.300'"),
    ("DNS = fd00::zz", "DNS: not an IP address: 'fd00::zz'"),
    ("DNS = bad/domain", "neither an IP address nor a search domain: 'bad/domain'"),
    ("Table = auto\nTable = off", "Table given twice (first on line 3)"),
])
def test_wg_quick_key_errors(line, fragment):
    error = refused(BASE + line + "\n")
    assert fragment in str(error)


def test_wg_quick_keys_belong_in_interface():
    assert "unknown key 'DNS' in [Peer]" in str(refused(BASE + PEER + "DNS = 1.1.1.1\n"))


@pytest.mark.parametrize("value", ["9" * 5000, "x" * 5000, "0x" + "f" * 5000, ":" * 5000 + "1"])
def test_every_key_bounds_a_huge_value(value):
    """Every key, in its section, either accepts a 5,000-character value or refuses it in one
    short line (no traceback, no 5,000-character message)."""
    from meshwg.config.wgquick import INTERFACE_KEYS, PEER_KEYS
    for keys, prefix in ((INTERFACE_KEYS, BASE), (PEER_KEYS, BASE + PEER)):
        for key in keys.values():
            try:
                parse_config(prefix + f"{key} = {value}\n", "/etc/wg/x.conf", resolve=no_dns)
            except ConfigError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 300, (key, str(exc)[:400])
