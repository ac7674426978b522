"""Network-namespace test lab: namespaces, veths, bridges, NAT routers and WireGuard daemons.

Everything a test creates is registered with a `Lab`, which tears it all down (processes
first, then namespaces) in `Lab.close()`, also when the test failed. Names are unique per
process (they include os.getpid()) so two runs cannot collide; interface names stay within
Linux's 15 characters.

Address plan: 198.18.0.0/15 for the fake internet / underlay, 10.x for LANs and tunnels
inside namespaces, fd00::/8 for IPv6.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from discovery.lab import netns

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
MESHWG_BIN = REPO / ".venv" / "bin" / "meshwg"
UAPI_DIR = Path("/var/run/wireguard")

_counter = itertools.count(1)
_PID = os.getpid()


def unique_name(prefix: str, limit: int = 15) -> str:
    """A name unique to this process and call, e.g. 'wg12345n3' (at most `limit` chars)."""
    name = f"{prefix}{_PID}n{next(_counter)}"
    if len(name) > limit:
        raise ValueError(f"name {name!r} longer than {limit} characters; use a shorter prefix")
    return name


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its output."""


class LabTimeout(AssertionError):
    """wait_until ran out of time (an AssertionError so pytest reports it as a failure)."""


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               message: str | Callable[[], str] = "condition") -> Any:
    """Call `predicate` until it returns something truthy; return that value.

    Raises LabTimeout naming `message` (a string or a callable giving details) at the deadline.
    Exceptions from the predicate count as "not yet" and the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - "not yet", reported at the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise LabTimeout(f"timed out after {timeout:.1f}s waiting for {text}{detail}")
        time.sleep(interval)


def _cmd_text(cmd: Sequence[str] | str) -> str:
    return cmd if isinstance(cmd, str) else " ".join(str(c) for c in cmd)


def host_run(cmd: Sequence[str] | str, check: bool = True, timeout: float = 30.0,
             input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace; `cmd` is an argv list or a shell string."""
    if isinstance(input, bytes):
        input = input.decode()
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    try:
        return netns.run(argv, check=check, timeout=timeout, input=input)
    except netns.NetnsError as exc:
        raise LabError(str(exc)) from None


# --------------------------------------------------------------------------- processes

class Daemon(netns.Daemon):
    """A background process (discovery.netns.Daemon) plus what the benchmarks read."""

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far, from /proc/PID/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        # after "pid (comm) ": state is field 3 -> index 0; utime is field 14, stime 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def cleanup_files(self) -> None:
        if self.owns_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)


# --------------------------------------------------------------------------- namespaces

