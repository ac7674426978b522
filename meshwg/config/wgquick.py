"""wg-quick configuration files: parse, validate and format, with PATH:LINE errors.

The accepted language is wg-quick's: an [Interface] section and [Peer] sections of
`Key = Value` lines; section names and keys are case-insensitive, `#` starts a comment
(except in the hook keys, whose whole value goes to bash, as wg-quick does); a UTF-8 byte
order mark before the first line is skipped; lines end at "\n" (a "\r" before it is white
space), never at the other characters str.splitlines breaks at.

Where wg (wireguard-tools src/config.c) or wg-quick (src/wg-quick/linux.bash) accept a
value, it is accepted with the same meaning; the rest is refused with one "PATH:LINE:"
line. In particular:
- `Endpoint = fd77::2:51820`: an IPv6 address without brackets is split at the last colon,
  as `wg setconf` does (address fd77::2, port 51820).
- Every number is bounded before it is converted (leading zeros allowed, as strtoul does),
  so thousands of digits are a one-line error.
- A peer whose PublicKey is the interface's own public key is left out with a warning: wg,
  the kernel and wireguard-go ignore such a peer silently.
- An all-zero PrivateKey is refused: wg passes it on, and the kernel and wireguard-go then
  run with no private key at all, which meshwg refuses for a file without PrivateKey too,
  unless it has a PostUp hook, which may set one as wg-quick(8)'s example does (`PostUp =
  wg set %i private-key <(pass WireGuard/private-keys/%i)`; meshwg up checks after it).
- wg-quick's own keys: DNS (servers and search domains), Table (off, auto, main or a
  number), PreUp/PostUp/PreDown/PostDown (repeatable, `%i` kept for the runner to
  replace) and SaveConfig (true/false); meshwg.cli.quick applies them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from typing import Union

from meshwg.core.crypto import public_key
from meshwg.core.keys import KeyFormatError, decode_key, encode_key, quoted
from meshwg.util.endpoint import EndpointError, format_endpoint, parse_port, split_hostport
from meshwg.util.errors import MeshwgError
from meshwg.util.numbers import bounded_int
from meshwg.util.prefix import Network, has_host_bits, parse_network
from meshwg.util.resolve import Resolver, resolve_endpoint

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

MIN_MTU = 68
MAX_MTU = 65535

MAX_CONFIG_BYTES = 32 << 20   # load_config reads no more (a file of 100,000 peers is ~12 MiB)
MAX_TABLE = 0xFFFFFFFF         # routing table ids are 32 bits (RTA_TABLE)

HOOK_KEYS = ("PreUp", "PostUp", "PreDown", "PostDown")
INTERFACE_KEYS = {k.lower(): k for k in ("PrivateKey", "ListenPort", "Address", "MTU", "FwMark",
                                         "DNS", "Table", "SaveConfig") + HOOK_KEYS}
PEER_KEYS = {k.lower(): k for k in
             ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")}
REPEATABLE_KEYS = {"address", "allowedips", "dns"} | {k.lower() for k in HOOK_KEYS}
EMPTY_ALLOWED = {"address", "allowedips", "dns"} | {k.lower() for k in HOOK_KEYS}

_DIGITS = re.compile(r"[0-9]+")
_DOMAIN = re.compile(r"~?(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_.])?|\.)")
_BOM = "\ufeff"


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
    allowed_ip_lines: dict = field(default_factory=dict, compare=False, repr=False)  # net -> line


@dataclass
class InterfaceConfig:
    path: str
    private_key: bytes | None = field(repr=False)  # secret: kept out of repr/logs; None: a
                                                   # PostUp hook sets it (wg-quick(8)'s pass example)
    listen_port: int | None = None
    addresses: list[Interface] = field(default_factory=list)
    mtu: int | None = None
    fwmark: int | None = None  # 0 = explicitly off
    peers: list[PeerConfig] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)          # name server addresses
    dns_search: list[str] = field(default_factory=list)   # search domains
    table: str | None = None  # None (= auto), "auto", "off", "main" or a decimal table id
    pre_up: list[str] = field(default_factory=list)       # bash snippets, "%i" unreplaced
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False
    warnings: list[str] = field(default_factory=list, compare=False)  # "PATH:LINE: ..." lines


class _Parser:
    def __init__(self, path: str, resolve: Resolver):
        self.path = path
        self.resolve = resolve
        self.section: str | None = None
        self.interface_line: int | None = None
        self.private_key: bytes | None = None
        self.iface: dict = {"listen_port": None, "addresses": [], "mtu": None, "fwmark": None,
                            "dns": [], "dns_search": [], "table": None, "pre_up": [],
                            "post_up": [], "pre_down": [], "post_down": [], "save_config": False}
        self.peers: list[PeerConfig] = []
        self.peer_has_key: list[bool] = []
        self.seen_keys: dict[str, int] = {}  # key -> first line, for the current section
        self.peer_key_lines: dict[bytes, int] = {}
        self.warnings: list[str] = []
        self.lineno = 0

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.path, line if line is not None else self.lineno, message)

    def parse(self, text: str) -> InterfaceConfig:
        if text.startswith(_BOM):
            text = text[len(_BOM):]
        # lines end at "\n" only, as wg-quick's `read -r` and wg's getline see them
        # (str.splitlines also breaks at U+2028, NEL, VT, FF: a "# comment" holding one
        # would hide a PostUp line that meshwg runs and wg-quick does not)
        for self.lineno, raw in enumerate(text.split("\n"), start=1):
            if "\x00" in raw:   # bash would drop it; Python's exec refuses it (a traceback)
                raise self.error("a NUL byte: not a text line")
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                self.start_section(line)
            else:
                key, sep, value = line.partition("=")
                if not sep:
                    raise self.error(f"expected 'Key = Value', got {quoted(line, line)}")
                if self.section == "interface" and key.strip().lower() in _HOOKS:
                    value = raw.partition("=")[2]   # a hook keeps its '#' (wg-quick's unstripped_value)
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
            raise self.error(f"unknown section {quoted('', line)} (expected [Interface] or [Peer])")
        self.seen_keys = {}

    def handle(self, key: str, value: str) -> None:
        lower = key.lower()
        if self.section is None:
            raise self.error(f"{key} = {quoted(key, value)} appears before any [Interface] or [Peer] section")
        known = INTERFACE_KEYS if self.section == "interface" else PEER_KEYS
        if lower not in known:
            where = "[Interface]" if self.section == "interface" else "[Peer]"
            raise self.error(f"unknown key {quoted(key, key)} in {where} section")
        name = known[lower]
        if lower not in REPEATABLE_KEYS:
            if lower in self.seen_keys:
                raise self.error(f"{name} given twice (first on line {self.seen_keys[lower]})")
            self.seen_keys[lower] = self.lineno
        if not value and lower not in EMPTY_ALLOWED:
            raise self.error(f"{name}: empty value")
        if lower in _HOOKS:
            if value:
                self.iface[_HOOKS[lower]].append(value)
            return
        getattr(self, f"set_{lower}")(name, value)

    # [Interface]

    def key(self, name: str, value: str) -> bytes:
        try:
            return decode_key(value, name)
        except KeyFormatError:
            raise self.error(f"{name}: not a valid base64 WireGuard key: {quoted(name, value)}") from None

    def set_privatekey(self, name: str, value: str) -> None:
        self.private_key = self.key(name, value)
        if self.private_key == bytes(32):
            raise self.error(f"{name}: all zeros, which wg takes as no private key at all; "
                             f"generate one with `meshwg genkey`")

    def set_listenport(self, name: str, value: str) -> None:
        try:
            self.iface["listen_port"] = parse_port(value, lowest=0)
        except EndpointError:
            raise self.error(f"{name}: not a port number (0-65535): {quoted('', value)}") from None

    def set_address(self, name: str, value: str) -> None:
        for item in _comma_list(value):
            try:
                if "/" in item and not _DIGITS.fullmatch(item.partition("/")[2]):
                    raise ValueError(item)
                if "%" in item:   # `ip address add` refuses a scope (wg-quick fails there)
                    raise ValueError(item)
                self.iface["addresses"].append(ipaddress.ip_interface(item))
            except ValueError:
                raise self.error(f"{name}: not an IP address with optional /prefix: {quoted('', item)}") from None

    def set_mtu(self, name: str, value: str) -> None:
        mtu = bounded_int(value, MAX_MTU, MIN_MTU)
        if mtu is None:
            raise self.error(f"{name}: not a number in {MIN_MTU}-{MAX_MTU}: {quoted('', value)}")
        self.iface["mtu"] = mtu

    def set_fwmark(self, name: str, value: str) -> None:
        if value.lower() == "off":
            mark: int | None = 0
        elif value[:2].lower() == "0x" and re.fullmatch(r"0*[0-9a-fA-F]{1,8}", value[2:]):
            mark = int(value[2:], 16)
        else:
            mark = bounded_int(value, 0xFFFFFFFF)
        if mark is None:
            raise self.error(f"{name}: neither 'off' nor a number in 0-0xffffffff: {quoted('', value)}")
        self.iface["fwmark"] = mark

    def set_dns(self, name: str, value: str) -> None:
        """wg-quick's split: what looks like an address (digits and dots, or a colon) is a
        name server, anything else a search domain."""
        for item in value.replace(",", " ").split():
            if re.fullmatch(r"[0-9.]+", item) or ":" in item:
                try:
                    self.iface["dns"].append(str(ipaddress.ip_address(item)))
                except ValueError:
                    raise self.error(f"{name}: not an IP address: {quoted('', item)}") from None
            elif _DOMAIN.fullmatch(item):
                self.iface["dns_search"].append(item)
            else:
                raise self.error(f"{name}: neither an IP address nor a search domain: "
                                 f"{quoted('', item)}")

    def set_table(self, name: str, value: str) -> None:
        lower = value.lower()
        if lower in ("off", "auto", "main"):
            self.iface["table"] = lower
            return
        table = bounded_int(value, MAX_TABLE, 1)
        if table is None:
            raise self.error(f"{name}: neither 'off', 'auto', 'main' nor a routing table number "
                             f"in 1-{MAX_TABLE}: {quoted('', value)}")
        self.iface["table"] = str(table)

    def set_saveconfig(self, name: str, value: str) -> None:
        if value.lower() not in ("true", "false"):
            raise self.error(f"{name}: neither true nor false: {quoted('', value)}")
        self.iface["save_config"] = value.lower() == "true"

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
                raise self.error(f"{name}: not a CIDR prefix: {quoted('', item)}") from None
            if has_host_bits(item):
                self.warnings.append(f"{self.path}:{self.lineno}: {name}: {item} has a nonzero "
                                     f"host part; using {net}")
            self.peers[-1].allowed_ips.append(net)
            self.peers[-1].allowed_ip_lines.setdefault(net, self.lineno)

    def set_endpoint(self, name: str, value: str) -> None:
        try:
            if not value.startswith("[") and value.count(":") > 1:
                host, port_text = self.unbracketed_ipv6(name, value)
            else:
                host, port_text = split_hostport(value)
        except EndpointError as exc:
            reason = str(exc).split(": ", 1)[-1][:80]
            raise self.error(f"{name}: not HOST:PORT or [IPv6]:PORT ({reason}): {quoted('', value)}") from None
        try:
            port = parse_port(port_text)
        except EndpointError:
            raise self.error(f"{name}: port is not a number in 1-65535: {quoted('', value)}") from None
        self.peers[-1].endpoint = (self.resolve_host(name, host, port, value), port)

    def unbracketed_ipv6(self, name: str, value: str) -> tuple[str, str]:
        """`wg setconf` splits an unbracketed endpoint at its last colon (config.c,
        parse_endpoint): "fd77::2:51820" is fd77::2 port 51820. The part before must then
        be an IPv6 address."""
        host, _, port_text = value.rpartition(":")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise self.error(f"{name}: not HOST:PORT or [IPv6]:PORT ({quoted('', host)} before the last "
                             f"colon is not an IPv6 address): {quoted('', value)}") from None
        return host, port_text

    def resolve_host(self, name: str, host: str, port: int, value: str) -> str:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        try:
            return resolve_endpoint(host, port, getaddrinfo=self.resolve)[0]
        except EndpointError as exc:
            raise self.error(f"{name}: {exc} in {quoted('', value)}") from None

    def set_persistentkeepalive(self, name: str, value: str) -> None:
        seconds = 0 if value.lower() == "off" else bounded_int(value, 65535)
        if seconds is None:
            raise self.error(f"{name}: neither 'off' nor a number of seconds in 0-65535: "
                             f"{quoted('', value)}")
        self.peers[-1].persistent_keepalive = seconds

    def finish(self) -> InterfaceConfig:
        for peer, has_key in zip(self.peers, self.peer_has_key):
            if not has_key:
                raise self.error("[Peer] section without PublicKey", peer.line)
        if self.interface_line is None:
            raise self.error("no [Interface] section", 1)
        if self.private_key is None and not self.iface["post_up"]:
            raise self.error("[Interface] section without PrivateKey (or a PostUp hook that "
                             "sets one: `PostUp = wg set %i private-key FILE`)", self.interface_line)
        own = public_key(self.private_key) if self.private_key is not None else None
        for peer in [p for p in self.peers if p.public_key == own]:
            self.warnings.append(f"{self.path}:{peer.line}: [Peer] has this interface's own "
                                 f"public key; it is left out (wg ignores it too)")
            self.peers.remove(peer)
        return InterfaceConfig(path=self.path, private_key=self.private_key, peers=self.peers,
                               warnings=self.warnings, **self.iface)


_HOOKS = {k.lower(): f"{k[:-2].lower()}_{k[-2:].lower()}" if k.endswith("Up")
          else f"{k[:-4].lower()}_down" for k in HOOK_KEYS}   # "preup" -> "pre_up"


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
    """Read and parse a configuration file; unreadable files, and files over
    MAX_CONFIG_BYTES (/dev/zero, a FIFO that never ends), raise ConfigError too."""
    return parse_config(read_config_text(path), path, resolve)


def read_config_text(path: str) -> str:
    """A configuration file's text (UTF-8, at most MAX_CONFIG_BYTES); ConfigError else."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(path, None, f"larger than {MAX_CONFIG_BYTES >> 20} MiB: not a "
                                          f"WireGuard configuration (100,000 peers take ~12 MiB)")
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read configuration: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return text


