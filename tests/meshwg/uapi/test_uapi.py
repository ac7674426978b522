"""meshwg.uapi: the `wg` control protocol -- parsing/formatting units, and the real `wg`
tool (wireguard-tools) driving a UapiServer backed by a small in-memory device model."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import socket
import stat
import subprocess
import threading
from ipaddress import ip_network
from pathlib import Path

import pytest

from meshwg.core import crypto
from meshwg.core.allowedips import AllowedIPs
from meshwg.config.wgquick import parse_config
from meshwg.core.keys import encode_key
from meshwg.device.api import DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate
from meshwg.uapi.codec import (ERR_INVALID, ERR_IO, ERR_PORT_IN_USE, ERR_PROTOCOL, UapiError,
                               format_get, parse_set)
from meshwg.uapi.server import UapiServer, UapiServerError

WG = shutil.which("wg")
WG_DIR = "/var/run/wireguard"


def keypair() -> tuple[bytes, bytes]:
    private = crypto.generate_private_key()
    return private, crypto.public_key(private)


# ---------------------------------------------------------------- parse_set

def test_parse_set_full_request_as_wg_sends_it():
    priv, _ = keypair()
    _, pub1 = keypair()
    _, pub2 = keypair()
    psk = os.urandom(32)
    update = parse_set([
        f"private_key={priv.hex()}", "listen_port=51820", "fwmark=4660", "replace_peers=true",
        f"public_key={pub1.hex()}", f"preshared_key={psk.hex()}", "endpoint=198.18.0.2:51820",
        "persistent_keepalive_interval=25", "replace_allowed_ips=true",
        "allowed_ip=10.77.0.2/32", "allowed_ip=fd77::2/128", "allowed_ip=-10.9.0.0/16",
        "protocol_version=1",
        f"public_key={pub2.hex().upper()}", "remove=true",
        f"public_key={pub1.hex()}", "update_only=true", "endpoint=[fd00::1]:4500",
    ])
    assert update == DeviceUpdate(
        private_key=priv, listen_port=51820, fwmark=4660, replace_peers=True, peers=[
            PeerUpdate(public_key=pub1, preshared_key=psk, endpoint=("198.18.0.2", 51820),
                       persistent_keepalive=25, replace_allowed_ips=True,
                       allowed_ips=[ip_network("10.77.0.2/32"), ip_network("fd77::2/128")],
                       remove_allowed_ips=[ip_network("10.9.0.0/16")]),
            PeerUpdate(public_key=pub2, remove=True),
            PeerUpdate(public_key=pub1, update_only=True, endpoint=("fd00::1", 4500)),
        ])


def test_parse_set_zero_private_key_means_remove_and_host_bits_are_cleared():
    update = parse_set(["private_key=" + "0" * 64, "public_key=" + "ab" * 32,
                        "allowed_ip=10.1.2.3/24", "preshared_key=" + "0" * 64])
    assert update.private_key == bytes(32)
    assert update.peers[0].allowed_ips == [ip_network("10.1.2.0/24")]
    assert update.peers[0].preshared_key == bytes(32)


def test_parse_set_stops_at_blank_line():
    assert parse_set(["listen_port=1", "", "bogus=1"]) == DeviceUpdate(listen_port=1)


PK = "public_key=" + "11" * 32


@pytest.mark.parametrize("lines, code", [
    (["private_key=" + "1" * 63], ERR_INVALID),
    (["private_key=" + "g" * 64], ERR_INVALID),
    (["listen_port=65536"], ERR_INVALID),
    (["listen_port=-1"], ERR_INVALID),
    (["listen_port=+1"], ERR_INVALID),
    (["listen_port= 1"], ERR_INVALID),
    (["fwmark=4294967296"], ERR_INVALID),
    (["replace_peers=false"], ERR_INVALID),
    (["bogus=1"], ERR_INVALID),
    (["no equals sign"], ERR_PROTOCOL),
    (["public_key=xyz"], ERR_INVALID),
    ([PK, "listen_port=1"], ERR_INVALID),          # device key after the first peer
    ([PK, "endpoint=198.18.0.2"], ERR_INVALID),
    ([PK, "endpoint=fd00::1:51820"], ERR_INVALID),
    ([PK, "endpoint=[fd00::1]51820"], ERR_INVALID),
    ([PK, "endpoint=host.example:51820"], ERR_INVALID),  # IP literals only
    ([PK, "endpoint=198.18.0.2:65536"], ERR_INVALID),
    ([PK, "allowed_ip=10.0.0.0/33"], ERR_INVALID),
    ([PK, "allowed_ip=10.0.0.0"], None),           # accepted: a host route
    ([PK, "allowed_ip=nonsense"], ERR_INVALID),
    ([PK, "persistent_keepalive_interval=65536"], ERR_INVALID),
    ([PK, "protocol_version=2"], ERR_INVALID),
    ([PK, "remove=yes"], ERR_INVALID),
    ([PK, "update_only=1"], ERR_INVALID),
    ([PK, "replace_allowed_ips=false"], ERR_INVALID),
    ([PK, "frobnicate=true"], ERR_INVALID),
])
def test_parse_set_rejects_invalid_values(lines, code):
    if code is None:
        parse_set(lines)
        return
    with pytest.raises(UapiError) as info:
        parse_set(lines)
    assert info.value.errno == code
    assert "\n" not in str(info.value)


def test_error_codes_are_wireguard_go_values():
    assert (ERR_IO, ERR_PROTOCOL, ERR_INVALID, ERR_PORT_IN_USE) == (
        -errno.EIO, -errno.EPROTO, -errno.EINVAL, -errno.EADDRINUSE) == (-5, -71, -22, -98)


# ---------------------------------------------------------------- format_get

def test_format_get_key_order_and_values():
    priv = bytes(range(1, 33))
    pub, psk = bytes([0xAA]) * 32, bytes([0xBB]) * 32
    status = DeviceStatus(private_key=priv, listen_port=51820, fwmark=7, peers=[
        PeerStatus(public_key=pub, preshared_key=psk, endpoint=("198.18.0.2", 51820),
                   last_handshake_sec=1700000000, last_handshake_nsec=123, tx_bytes=10,
                   rx_bytes=20, persistent_keepalive=25,
                   allowed_ips=[ip_network("10.77.0.2/32"), ip_network("fd77::/64")]),
        PeerStatus(public_key=bytes([0xCC]) * 32, preshared_key=None, endpoint=("fd00::1", 4500),
                   last_handshake_sec=0, last_handshake_nsec=0, tx_bytes=0, rx_bytes=0,
                   persistent_keepalive=0, allowed_ips=[]),
    ])
    assert format_get(status) == (
        f"private_key={priv.hex()}\nlisten_port=51820\nfwmark=7\n"
        f"public_key={'aa' * 32}\npreshared_key={'bb' * 32}\nprotocol_version=1\n"
        "endpoint=198.18.0.2:51820\nlast_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=123\ntx_bytes=10\nrx_bytes=20\n"
        "persistent_keepalive_interval=25\nallowed_ip=10.77.0.2/32\nallowed_ip=fd77::/64\n"
        f"public_key={'cc' * 32}\npreshared_key={'00' * 32}\nprotocol_version=1\n"
        "endpoint=[fd00::1]:4500\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
        "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
        "errno=0\n\n")


def test_format_get_omits_unset_device_fields():
    for private in (None, bytes(32)):
        assert format_get(DeviceStatus(private_key=private, listen_port=0, fwmark=0,
                                       peers=[])) == "errno=0\n\n"


# ---------------------------------------------------------------- an in-memory device

class Model:
    """What a WireGuard device keeps that the control protocol can see, with
    wireguard-go's set semantics. Validates an update fully before applying any of it."""

    def __init__(self) -> None:
        self.private_key: bytes | None = None
        self.listen_port = 0
        self.fwmark = 0
        self.peers: dict[bytes, dict] = {}
        self.table = AllowedIPs()
        self.busy_ports: set[int] = set()
        self.lock = threading.Lock()

    def public_key(self) -> bytes | None:
        return crypto.public_key(self.private_key) if self.private_key else None

    def snapshot(self) -> str:
        return format_get(self.status())

    def status(self) -> DeviceStatus:
        with self.lock:
            return DeviceStatus(self.private_key, self.listen_port, self.fwmark, [
                PeerStatus(key, p["psk"], p["endpoint"], 1700000000, 5, 100, 200,
                           p["keepalive"], self.table.networks_of(key))
                for key, p in self.peers.items()])

    def apply(self, u: DeviceUpdate) -> None:
        if u.listen_port is not None and u.listen_port in self.busy_ports:
            raise UapiError(f"listen_port {u.listen_port} in use", ERR_PORT_IN_USE)
        with self.lock:
            if u.private_key is not None:
                self.private_key = u.private_key if any(u.private_key) else None
            if u.listen_port is not None:
                self.listen_port = u.listen_port
            if u.fwmark is not None:
                self.fwmark = u.fwmark
            if u.replace_peers:
                for key in self.peers:
                    self.table.remove_peer(key)
                self.peers.clear()
            own = self.public_key()
            for p in u.peers:
                if p.public_key == own:
                    continue  # wireguard-go ignores a peer with the device's own key
                if p.remove:
                    self.peers.pop(p.public_key, None)
                    self.table.remove_peer(p.public_key)
                    continue
                if p.public_key not in self.peers:
                    if p.update_only:
                        continue
                    self.peers[p.public_key] = {"psk": None, "endpoint": None, "keepalive": 0}
                peer = self.peers[p.public_key]
                if p.preshared_key is not None:
                    peer["psk"] = p.preshared_key if any(p.preshared_key) else None
                if p.endpoint is not None:
                    peer["endpoint"] = p.endpoint
                if p.persistent_keepalive is not None:
                    peer["keepalive"] = p.persistent_keepalive
                if p.replace_allowed_ips:
                    self.table.remove_peer(p.public_key)
                for net in p.allowed_ips:
                    self.table.insert(net, p.public_key)
                for net in p.remove_allowed_ips:
                    self.table.remove(net, p.public_key)