class Namespace:
    """A network namespace with loopback up. Create through `Lab.namespace()`."""

    def __init__(self, lab: "Lab", tag: str = "ns"):
        self.lab = lab
        self.name = unique_name(f"nl{tag[:4]}", limit=40)
        host_run(["ip", "netns", "add", self.name])
        lab._namespaces.append(self)
        self.run(["ip", "link", "set", "lo", "up"])

    def __repr__(self) -> str:
        return f"Namespace({self.name})"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *[str(c) for c in cmd]]

    def run(self, cmd: Sequence[str] | str, check: bool = True, timeout: float = 30.0,
            input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside; a string is run through /bin/sh."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return host_run(self.argv(cmd), check=check, timeout=timeout, input=input)

    def popen(self, cmd: Sequence[str], name: str | None = None,
              env: dict[str, str] | None = None, cwd: str | None = None) -> Daemon:
        """Start a background process inside; the lab stops it at cleanup."""
        daemon = Daemon(self.argv(cmd), name or Path(str(cmd[0])).name, env=env, cwd=cwd)
        self.lab._daemons.append(daemon)
        return daemon

    def exec_python(self, code: str, *args: str, timeout: float = 30.0,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run Python source (dedented) inside with the project's interpreter."""
        return self.run([python_executable(), "-c", textwrap.dedent(code), *args],
                        check=check, timeout=timeout)

    def popen_python(self, code: str, *args: str, name: str = "python") -> Daemon:
        return self.popen([python_executable(), "-c", textwrap.dedent(code), *args], name=name)

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def add_address(self, ifname: str, addr: str) -> None:
        """Add an address (with prefix); IPv6 without duplicate address detection."""
        extra = ["nodad"] if ":" in addr else []
        self.run(["ip", "addr", "add", addr, "dev", ifname, *extra])

    def del_address(self, ifname: str, addr: str) -> None:
        self.run(["ip", "addr", "del", addr, "dev", ifname])

    def ping(self, addr: str, count: int = 1, wait: float = 1.0,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(["ping", "-n", "-q", "-c", str(count), "-W", str(wait), addr],
                        check=check, timeout=count * (wait + 1) + 5)

    def wait_ping(self, addr: str, timeout: float = 10.0) -> None:
        """Ping until one reply arrives or `timeout` passes (then LabTimeout)."""
        wait_until(lambda: self.ping(addr, wait=0.5).returncode == 0, timeout=timeout,
                   interval=0.0, message=f"ping {addr} from {self.name}")

    def ping_rtts(self, addr: str, count: int = 20, interval: float = 0.05) -> list[float]:
        """Round-trip times in milliseconds of `count` pings."""
        out = self.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", addr],
                       timeout=count * (interval + 2) + 5).stdout
        return [float(line.split("time=")[1].split()[0])
                for line in out.splitlines() if "time=" in line]

    def delete(self) -> None:
        host_run(["ip", "netns", "del", self.name], check=False)


def python_executable() -> str:
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


# --------------------------------------------------------------------------- links

def _addresses(addr: str | Iterable[str] | None) -> list[str]:
    if addr is None:
        return []
    return [addr] if isinstance(addr, str) else list(addr)


def veth_pair(ns_a: Namespace, ns_b: Namespace, addr_a: str | Iterable[str] | None,
              addr_b: str | Iterable[str] | None, mtu: int | None = None) -> tuple[str, str]:
    """Link two namespaces with a veth pair, address both ends, bring them up.

    Addresses carry a prefix ("198.18.0.1/24", "fd00:1::1/64"); pass a list for several.
    Returns (interface name in ns_a, interface name in ns_b).
    """
    name_a, name_b = unique_name("va"), unique_name("vb")
    host_run(["ip", "link", "add", name_a, "netns", ns_a.name, "type", "veth",
              "peer", "name", name_b, "netns", ns_b.name])
    for ns, name, addrs in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
        if mtu:
            ns.run(["ip", "link", "set", name, "mtu", str(mtu)])
        for a in _addresses(addrs):
            ns.add_address(name, a)
        ns.run(["ip", "link", "set", name, "up"])
    return name_a, name_b


class Bridge:
    """A Linux bridge in its own namespace: an L2 segment that hosts attach to."""

    def __init__(self, lab: "Lab", tag: str = "br"):
        self.ns = lab.namespace(tag)
        self.ifname = "br0"
        self.ns.run(["ip", "link", "add", self.ifname, "type", "bridge"])
        self.ns.run(["ip", "link", "set", self.ifname, "up"])

    def attach(self, host: Namespace, addr: str | Iterable[str] | None) -> str:
        """Connect `host` to the bridge; returns the host-side interface name."""
        host_if, port = veth_pair(host, self.ns, addr, None)
        self.ns.run(["ip", "link", "set", port, "master", self.ifname])
        return host_if


def bridge(lab: "Lab", hosts: Sequence[tuple[Namespace, str | Iterable[str] | None]],
           tag: str = "br") -> tuple[Bridge, list[str]]:
    """One LAN: a bridge namespace plus a veth to each (host, address) pair."""
    br = Bridge(lab, tag)
    return br, [br.attach(ns, addr) for ns, addr in hosts]


class NatRouter:
    """A home router: LAN <-> router namespace (NAT) <-> uplink on the `internet` bridge.

    mode: "keep" (MASQUERADE keeps ports), "rewrite" (udp --to-ports 40000-40100:
    endpoint-independent mapping with port rewriting) or "symmetric" (--random-fully:
    endpoint-dependent mapping). The filter table drops unsolicited inbound packets as a
    home router does (see netlab.md: without it lab hole punching fails for a lab-only reason).
    """

    PORT_RANGE = "40000-40100"

    def __init__(self, lab: "Lab", internet: Bridge, wan_addr: str, lan_host: Namespace,
                 lan_prefix: str = "10.77.0.0/24", mode: str = "rewrite",
                 internet_gateway: str | None = None):
        if mode not in ("keep", "rewrite", "symmetric"):
            raise ValueError(f"NatRouter mode {mode!r}: expected keep, rewrite or symmetric")
        self.lab, self.mode, self.wan_addr = lab, mode, wan_addr
        self.ns = lab.namespace("rtr")
        self.ns.sysctl("net.ipv4.ip_forward", 1)
        self.uplink = internet.attach(self.ns, wan_addr)
        lan = ipaddress.ip_network(lan_prefix)
        hosts = lan.hosts()
        self.lan_gateway = f"{next(hosts)}/{lan.prefixlen}"
        self.lan_host_addr = f"{next(hosts)}/{lan.prefixlen}"
        self.lan_host = lan_host
        self.lan_if, self.host_if = veth_pair(self.ns, lan_host, self.lan_gateway,
                                              self.lan_host_addr)
        lan_host.run(["ip", "route", "add", "default", "via", self.lan_gateway.split("/")[0]])
        if internet_gateway:
            self.ns.run(["ip", "route", "add", "default", "via", internet_gateway])
        up = self.uplink
        if mode == "keep":
            nat = [["-o", up, "-j", "MASQUERADE"]]
        elif mode == "rewrite":
            nat = [["-o", up, "-p", "udp", "-j", "MASQUERADE", "--to-ports", self.PORT_RANGE],
                   ["-o", up, "-j", "MASQUERADE"]]
        else:
            nat = [["-o", up, "-j", "MASQUERADE", "--random-fully"]]
        for rule in nat:
            self.ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", *rule])
        for chain in ("INPUT", "FORWARD"):
            self.ns.run(["iptables", "-A", chain, "-i", up, "-m", "conntrack",
                         "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            self.ns.run(["iptables", "-A", chain, "-i", up, "-j", "DROP"])

    @property
    def public_ip(self) -> str:
        return self.wan_addr.split("/")[0]

    @property
    def lan_host_ip(self) -> str:
        return self.lan_host_addr.split("/")[0]

    def flush_mappings(self) -> None:
        """Drop every NAT mapping (as a NAT reboot or timeout does)."""
        self.ns.run(["conntrack", "-F"], check=False)

    def renumber(self, new_addr: str) -> None:
        """Move the uplink to a new public address (with prefix) and drop all mappings."""
        # Without promote_secondaries, deleting the old (primary) address of the same subnet
        # would delete the new (secondary) one with it.
        self.ns.sysctl(f"net.ipv4.conf.{self.uplink}.promote_secondaries", 1)
        self.ns.add_address(self.uplink, new_addr)
        self.ns.del_address(self.uplink, self.wan_addr)
        self.wan_addr = new_addr
        self.flush_mappings()


# --------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class KeyPair:
    private: str
    public: str


def genkey() -> str:
    return host_run(["wg", "genkey"]).stdout.strip()


def pubkey(private: str) -> str:
    return host_run(["wg", "pubkey"], input=private + "\n").stdout.strip()


def genpsk() -> str:
    return host_run(["wg", "genpsk"]).stdout.strip()


def keypair() -> KeyPair:
    private = genkey()
    return KeyPair(private, pubkey(private))


def _secret_file(value: str) -> str:
    fd, path = tempfile.mkstemp(prefix="netlab-key-")
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def endpoint_text(ip: str, port: int) -> str:
    """'IP:port', with brackets for IPv6 (the form `wg` prints and accepts)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --------------------------------------------------------------------------- WireGuard

@dataclass
class PeerConfig:
    public_key: str
    allowed_ips: list[str]
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int | None = None


class WgInterface:
    """What both daemons share: a named interface in a namespace, read through `wg`."""

    ns: Namespace
    ifname: str
    keys: KeyPair
    daemon: Daemon

    @property
    def public_key(self) -> str:
        return self.keys.public

    @property
    def socket_path(self) -> Path:
        return UAPI_DIR / f"{self.ifname}.sock"

    def wg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.ns.run(["wg", *args], check=check)

    def show(self, what: str | None = None) -> str:
        args = ["show", self.ifname] + ([what] if what else [])
        return self.wg(*args).stdout

    def _per_peer(self, what: str) -> dict[str, list[str]]:
        result = {}
        for line in self.show(what).splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                result[parts[0]] = parts[1:]
        return result

    def endpoints(self) -> dict[str, str]:
        """public key -> endpoint text ('(none)' when unknown)."""
        return {k: v[0] for k, v in self._per_peer("endpoints").items()}

    def latest_handshakes(self) -> dict[str, int]:
        """public key -> unix time of the latest handshake (0 = never)."""
        return {k: int(v[0]) for k, v in self._per_peer("latest-handshakes").items()}

    def transfer(self) -> dict[str, tuple[int, int]]:
        """public key -> (rx_bytes, tx_bytes)."""
        return {k: (int(v[0]), int(v[1])) for k, v in self._per_peer("transfer").items()}

    def listen_port(self) -> int:
        return int(self.show("listen-port").strip())

    def set_listen_port(self, port: int) -> None:
        self.wg("set", self.ifname, "listen-port", str(port))

    def set_peer(self, peer: PeerConfig) -> None:
        """Add or update a peer through `wg set` (works against either daemon)."""
        args = ["set", self.ifname, "peer", peer.public_key,
                "allowed-ips", ",".join(peer.allowed_ips)]
        psk_file = None
        if peer.endpoint:
            args += ["endpoint", peer.endpoint]
        if peer.persistent_keepalive is not None:
            args += ["persistent-keepalive", str(peer.persistent_keepalive)]
        if peer.preshared_key:
            psk_file = _secret_file(peer.preshared_key)
            args += ["preshared-key", psk_file]
        try:
            self.wg(*args)
        finally:
            if psk_file:
                os.unlink(psk_file)

    def set_endpoint(self, public_key: str, endpoint: str) -> None:
        self.wg("set", self.ifname, "peer", public_key, "endpoint", endpoint)

    def wait_handshake(self, public_key: str, after: int = 0, timeout: float = 15.0) -> int:
        """Wait until the peer's latest handshake is newer than `after`; return it."""
        def newer() -> int:
            t = self.latest_handshakes().get(public_key, 0)
            return t if t > after else 0
        return wait_until(newer, timeout=timeout, interval=0.1,
                          message=lambda: f"handshake on {self.ifname} with {public_key}\n"
                                          f"{self.daemon.output()}")

    def stop(self) -> int | None:
        return self.daemon.stop()


def _remove_stale_socket(path: Path) -> None:
    """A daemon killed hard leaves its UAPI socket behind; remove it."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _wait_uapi(iface: WgInterface, timeout: float) -> None:
    def ready() -> bool:
        if not iface.daemon.alive:
            raise LabError(f"{iface.daemon.name} exited early\n{iface.daemon.output()}")
        return iface.socket_path.exists() and iface.wg("show", iface.ifname,
                                                         check=False).returncode == 0
    try:
        wait_until(ready, timeout=timeout, interval=0.05,
                   message=lambda: f"{iface.socket_path} and `wg show {iface.ifname}`\n"
                                   f"{iface.daemon.output()}")
    except LabTimeout as exc:
        if not iface.daemon.alive:
            raise LabError(f"{iface.daemon.name} exited early\n{iface.daemon.output()}") from exc
        raise


class WireguardGo(WgInterface):
    """Debian's wireguard-go in a namespace, configured with `wg` and `ip`."""

    def __init__(self, lab: "Lab", ns: Namespace, address: str | Iterable[str],
                 listen_port: int | None = None, keys: KeyPair | None = None,
                 mtu: int = 1420, ifname: str | None = None, start_timeout: float = 10.0):
        self.ns = ns
        self.ifname = ifname or unique_name("wgo")
        self.keys = keys or keypair()
        self.addresses = _addresses(address)
        lab.add_cleanup(lambda: _remove_stale_socket(self.socket_path))
        self.daemon = ns.popen(["wireguard-go", self.ifname], name=f"wireguard-go-{self.ifname}",
                               env={"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"})
        _wait_uapi(self, start_timeout)
        key_file = _secret_file(self.keys.private)
        try:
            args = ["set", self.ifname, "private-key", key_file]
            if listen_port is not None:
                args += ["listen-port", str(listen_port)]
            self.wg(*args)
        finally:
            os.unlink(key_file)
        for a in self.addresses:
            ns.add_address(self.ifname, a)
        ns.run(["ip", "link", "set", self.ifname, "mtu", str(mtu), "up"])

    def add_peer(self, peer: PeerConfig) -> None:
        """Configure the peer and route its allowed IPs into the tunnel (as wg-quick does)."""
        self.set_peer(peer)
        for cidr in peer.allowed_ips:
            family = "-6" if ":" in cidr else "-4"
            self.ns.run(["ip", family, "route", "replace", cidr, "dev", self.ifname])


def meshwg_command() -> list[str] | None:
    """argv prefix that runs the meshwg CLI, or None when the engine is not there yet."""
    if MESHWG_BIN.exists():
        return [str(MESHWG_BIN)]
    if (REPO / "meshwg" / "cli.py").exists():
        return [python_executable(), "-c",
                "import sys; sys.path.insert(0, %r); from meshwg.cli import main; "
                "sys.exit(main())" % str(REPO), ]
    return None


def wg_quick_config(private_key: str, addresses: Sequence[str], listen_port: int | None,
                    peers: Sequence[PeerConfig], mtu: int | None = None) -> str:
    """The text of a wg-quick configuration file."""
    lines = ["[Interface]", f"PrivateKey = {private_key}"]
    if listen_port is not None:
        lines.append(f"ListenPort = {listen_port}")
    if addresses:
        lines.append(f"Address = {', '.join(addresses)}")
    if mtu:
        lines.append(f"MTU = {mtu}")
    for p in peers:
        lines += ["", "[Peer]", f"PublicKey = {p.public_key}"]
        if p.preshared_key:
            lines.append(f"PresharedKey = {p.preshared_key}")
        lines.append(f"AllowedIPs = {', '.join(p.allowed_ips)}")
        if p.endpoint:
            lines.append(f"Endpoint = {p.endpoint}")
        if p.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {p.persistent_keepalive}")
    return "\n".join(lines) + "\n"


class MeshwgUp(WgInterface):
    """`meshwg up CONFIG --interface NAME [--timer NAME=SECONDS ...]` in a namespace.

    The wg-quick file is written with mode 0600 and removed at lab cleanup. Peers given
    here go into the file; more can be added later with `add_peer` (through `wg set`).
    """

    def __init__(self, lab: "Lab", ns: Namespace, address: str | Iterable[str],
                 listen_port: int | None = None, peers: Sequence[PeerConfig] = (),
                 keys: KeyPair | None = None, mtu: int | None = None,
                 timers: dict[str, float] | None = None, ifname: str | None = None,
                 start_timeout: float = 15.0):
        prefix = meshwg_command()
        if prefix is None:
            raise LabError("meshwg CLI not found (no .venv/bin/meshwg, no meshwg/cli.py)")
        self.ns = ns
        self.ifname = ifname or unique_name("mwg")
        self.keys = keys or keypair()
        self.addresses = _addresses(address)
        self.config_text = wg_quick_config(self.keys.private, self.addresses, listen_port,
                                           list(peers), mtu)
        self.config_path = _secret_file(self.config_text.rstrip("\n"))
        lab.add_cleanup(lambda: os.path.exists(self.config_path) and os.unlink(self.config_path))
        argv = [*prefix, "up", self.config_path, "--interface", self.ifname]
        for name, seconds in (timers or {}).items():
            argv += ["--timer", f"{name}={seconds}"]
        lab.add_cleanup(lambda: _remove_stale_socket(self.socket_path))
        self.daemon = ns.popen(argv, name=f"meshwg-{self.ifname}")
        _wait_uapi(self, start_timeout)

    def add_peer(self, peer: PeerConfig) -> None:
        """Add a peer at run time through `wg set`, and route its allowed IPs."""
        self.set_peer(peer)
        for cidr in peer.allowed_ips:
            family = "-6" if ":" in cidr else "-4"
            self.ns.run(["ip", family, "route", "replace", cidr, "dev", self.ifname])


# --------------------------------------------------------------------------- pairs

IMPLEMENTATIONS = ("meshwg", "wireguard-go")


def start_wireguard(lab: "Lab", kind: str, ns: Namespace, address: Sequence[str],
                    listen_port: int | None, keys: KeyPair, peers: Sequence[PeerConfig] = (),
                    timers: dict[str, float] | None = None, mtu: int = 1420) -> WgInterface:
    """Start one WireGuard interface of `kind` ("meshwg" or "wireguard-go") with its peers."""
    if kind == "meshwg":
        return MeshwgUp(lab, ns, address, listen_port=listen_port, peers=peers, keys=keys,
                        mtu=mtu, timers=timers)
    if kind == "wireguard-go":
        if timers:
            raise LabError("wireguard-go has no adjustable timers")
        wg = WireguardGo(lab, ns, address, listen_port=listen_port, keys=keys, mtu=mtu)
        for p in peers:
            wg.add_peer(p)
        return wg
    raise ValueError(f"unknown WireGuard implementation {kind!r}")


@dataclass
class TunnelPair:
    """Two namespaces over one veth, each running a WireGuard interface to the other.

    Underlay: 198.18.0.1/24 + fd00:18::1/64 (a) and .2 / ::2 (b).
    Tunnel:   10.99.0.1/24 + fd00:99::1/64 (a) and .2 / ::2 (b).
    """

    ns_a: Namespace
    ns_b: Namespace
    a: WgInterface
    b: WgInterface
    veth_a: str
    veth_b: str
    port_a: int
    port_b: int
    psk: str | None = None
    underlay_a: str = "198.18.0.1"
    underlay_b: str = "198.18.0.2"
    underlay6_a: str = "fd00:18::1"
    underlay6_b: str = "fd00:18::2"
    tunnel_a: str = "10.99.0.1"
    tunnel_b: str = "10.99.0.2"
    tunnel6_a: str = "fd00:99::1"
    tunnel6_b: str = "fd00:99::2"


def tunnel_pair(lab: "Lab", kind_a: str, kind_b: str, psk: str | None = None,
                endpoints: str = "both", underlay_v6: bool = False,
                timers_a: dict[str, float] | None = None,
                timers_b: dict[str, float] | None = None,
                port_a: int = 51820, port_b: int = 51821) -> TunnelPair:
    """Build a TunnelPair. `endpoints`: "both", "a" (only a knows b's endpoint: a must
    initiate) or "b". `underlay_v6` uses the IPv6 underlay addresses as endpoints."""
    ns_a, ns_b = lab.namespace("a"), lab.namespace("b")
    veth_a, veth_b = veth_pair(ns_a, ns_b, ["198.18.0.1/24", "fd00:18::1/64"],
                               ["198.18.0.2/24", "fd00:18::2/64"])
    keys_a, keys_b = keypair(), keypair()
    ep_a = endpoint_text("fd00:18::1" if underlay_v6 else "198.18.0.1", port_a)
    ep_b = endpoint_text("fd00:18::2" if underlay_v6 else "198.18.0.2", port_b)
    peer_of_a = PeerConfig(keys_b.public, ["10.99.0.2/32", "fd00:99::2/128"],
                           endpoint=ep_b if endpoints in ("both", "a") else None,
                           preshared_key=psk)
    peer_of_b = PeerConfig(keys_a.public, ["10.99.0.1/32", "fd00:99::1/128"],
                           endpoint=ep_a if endpoints in ("both", "b") else None,
                           preshared_key=psk)
    a = start_wireguard(lab, kind_a, ns_a, ["10.99.0.1/24", "fd00:99::1/64"], port_a, keys_a,
                        [peer_of_a], timers_a)
    b = start_wireguard(lab, kind_b, ns_b, ["10.99.0.2/24", "fd00:99::2/64"], port_b, keys_b,
                        [peer_of_b], timers_b)
    return TunnelPair(ns_a, ns_b, a, b, veth_a, veth_b, port_a, port_b, psk)


# --------------------------------------------------------------------------- traffic

_RECEIVER = r"""
import hashlib, json, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(float(sys.argv[3]))
print("listening", flush=True)
conn, peer = srv.accept()
conn.settimeout(float(sys.argv[3]))
h, n = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "peer": peer[0]}), flush=True)
"""

_SENDER = r"""
import hashlib, json, os, socket, sys, time
ip, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
s = socket.create_connection((ip, port), timeout=timeout)
h, sent, chunk = hashlib.sha256(), 0, 1 << 16
start = time.monotonic()
if seconds:  # stream for a duration, paced to `rate` bytes/s (0 = as fast as possible)
    while time.monotonic() - start < seconds:
        block = os.urandom(chunk)
        s.sendall(block)
        h.update(block)
        sent += len(block)
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
else:
    data = os.urandom(n)
    view = memoryview(data)
    for off in range(0, n, chunk):
        s.sendall(view[off:off + chunk])
    h.update(data)
    sent = n
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(json.dumps({"bytes": sent, "sha256": h.hexdigest(),
                  "seconds": time.monotonic() - start}), flush=True)
"""


@dataclass
class TransferResult:
    sent_bytes: int
    sent_sha256: str
    received_bytes: int
    received_sha256: str
    seconds: float

    @property
    def intact(self) -> bool:
        return (self.sent_bytes == self.received_bytes
                and self.sent_sha256 == self.received_sha256)


def tcp_transfer(sender: Namespace, receiver: Namespace, receiver_ip: str, nbytes: int = 0,
                 port: int = 5201, timeout: float = 60.0, seconds: float = 0.0,
                 rate: float = 0.0) -> TransferResult:
    """Send random data over TCP; both sides hash what they sent/received.

    Sends `nbytes`, or, when `seconds` is given, streams for that long paced to `rate`
    bytes per second (0 = unpaced). Blocks until the receiver reports.
    """
    rx = receiver.popen_python(_RECEIVER, receiver_ip, str(port), str(timeout), name="tcp-rx")
    wait_until(lambda: "listening" in rx.stdout() or not rx.alive, timeout=10,
               message=lambda: f"TCP receiver on {receiver_ip}:{port}\n{rx.output()}")
    if not rx.alive:
        raise LabError(f"TCP receiver failed\n{rx.output()}")
    tx = sender.exec_python(_SENDER, receiver_ip, str(port), str(nbytes), str(timeout),
                            str(seconds), str(rate), timeout=timeout + 10, check=False)
    if tx.returncode != 0:
        rx.stop()
        raise LabError(f"TCP sender failed (exit {tx.returncode}): {tx.stderr[-2000:]}\n"
                       f"{rx.output()}")
    try:
        rx.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rx.stop()
    lines = [l for l in rx.stdout().splitlines() if l.startswith("{")]
    if not lines:
        raise LabError(f"TCP receiver gave no result\n{rx.output()}")
    got, sent = json.loads(lines[-1]), json.loads(tx.stdout.strip().splitlines()[-1])
    return TransferResult(sent["bytes"], sent["sha256"], got["bytes"], got["sha256"],
                          sent["seconds"])


class HandshakeRecorder:
    """Polls `wg show IFACE latest-handshakes` in a thread; collects the distinct values seen.

    Use as a context manager around the traffic whose handshakes you want to observe.
    """

    def __init__(self, iface: WgInterface, public_key: str, interval: float = 0.2):
        self.iface, self.public_key, self.interval = iface, public_key, interval
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                t = self.iface.latest_handshakes().get(self.public_key, 0)
            except LabError:
                t = 0
            if t and (not self.seen or t != self.seen[-1]):
                self.seen.append(t)
            self._stop.wait(self.interval)

    def __enter__(self) -> "HandshakeRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def advances(self) -> int:
        """How many times the latest-handshake time moved forward while recording."""
        return sum(1 for x, y in zip(self.seen, self.seen[1:]) if y > x)


# --------------------------------------------------------------------------- the registry

class Lab:
    """Owns everything a test makes; `close()` removes it all, processes first."""

    def __init__(self) -> None:
        self._namespaces: list[Namespace] = []
        self._daemons: list[Daemon] = []
        self._cleanups: list[Callable[[], Any]] = []

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, tag: str = "ns") -> Namespace:
        return Namespace(self, tag)

    def bridge(self, tag: str = "br") -> Bridge:
        return Bridge(self, tag)

    def nat_router(self, internet: Bridge, wan_addr: str, lan_host: Namespace,
                   **kwargs: Any) -> NatRouter:
        return NatRouter(self, internet, wan_addr, lan_host, **kwargs)

    def wireguard_go(self, ns: Namespace, address: str | Iterable[str], **kwargs: Any
                     ) -> WireguardGo:
        return WireguardGo(self, ns, address, **kwargs)

    def meshwg(self, ns: Namespace, address: str | Iterable[str], **kwargs: Any) -> MeshwgUp:
        return MeshwgUp(self, ns, address, **kwargs)

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        self._cleanups.append(fn)

    def daemons(self) -> list[Daemon]:
        return list(self._daemons)

    def close(self) -> list[str]:
        """Stop processes, run cleanups, delete namespaces; return what went wrong."""
        problems: list[str] = []
        for d in reversed(self._daemons):
            try:
                d.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                problems.append(f"stop {d.name}: {exc!r}")
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                problems.append(f"cleanup {fn!r}: {exc!r}")
        for ns in reversed(self._namespaces):
            ns.delete()
        for d in self._daemons:
            d.cleanup_files()
        self._daemons.clear()
        self._cleanups.clear()
        self._namespaces.clear()
        return problems
