"""meshwg.config: wg-quick files parsed, validated with PATH:LINE errors, formatted back."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from ipaddress import ip_interface, ip_network

import pytest

from meshwg.config.wgquick import (ConfigError, InterfaceConfig, PeerConfig, format_config,
                           load_config, parse_config, private_key_permission_warning)
from meshwg.core.crypto import public_key
from meshwg.core.keys import decode_key, generate_private_key_b64, generate_psk_b64, public_key_b64

from tests import REPO
PRIV = generate_private_key_b64()
PUB1 = public_key_b64(generate_private_key_b64())
PUB2 = public_key_b64(generate_private_key_b64())
PSK = generate_psk_b64()


def no_dns(*args, **kwargs):
    raise AssertionError("the resolver must not be called for IP literals")


def fake_resolver(table: dict[str, list[tuple[int, str]]]):
    """A getaddrinfo stand-in: host -> [(family, address)], socket.gaierror otherwise."""
    calls = []

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, port, type))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(fam, socket.SOCK_DGRAM, 17, "", (a, port) if fam == socket.AF_INET else (a, port, 0, 0))
                for fam, a in table[host]]
    resolve.calls = calls
    return resolve


FULL = f"""\
# a comment line
[Interface]
PrivateKey = {PRIV}
ListenPort = 51820   # trailing comment
Address = 10.77.0.1/24, fd77::1/64
address = 10.88.0.1
MTU = 1380
FwMark = 0x1234
DNS = 1.1.1.1
PostUp = iptables -A FORWARD -i %i -j ACCEPT

[peer]
PublicKey = {PUB1}
PresharedKey = {PSK}
AllowedIPs = 10.77.0.2/32, 192.168.10.0/24
AllowedIPs = fd77::2/128
Endpoint = 198.18.0.2:51820
PersistentKeepalive = 25

