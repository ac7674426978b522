"""wg-quick configuration files: parse, validate and format, with PATH:LINE errors.

The accepted language is wg-quick's: an [Interface] section and [Peer] sections of
`Key = Value` lines; section names and keys are case-insensitive, `#` starts a comment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from typing import Union

from meshwg.core.keys import KeyFormatError, decode_key, encode_key
from meshwg.util.endpoint import EndpointError, format_endpoint, parse_port, split_hostport
from meshwg.util.errors import MeshwgError
from meshwg.util.prefix import Network, has_host_bits, parse_network
from meshwg.util.resolve import Resolver, resolve_endpoint

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

MIN_MTU = 68
MAX_MTU = 65535

# wg-quick keys that only matter to wg-quick's shell hooks / resolver setup: accepted, ignored.
IGNORED_INTERFACE_KEYS = {k.lower(): k for k in
                          ("DNS", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig")}
INTERFACE_KEYS = {k.lower(): k for k in ("PrivateKey", "ListenPort", "Address", "MTU", "FwMark")}
PEER_KEYS = {k.lower(): k for k in
             ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")}
REPEATABLE_KEYS = {"address", "allowedips"} | set(IGNORED_INTERFACE_KEYS)

_DIGITS = re.compile(r"[0-9]+")
_SECTION = re.compile(r"\[\s*([^\]]*?)\s*\]")


class ConfigError(MeshwgError):
    """A configuration mistake; str() is one line: "PATH:LINE: message"."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


@dataclass
class PeerConfig:
    public_key: bytes
    preshared_key: bytes | None = field(default=None, repr=False)  # secret: kept out of repr
    allowed_ips: list[Network] = field(default_factory=list)
    endpoint: tuple[str, int] | None = None  # (IP string, port), host names already resolved
    persistent_keepalive: int = 0  # seconds, 0 = off
    line: int = field(default=0, compare=False)  # line of the [Peer] header


@dataclass
class InterfaceConfig:
    path: str
    private_key: bytes = field(repr=False)  # secret: kept out of repr/logs
    listen_port: int | None = None
    addresses: list[Interface] = field(default_factory=list)
    mtu: int | None = None
    fwmark: int | None = None  # 0 = explicitly off
    peers: list[PeerConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, compare=False)  # "PATH:LINE: ..." lines