QUICK_ONLY_KEYS = ("address", "mtu", "dns", "table", "saveconfig") + tuple(k.lower() for k in HOOK_KEYS)


def strip_config(text: str) -> str:
    """`wg-quick strip`: the text without the [Interface] keys that are wg-quick's own
    (Address, MTU, DNS, Table, SaveConfig, the hooks), for `wg setconf` and `wg syncconf`.
    As wg-quick's parse_options and cmd_strip do it: every other line is kept as it is,
    comments too, without leading and trailing blanks, and its `echo` ends the text with
    an empty line. Unlike wg-quick, a byte order mark is dropped and `[ Interface ]` (with
    blanks inside, which wg reads as [Interface]) starts the section too: wg-quick passes
    both to wg, which then refuses the file."""
    if text.startswith(_BOM):
        text = text[len(_BOM):]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    kept = []
    interface = False
    for raw in lines:
        line = raw.strip(" \t")                      # bash's `read -r`
        key = line.split("#", 1)[0].split("=", 1)[0].strip()
        if key.startswith("["):
            match = _SECTION.fullmatch(key)
            interface = bool(match) and match.group(1).lower() == "interface"
        if not (interface and key.lower() in QUICK_ONLY_KEYS):
            kept.append(line + "\n")
    return "".join(kept) + "\n"


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
    out = ["[Interface]"]
    if cfg.private_key is not None:
        out.append(f"PrivateKey = {encode_key(cfg.private_key)}")
    if cfg.listen_port is not None:
        out.append(f"ListenPort = {cfg.listen_port}")
    if cfg.addresses:
        out.append("Address = " + ", ".join(str(a) for a in cfg.addresses))
    if cfg.mtu is not None:
        out.append(f"MTU = {cfg.mtu}")
    if cfg.fwmark is not None:
        out.append(f"FwMark = {cfg.fwmark:#x}" if cfg.fwmark else "FwMark = off")
    out += [f"DNS = {item}" for item in cfg.dns + cfg.dns_search]
    if cfg.table is not None:
        out.append(f"Table = {cfg.table}")
    if cfg.save_config:
        out.append("SaveConfig = true")
    for key in HOOK_KEYS:
        out += [f"{key} = {command}" for command in getattr(cfg, _HOOKS[key.lower()])]
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