_names = itertools.count()


def unique_interface() -> str:
    return f"mwgt{os.getpid()}{next(_names)}"[:15]


def request(path: str, payload: bytes, replies: int = 1) -> list[bytes]:
    """Send raw protocol bytes on one connection and read `replies` replies (each ends \\n\\n)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(payload)
        data = b""
        while data.count(b"\n\n") < replies:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return [part + b"\n\n" for part in data.split(b"\n\n")[:-1]]


@pytest.fixture
def served(tmp_path):
    """A UapiServer in a private temp directory (no wg needed), closed on exit."""
    model = Model()
    server = UapiServer("mwgtmp0", model.status, model.apply, directory=str(tmp_path / "wg"))
    server.start()
    try:
        yield model, server
    finally:
        server.close()


def test_socket_directory_and_permissions(served, tmp_path):
    model, server = served
    assert server.path == str(tmp_path / "wg" / "mwgtmp0.sock")
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0  # not accessible to group/others
    assert stat.S_IMODE(os.stat(tmp_path / "wg").st_mode) == 0o755


def test_several_requests_on_one_connection(served):
    model, server = served
    priv, _ = keypair()
    _, pub = keypair()
    get, set_ok, get2 = request(server.path, b"get=1\n\n" + (
        f"set=1\nprivate_key={priv.hex()}\nlisten_port=4242\npublic_key={pub.hex()}\n"
        "allowed_ip=10.0.0.2/32\n\n").encode() + b"get=1\n\n", replies=3)
    assert get == b"errno=0\n\n"
    assert set_ok == b"errno=0\n\n"
    assert get2.decode() == model.snapshot()
    assert f"public_key={pub.hex()}\n".encode() in get2 and b"listen_port=4242\n" in get2


def test_invalid_set_changes_nothing_and_connection_stays_usable(served):
    model, server = served
    model.apply(parse_set(["listen_port=1000", "public_key=" + "22" * 32, "allowed_ip=10.0.0.0/8"]))
    before = model.snapshot()
    bad, get = request(server.path, (
        "set=1\nlisten_port=2000\npublic_key=" + "33" * 32 + "\nallowed_ip=10.0.0.0/8\n"
        "endpoint=not-an-endpoint\n\nget=1\n\n").encode(), replies=2)
    assert bad == f"errno={ERR_INVALID}\n\n".encode() == b"errno=-22\n\n"
    assert get.decode() == before == model.snapshot()


def test_get_with_trailing_character_is_invalid(served):
    model, server = served
    (reply,) = request(server.path, b"get=1\nx")
    assert reply == b"errno=-22\n\n"


def test_unexpected_exception_answers_eio_and_server_keeps_running(tmp_path):
    def broken_set(update):
        raise RuntimeError("engine bug")
    calls = []

    def broken_get():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("boom")
        return DeviceStatus(None, 0, 0, [])
    server = UapiServer("mwgtmp1", broken_get, broken_set, directory=str(tmp_path))
    server.start()
    try:
        assert request(server.path, b"set=1\nlisten_port=1\n\n") == [b"errno=-5\n\n"]
        assert request(server.path, b"get=1\n\n") == [b"errno=-5\n\n"]
        assert request(server.path, b"get=1\n\n") == [b"errno=0\n\n"]
    finally:
        server.close()


def test_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "mwgtmp2.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays; connecting to it is refused
    with pytest.raises(ConnectionRefusedError):
        request(str(path), b"get=1\n\n")
    model = Model()
    server = UapiServer("mwgtmp2", model.status, model.apply, directory=str(tmp_path))
    server.start()
    try:
        assert request(str(path), b"get=1\n\n") == [b"errno=0\n\n"]
    finally:
        server.close()
    assert not path.exists()


def test_live_socket_is_not_replaced(served):
    model, server = served
    second = UapiServer("mwgtmp0", Model().status, Model().apply, directory=server.directory)
    with pytest.raises(UapiServerError) as info:
        second.start()
    assert str(info.value) == f"{server.path}: another process already serves interface 'mwgtmp0'"
    assert request(server.path, b"get=1\n\n") == [b"errno=0\n\n"]  # the first still serves


def test_non_socket_file_is_not_replaced(tmp_path):
    (tmp_path / "mwgtmp3.sock").write_text("precious")
    server = UapiServer("mwgtmp3", Model().status, Model().apply, directory=str(tmp_path))
    with pytest.raises(UapiServerError, match="exists and is not a socket"):
        server.start()
    assert (tmp_path / "mwgtmp3.sock").read_text() == "precious"


def test_close_removes_socket_and_stops_serving(tmp_path):
    model = Model()
    server = UapiServer("mwgtmp4", model.status, model.apply, directory=str(tmp_path))
    server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.settimeout(10)
        idle.connect(server.path)
        idle.sendall(b"get=1\n\n")
        assert idle.recv(100) == b"errno=0\n\n"
        server.close()  # the idle, open connection must not keep close() waiting
        assert idle.recv(1) == b""  # ...and is closed by the server
    assert not os.path.exists(server.path)
    server.close()  # idempotent


def test_bad_interface_name():
    with pytest.raises(UapiServerError):
        UapiServer("a/b", Model().status, Model().apply)


# ---------------------------------------------------------------- the real `wg` tool

def wg_skip_reason() -> str | None:
    if WG is None:
        return "wg (wireguard-tools) not installed"
    if os.geteuid() != 0:
        return f"needs root to create sockets in {WG_DIR}"
    return None


needs_wg = pytest.mark.skipif(wg_skip_reason() is not None, reason=wg_skip_reason() or "")


def wg(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([WG, *args], capture_output=True, text=True, timeout=20, input=stdin)
    if check:
        assert result.returncode == 0, f"wg {' '.join(args)}: {result.stderr}"
    return result


@pytest.fixture
def wg_device():
    """A UapiServer in /var/run/wireguard under a unique name, removed also on failure."""
    model = Model()
    iface = unique_interface()
    path = os.path.join(WG_DIR, f"{iface}.sock")
    server = UapiServer(iface, model.status, model.apply)
    server.start()
    try:
        yield iface, model, server
    finally:
        server.close()
        if os.path.lexists(path):
            os.unlink(path)


def write_conf(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


@needs_wg
def test_wg_set_then_show_and_showconf(wg_device, tmp_path):
    iface, model, server = wg_device
    priv, pub = keypair()
    _, peer = keypair()
    psk = os.urandom(32)
    key_file = write_conf(tmp_path, "priv", encode_key(priv) + "\n")
    psk_file = write_conf(tmp_path, "psk", encode_key(psk) + "\n")
    wg("set", iface, "private-key", key_file, "listen-port", "51999", "fwmark", "0x1234",
       "peer", encode_key(peer), "preshared-key", psk_file,
       "allowed-ips", "10.77.0.2/32,fd77::2/128", "endpoint", "198.18.0.2:51820",
       "persistent-keepalive", "25")
    assert model.private_key == priv and model.listen_port == 51999 and model.fwmark == 0x1234
    assert model.peers[peer] == {"psk": psk, "endpoint": ("198.18.0.2", 51820), "keepalive": 25}
    assert model.table.networks_of(peer) == [ip_network("10.77.0.2/32"), ip_network("fd77::2/128")]

    show = wg("show", iface).stdout
    assert f"interface: {iface}" in show
    assert f"public key: {encode_key(pub)}" in show
    assert "listening port: 51999" in show
    assert f"peer: {encode_key(peer)}" in show
    assert "endpoint: 198.18.0.2:51820" in show
    assert "allowed ips: 10.77.0.2/32, fd77::2/128" in show
    assert "transfer: 200 B received, 100 B sent" in show
    assert "every 25 seconds" in show

    dump = wg("show", iface, "dump").stdout.splitlines()
    assert dump[0].split("\t") == [encode_key(priv), encode_key(pub), "51999", "0x1234"]
    assert dump[1].split("\t") == [encode_key(peer), encode_key(psk), "198.18.0.2:51820",
                                   "10.77.0.2/32,fd77::2/128", "1700000000", "200", "100", "25"]
    assert wg("show", "interfaces").stdout.split().count(iface) == 1

    conf = parse_config(wg("showconf", iface).stdout, "showconf")
    assert conf.private_key == priv and conf.listen_port == 51999 and conf.fwmark == 0x1234
    (p,) = conf.peers
    assert (p.public_key, p.preshared_key, p.endpoint, p.persistent_keepalive) == (
        peer, psk, ("198.18.0.2", 51820), 25)
    assert p.allowed_ips == [ip_network("10.77.0.2/32"), ip_network("fd77::2/128")]

    # IPv6 endpoint, removing a peer.
    wg("set", iface, "peer", encode_key(peer), "endpoint", "[fd00::9]:4500")
    assert model.peers[peer]["endpoint"] == ("fd00::9", 4500)
    assert "endpoint: [fd00::9]:4500" in wg("show", iface).stdout
    wg("set", iface, "peer", encode_key(peer), "remove")
    assert model.peers == {} and len(model.table) == 0


def conf_text(priv: bytes, port: int, peers: list[tuple[bytes, str, str | None]]) -> str:
    out = f"[Interface]\nPrivateKey = {encode_key(priv)}\nListenPort = {port}\n"
    for pub, ips, endpoint in peers:
        out += f"\n[Peer]\nPublicKey = {encode_key(pub)}\nAllowedIPs = {ips}\n"
        if endpoint:
            out += f"Endpoint = {endpoint}\n"
    return out


@needs_wg
def test_wg_setconf_addconf_syncconf(wg_device, tmp_path):
    iface, model, server = wg_device
    priv, _ = keypair()
    (_, a), (_, b), (_, c) = keypair(), keypair(), keypair()

    wg("setconf", iface, write_conf(tmp_path, "1.conf", conf_text(
        priv, 51000, [(a, "10.0.0.1/32", "198.18.0.1:1"), (b, "10.0.0.2/32", None)])))
    assert list(model.peers) == [a, b] and model.listen_port == 51000
    assert model.table.lookup(bytes([10, 0, 0, 2])) == b

    # addconf adds c, keeps a and b; c takes over 10.0.0.2/32 (a prefix has one owner).
    wg("addconf", iface, write_conf(tmp_path, "2.conf", conf_text(
        priv, 51000, [(c, "10.0.0.2/32, 10.0.0.3/32", "[fd00::3]:3")])))
    assert set(model.peers) == {a, b, c}
    assert model.table.lookup(bytes([10, 0, 0, 2])) == c
    assert model.table.networks_of(b) == []

    # syncconf makes the device match the file: b and c go, a's allowed IPs are replaced.
    wg("syncconf", iface, write_conf(tmp_path, "3.conf", conf_text(
        priv, 51001, [(a, "10.0.1.0/24", "198.18.0.1:1")])))
    assert list(model.peers) == [a] and model.listen_port == 51001
    assert model.table.networks_of(a) == [ip_network("10.0.1.0/24")]
    assert len(model.table) == 1

    # setconf replaces everything.
    wg("setconf", iface, write_conf(tmp_path, "4.conf", conf_text(priv, 51002, [(b, "0.0.0.0/0", None)])))
    assert list(model.peers) == [b] and model.listen_port == 51002
    assert model.table.lookup(bytes([192, 0, 2, 1])) == b


@needs_wg
def test_wg_example_configs_via_wg_quick_strip(wg_device, tmp_path):
    """The shipped example configuration, stripped by wg-quick, loads through wg setconf."""
    if shutil.which("wg-quick") is None:
        pytest.skip("wg-quick not installed")
    iface, model, server = wg_device
    from tests import REPO as repo
    src = tmp_path / "mwga.conf"
    shutil.copy(repo / "configs" / "example-node-a.conf", src)
    os.chmod(src, 0o600)
    stripped = subprocess.run(["wg-quick", "strip", str(src)], capture_output=True, text=True,
                              check=True, timeout=10).stdout
    wg("setconf", iface, write_conf(tmp_path, "stripped.conf", stripped))
    ours = parse_config((repo / "configs" / "example-node-a.conf").read_text())
    assert model.private_key == ours.private_key and model.listen_port == 51820
    (peer,) = ours.peers
    assert model.peers[peer.public_key] == {"psk": peer.preshared_key, "endpoint": peer.endpoint,
                                            "keepalive": 25}


@needs_wg
def test_wg_set_rejected_by_device_leaves_model_unchanged_and_wg_fails(wg_device, tmp_path):
    iface, model, server = wg_device
    priv, _ = keypair()
    _, peer = keypair()
    wg("set", iface, "private-key", write_conf(tmp_path, "k", encode_key(priv)), "listen-port", "5000")
    model.busy_ports.add(6000)
    before = model.snapshot()
    result = wg("set", iface, "listen-port", "6000", "peer", encode_key(peer),
                "allowed-ips", "10.0.0.0/8", check=False)
    assert result.returncode != 0
    assert "Address already in use" in result.stderr
    assert model.snapshot() == before and model.peers == {}


@needs_wg
def test_wg_sees_stale_socket_replaced(tmp_path):
    iface = unique_interface()
    path = os.path.join(WG_DIR, f"{iface}.sock")
    os.makedirs(WG_DIR, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    model = Model()
    server = UapiServer(iface, model.status, model.apply)
    try:
        stale.bind(path)
        stale.close()
        server.start()
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
        assert wg("show", iface).stdout.startswith(f"interface: {iface}")
    finally:
        server.close()
        if os.path.lexists(path):
            os.unlink(path)
    assert wg("show", iface, check=False).returncode != 0  # gone after close()