class _Parser:
    def __init__(self, path: str, resolve: Resolver):
        self.path = path
        self.resolve = resolve
        self.section: str | None = None
        self.interface_line: int | None = None
        self.private_key: bytes | None = None
        self.iface: dict = {"listen_port": None, "addresses": [], "mtu": None, "fwmark": None}
        self.peers: list[PeerConfig] = []
        self.peer_has_key: list[bool] = []
        self.seen_keys: dict[str, int] = {}  # key -> first line, for the current section
        self.peer_key_lines: dict[bytes, int] = {}
        self.warnings: list[str] = []
        self.lineno = 0

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.path, line if line is not None else self.lineno, message)

    def parse(self, text: str) -> InterfaceConfig:
        for self.lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                self.start_section(line)
            else:
                key, sep, value = line.partition("=")
                if not sep:
                    raise self.error(f"expected 'Key = Value', got {line!r}")
                self.handle(key.strip(), value.strip())
        return self.finish()

    def start_section(self, line: str) -> None:
        match = _SECTION.fullmatch(line)
        name = match.group(1).lower() if match else ""
        if name == "interface":
            self.section = "interface"
            if self.interface_line is None:
                self.interface_line = self.lineno
        elif name == "peer":
            self.section = "peer"
            self.peers.append(PeerConfig(public_key=b"", line=self.lineno))
            self.peer_has_key.append(False)
        else:
            raise self.error(f"unknown section {line!r} (expected [Interface] or [Peer])")
        self.seen_keys = {}

    def handle(self, key: str, value: str) -> None:
        lower = key.lower()
        if self.section is None:
            raise self.error(f"{key} = {value!r} appears before any [Interface] or [Peer] section")
        known = INTERFACE_KEYS if self.section == "interface" else PEER_KEYS
        if lower in IGNORED_INTERFACE_KEYS and self.section == "interface":
            self.warnings.append(f"{self.path}:{self.lineno}: {IGNORED_INTERFACE_KEYS[lower]} is a "
                                 f"wg-quick setting that meshwg ignores")
            return
        if lower not in known:
            where = "[Interface]" if self.section == "interface" else "[Peer]"
            raise self.error(f"unknown key {key!r} in {where} section")
        name = known[lower]
        if lower not in REPEATABLE_KEYS:
            if lower in self.seen_keys:
                raise self.error(f"{name} given twice (first on line {self.seen_keys[lower]})")
            self.seen_keys[lower] = self.lineno
        if not value and lower not in ("address", "allowedips"):
            raise self.error(f"{name}: empty value")
        getattr(self, f"set_{lower}")(name, value)

    # [Interface]

    def key(self, name: str, value: str) -> bytes:
        try:
            return decode_key(value, name)
        except KeyFormatError as exc:
            raise self.error(str(exc)) from None

    def set_privatekey(self, name: str, value: str) -> None:
        self.private_key = self.key(name, value)

    def set_listenport(self, name: str, value: str) -> None:
        try:
            self.iface["listen_port"] = parse_port(value, lowest=0)
        except EndpointError:
            raise self.error(f"{name}: not a port number (0-65535): {value!r}") from None

    def set_address(self, name: str, value: str) -> None:
        for item in _comma_list(value):
            try:
                if "/" in item and not _DIGITS.fullmatch(item.partition("/")[2]):
                    raise ValueError(item)
                self.iface["addresses"].append(ipaddress.ip_interface(item))
            except ValueError:
                raise self.error(f"{name}: not an IP address with optional /prefix: {item!r}") from None

    def set_mtu(self, name: str, value: str) -> None:
        if not _DIGITS.fullmatch(value) or not MIN_MTU <= int(value) <= MAX_MTU:
            raise self.error(f"{name}: not a number in {MIN_MTU}-{MAX_MTU}: {value!r}")
        self.iface["mtu"] = int(value)

    def set_fwmark(self, name: str, value: str) -> None:
        try:
            if value.lower() == "off":
                mark = 0
            elif value[:2].lower() == "0x" and len(value) > 2:
                mark = int(value[2:], 16) if re.fullmatch(r"[0-9a-fA-F]+", value[2:]) else -1
            elif _DIGITS.fullmatch(value):
                mark = int(value)
            else:
                mark = -1
        except ValueError:
            mark = -1
        if not 0 <= mark <= 0xFFFFFFFF:
            raise self.error(f"{name}: neither 'off' nor a number in 0-0xffffffff: {value!r}")
        self.iface["fwmark"] = mark

    # [Peer]

    def set_publickey(self, name: str, value: str) -> None:
        key = self.key(name, value)
        first = self.peer_key_lines.get(key)
        if first is not None:
            raise self.error(f"{name}: peer {value} appears twice (first on line {first})")
        self.peer_key_lines[key] = self.lineno
        self.peers[-1].public_key = key
        self.peer_has_key[-1] = True

    def set_presharedkey(self, name: str, value: str) -> None:
        self.peers[-1].preshared_key = self.key(name, value)

    def set_allowedips(self, name: str, value: str) -> None:
        for item in _comma_list(value):
            try:
                net = parse_network(item)
            except ValueError:
                raise self.error(f"{name}: not a CIDR prefix: {item!r}") from None
            if has_host_bits(item):
                self.warnings.append(f"{self.path}:{self.lineno}: {name}: {item} has a nonzero "
                                     f"host part; using {net}")
            self.peers[-1].allowed_ips.append(net)

    def set_endpoint(self, name: str, value: str) -> None:
        try:
            host, port_text = split_hostport(value)
        except EndpointError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise self.error(f"{name}: not HOST:PORT or [IPv6]:PORT ({reason}): {value!r}") from None
        try:
            port = parse_port(port_text)
        except EndpointError:
            raise self.error(f"{name}: port is not a number in 1-65535: {value!r}") from None
        self.peers[-1].endpoint = (self.resolve_host(name, host, port, value), port)

    def resolve_host(self, name: str, host: str, port: int, value: str) -> str:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        try:
            return resolve_endpoint(host, port, getaddrinfo=self.resolve)[0]
        except EndpointError as exc:
            raise self.error(f"{name}: {exc} in {value!r}") from None

    def set_persistentkeepalive(self, name: str, value: str) -> None:
        if value.lower() == "off":
            self.peers[-1].persistent_keepalive = 0
        elif _DIGITS.fullmatch(value) and int(value) <= 65535:
            self.peers[-1].persistent_keepalive = int(value)
        else:
            raise self.error(f"{name}: neither 'off' nor a number of seconds in 0-65535: {value!r}")

    def finish(self) -> InterfaceConfig:
        for peer, has_key in zip(self.peers, self.peer_has_key):
            if not has_key:
                raise self.error("[Peer] section without PublicKey", peer.line)
        if self.interface_line is None:
            raise self.error("no [Interface] section", 1)
        if self.private_key is None:
            raise self.error("[Interface] section without PrivateKey", self.interface_line)
        return InterfaceConfig(path=self.path, private_key=self.private_key, peers=self.peers,
                               warnings=self.warnings, **self.iface)


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_config(text: str, path: str = "<string>",
                 resolve: Resolver = socket.getaddrinfo) -> InterfaceConfig:
    """Parse wg-quick configuration text; raises ConfigError naming path:line, key and value.

    `resolve` is called like socket.getaddrinfo(host, port, 0, SOCK_DGRAM) for Endpoint
    host names that are not IP literals.
    """
    return _Parser(path, resolve).parse(text)


def load_config(path: str, resolve: Resolver = socket.getaddrinfo) -> InterfaceConfig:
    """Read and parse a configuration file; unreadable files raise ConfigError too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read configuration: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_config(text, path, resolve)


def private_key_permission_warning(path: str) -> str | None:
    """A warning if the file (which holds a private key) is readable or writable by group/others."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if mode & 0o066:
        return (f"Warning: `{path}' is accessible by group or others (mode {mode:04o}) "
                f"but holds a private key; run: chmod 600 {path}")
    return None


def format_config(cfg: InterfaceConfig) -> str:
    """wg-quick text for `cfg` (showconf-like); parse_config() reads it back unchanged."""
    out = ["[Interface]", f"PrivateKey = {encode_key(cfg.private_key)}"]
    if cfg.listen_port is not None:
        out.append(f"ListenPort = {cfg.listen_port}")
    if cfg.addresses:
        out.append("Address = " + ", ".join(str(a) for a in cfg.addresses))
    if cfg.mtu is not None:
        out.append(f"MTU = {cfg.mtu}")
    if cfg.fwmark is not None:
        out.append(f"FwMark = {cfg.fwmark:#x}" if cfg.fwmark else "FwMark = off")
    for peer in cfg.peers:
        out += ["", "[Peer]", f"PublicKey = {encode_key(peer.public_key)}"]
        if peer.preshared_key is not None:
            out.append(f"PresharedKey = {encode_key(peer.preshared_key)}")
        if peer.allowed_ips:
            out.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.endpoint is not None:
            out.append(f"Endpoint = {format_endpoint(peer.endpoint)}")
        if peer.persistent_keepalive:
            out.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(out) + "\n"