[Peer]
publickey={PUB2}
Endpoint = [fd00::2]:4500
persistentkeepalive = off
"""


def test_full_file_parses_every_key():
    cfg = parse_config(FULL, "full.conf", resolve=no_dns)
    assert cfg.path == "full.conf"
    assert cfg.private_key == decode_key(PRIV)
    assert cfg.listen_port == 51820
    assert cfg.addresses == [ip_interface("10.77.0.1/24"), ip_interface("fd77::1/64"),
                             ip_interface("10.88.0.1/32")]
    assert cfg.mtu == 1380 and cfg.fwmark == 0x1234
    a, b = cfg.peers
    assert a == PeerConfig(public_key=decode_key(PUB1), preshared_key=decode_key(PSK),
                           allowed_ips=[ip_network("10.77.0.2/32"), ip_network("192.168.10.0/24"),
                                        ip_network("fd77::2/128")],
                           endpoint=("198.18.0.2", 51820), persistent_keepalive=25)
    assert a.line == 12 and b.line == 20
    assert b.endpoint == ("fd00::2", 4500) and b.persistent_keepalive == 0
    assert b.preshared_key is None and b.allowed_ips == []
    assert cfg.dns == ["1.1.1.1"] and cfg.post_up == ["iptables -A FORWARD -i %i -j ACCEPT"]
    assert cfg.warnings == []


def test_defaults_when_optional_keys_absent():
    cfg = parse_config(f"[Interface]\nPrivateKey={PRIV}\n")
    assert (cfg.listen_port, cfg.addresses, cfg.mtu, cfg.fwmark, cfg.peers) == (None, [], None, None, [])


@pytest.mark.parametrize("value, mark", [("0x10", 16), ("4096", 4096), ("off", 0), ("OFF", 0),
                                         ("0", 0), ("0xffffffff", 0xFFFFFFFF)])
def test_fwmark_forms(value, mark):
    assert parse_config(f"[Interface]\nPrivateKey={PRIV}\nFwMark={value}\n").fwmark == mark


def test_allowed_ips_host_bits_cleared_with_warning():
    cfg = parse_config(f"[Interface]\nPrivateKey={PRIV}\n[Peer]\nPublicKey={PUB1}\n"
                       f"AllowedIPs=10.1.2.3/24\n", "x.conf")
    assert cfg.peers[0].allowed_ips == [ip_network("10.1.2.0/24")]
    assert cfg.warnings == ["x.conf:5: AllowedIPs: 10.1.2.3/24 has a nonzero host part; using 10.1.2.0/24"]


def test_endpoint_host_name_is_resolved():
    resolve = fake_resolver({"node-b.example": [(socket.AF_INET, "198.18.0.7")],
                             "v6.example": [(socket.AF_INET6, "fd00::7")]})
    cfg = parse_config(f"[Interface]\nPrivateKey={PRIV}\n[Peer]\nPublicKey={PUB1}\n"
                       f"Endpoint=node-b.example:51820\n[Peer]\nPublicKey={PUB2}\n"
                       f"Endpoint=v6.example:1\n", resolve=resolve)
    assert cfg.peers[0].endpoint == ("198.18.0.7", 51820)
    assert cfg.peers[1].endpoint == ("fd00::7", 1)
    assert resolve.calls == [("node-b.example", 51820, socket.SOCK_DGRAM),
                             ("v6.example", 1, socket.SOCK_DGRAM)]


def test_endpoint_resolution_failure_names_the_host():
    with pytest.raises(ConfigError) as info:
        parse_config(f"[Interface]\nPrivateKey={PRIV}\n[Peer]\nPublicKey={PUB1}\n"
                     f"Endpoint = nowhere.invalid:51820\n", "r.conf", resolve=fake_resolver({}))
    assert str(info.value).startswith("r.conf:5: Endpoint: cannot resolve host 'nowhere.invalid'")
    assert "\n" not in str(info.value)


def test_real_resolver_resolves_localhost():
    cfg = parse_config(f"[Interface]\nPrivateKey={PRIV}\n[Peer]\nPublicKey={PUB1}\n"
                       f"Endpoint = localhost:51820\n")
    assert cfg.peers[0].endpoint in {("127.0.0.1", 51820), ("::1", 51820)}


BASE = f"[Interface]\nPrivateKey = {PRIV}\n"
PEER = f"[Peer]\nPublicKey = {PUB1}\n"


@pytest.mark.parametrize("text, line, fragment", [
    ("[Interfaces]\n", 1, "unknown section '[Interfaces]'"),
    (BASE + "Foo = bar\n", 3, "unknown key 'Foo' in [Interface] section"),
    (BASE + PEER + "ListenPort = 1\n", 5, "unknown key 'ListenPort' in [Peer] section"),
    ("PrivateKey = x\n", 1, "appears before any [Interface] or [Peer] section"),
    (BASE + "justtext\n", 3, "expected 'Key = Value', got 'justtext'"),
    ("# nothing\n[Interface]\nListenPort = 1\n", 2, "[Interface] section without PrivateKey"),
    (PEER, 1, "no [Interface] section"),
    (BASE + "[Peer]\nEndpoint = 1.2.3.4:5\n", 3, "[Peer] section without PublicKey"),
    (BASE + PEER + PEER, 6, f"PublicKey: peer {PUB1} appears twice (first on line 4)"),
    ("[Interface]\nPrivateKey = abc\n", 2, "PrivateKey: not a valid base64 WireGuard key: <not shown: a secret, 3 characters>"),
    (BASE + "PrivateKey = " + PRIV + "\n", 3, "PrivateKey given twice (first on line 2)"),
    (BASE + "ListenPort = 70000\n", 3, "ListenPort: not a port number (0-65535): '70000'"),
    (BASE + "ListenPort = -1\n", 3, "ListenPort: not a port number (0-65535): '-1'"),
    (BASE + "ListenPort =\n", 3, "ListenPort: empty value"),
    (BASE + "Address = 10.0.0.300/24\n", 3, "Address: not an IP address with optional /prefix: '10.0.0.300/24'"),
    (BASE + "Address = 10.0.0.1/33\n", 3, "Address: not an IP address with optional /prefix: '10.0.0.1/33'"),
    (BASE + "MTU = 20\n", 3, "MTU: not a number in 68-65535: '20'"),
    (BASE + "FwMark = 0x1g\n", 3, "FwMark: neither 'off' nor a number in 0-0xffffffff: '0x1g'"),
    (BASE + "FwMark = 4294967296\n", 3, "FwMark: neither 'off' nor a number in 0-0xffffffff: '4294967296'"),
    (BASE + PEER + "PresharedKey = zz\n", 5, "PresharedKey: not a valid base64 WireGuard key: <not shown: a secret, 2 characters>"),
    (BASE + PEER + "AllowedIPs = 10.0.0.0/8, bogus\n", 5, "AllowedIPs: not a CIDR prefix: 'bogus'"),
    (BASE + PEER + "AllowedIPs = 10.0.0.0/255.0.0.0\n", 5, "AllowedIPs: not a CIDR prefix: '10.0.0.0/255.0.0.0'"),
    (BASE + PEER + "AllowedIPs = fd00::/129\n", 5, "AllowedIPs: not a CIDR prefix: 'fd00::/129'"),
    (BASE + PEER + "Endpoint = 1.2.3.4\n", 5, "Endpoint: not HOST:PORT or [IPv6]:PORT"),
    (BASE + PEER + "Endpoint = 1.2.3.4:0\n", 5, "Endpoint: port is not a number in 1-65535: '1.2.3.4:0'"),
    (BASE + PEER + "Endpoint = 1.2.3.4:http\n", 5, "Endpoint: port is not a number in 1-65535"),
    (BASE + PEER + "Endpoint = fd00::1\n", 5, "'fd00:' before the last colon is not an IPv6 address"),
    (BASE + PEER + "Endpoint = host:name:1\n", 5, "'host:name' before the last colon is not an IPv6"),
    (BASE + PEER + "Endpoint = [fd00::1:51820\n", 5, "no closing ']'"),
    (BASE + PEER + "PersistentKeepalive = 65536\n", 5,
     "PersistentKeepalive: neither 'off' nor a number of seconds in 0-65535: '65536'"),
])
def test_errors_are_one_line_with_path_line_key_and_value(text, line, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/meshwg/wg0.conf", resolve=no_dns)
    message = str(info.value)
    assert message.startswith(f"/etc/meshwg/wg0.conf:{line}: "), message
    assert fragment in message, message
    assert "\n" not in message
    assert info.value.line == line


def test_format_config_round_trips():
    cfg = parse_config(FULL, "full.conf", resolve=no_dns)
    text = format_config(cfg)
    again = parse_config(text, "full.conf", resolve=no_dns)
    assert again == cfg
    assert "PostUp = iptables -A FORWARD -i %i -j ACCEPT" in text and "FwMark = 0x1234" in text
    assert "Endpoint = [fd00::2]:4500" in text


def test_format_config_of_constructed_config():
    cfg = InterfaceConfig(path="c.conf", private_key=decode_key(PRIV), fwmark=0,
                          peers=[PeerConfig(public_key=decode_key(PUB1))])
    text = format_config(cfg)
    assert "FwMark = off" in text
    assert parse_config(text, "c.conf") == cfg


def test_private_key_not_in_repr():
    cfg = parse_config(FULL, resolve=no_dns)
    assert repr(decode_key(PRIV)) not in repr(cfg)
    assert repr(decode_key(PSK)) not in repr(cfg)


def test_load_config_reads_file_and_reports_unreadable(tmp_path):
    path = tmp_path / "wg0.conf"
    path.write_text(FULL)
    assert load_config(str(path)) == parse_config(FULL, str(path))
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert str(info.value) == f"{missing}: cannot read configuration: No such file or directory"
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"\xff\xfe[Interface]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(binary))


def test_load_config_error_names_the_file(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(BASE + "ListenPort = many\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}:3: ListenPort: not a port number (0-65535): 'many'"


def test_private_key_permission_warning(tmp_path):
    path = tmp_path / "wg0.conf"
    path.write_text(BASE)
    os.chmod(path, 0o600)
    assert private_key_permission_warning(str(path)) is None
    os.chmod(path, 0o644)
    warning = private_key_permission_warning(str(path))
    assert warning is not None and str(path) in warning and "0644" in warning
    os.chmod(path, 0o620)
    assert private_key_permission_warning(str(path)) is not None
    os.chmod(path, 0o700)
    assert private_key_permission_warning(str(path)) is None


@pytest.mark.parametrize("name", ["a", "b"])
def test_example_configs_parse_and_pair_up(name):
    cfg = load_config(str(REPO / "configs" / f"example-node-{name}.conf"))
    other = load_config(str(REPO / "configs" / f"example-node-{'b' if name == 'a' else 'a'}.conf"))
    me = "10.77.0.1" if name == "a" else "10.77.0.2"
    assert cfg.addresses == [ip_interface(f"{me}/24")]
    (peer,) = cfg.peers
    assert peer.persistent_keepalive == 25
    assert peer.endpoint[0].startswith("198.18.0.")
    assert peer.public_key == public_key(other.private_key)
    assert peer.allowed_ips == [ip_network(f"{other.addresses[0].ip}/32")]
    assert peer.preshared_key == other.peers[0].preshared_key
    assert cfg.warnings == []


@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="wg-quick not installed")
def test_example_configs_accepted_by_wg_quick_strip(tmp_path):
    """wg-quick itself reads our examples (strip keeps only what `wg` would get)."""
    for name in "ab":
        src = REPO / "configs" / f"example-node-{name}.conf"
        dst = tmp_path / f"mwg{name}.conf"
        shutil.copy(src, dst)
        os.chmod(dst, 0o600)
        out = subprocess.run(["wg-quick", "strip", str(dst)], capture_output=True, text=True,
                             timeout=10)
        assert out.returncode == 0, out.stderr
        assert "Address" not in out.stdout and "PrivateKey" in out.stdout


@pytest.mark.parametrize("line", [
    "PrivateKey = {k}x",                    # one character too many
    "PrivateKey {k}",                       # no '=' before the key ('=' of its padding)
    "PresharedKey = {k}x",
    "privatekey={k}x",
])
def test_a_near_miss_of_a_secret_key_is_never_echoed(tmp_path, line):
    """A malformed PrivateKey/PresharedKey line is most of a secret: the error names the
    line and the key but never quotes the value (it would reach logs and terminals)."""
    secret = PRIV[:-1]                      # 43 characters of a real key
    where = BASE if "Preshared" in line else "[Interface]\n"
    for text in (where + line.format(k=secret) + "\n", line.format(k=secret) + "\n[Interface]\n"):
        path = tmp_path / "s.conf"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            parse_config(path.read_text(), str(path))
        assert secret[:8] not in str(info.value), str(info.value)
