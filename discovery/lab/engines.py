"""WireGuard engines in namespaces: meshwg (``meshwg up``) or Debian's wireguard-go, and
tunnel pairs of them over a veth, for the engine, interop and offload tests and bench.py.

Both engines are read and configured through ``wg`` (:class:`discovery.lab.wg.WgView`),
so a test runs unchanged against either; wireguard-go is the reference.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from meshwg.config import wgquick
from meshwg.core.keys import decode_key
from meshwg.util.endpoint import format_endpoint, parse_endpoint
from meshwg.util.prefix import parse_network

from discovery.lab.netns import Cleanup, Daemon, LabError, Namespace, poll, unique_name, veth
from discovery.lab.wg import KeyPair, PeerConfig, WgView, keypair, remove_uapi_socket, \
    secret_file

IMPLEMENTATIONS = ("meshwg", "wireguard-go")


def meshwg_argv(*args: Any) -> list[str]:
    """argv of the meshwg CLI run with this interpreter (works from a checkout or an install)."""
    return [sys.executable, "-m", "meshwg", *[str(a) for a in args]]


def _as_list(addresses: str | Iterable[str]) -> list[str]:
    return [addresses] if isinstance(addresses, str) else list(addresses)


class WgInterface(WgView):
    """A WireGuard interface served by an engine process (``daemon``) in a namespace."""

    keys: KeyPair
    daemon: Daemon

    @property
    def public_key(self) -> str:
        return self.keys.public

    def stop(self) -> int | None:
        """Stop the engine (SIGTERM, then SIGKILL); its exit code."""
        return self.daemon.stop()

    def _start(self, cleanup: Cleanup, name: str, argv: Sequence[Any],
               env: dict[str, str] | None, timeout: float) -> None:
        """Start the engine and wait until ``wg show`` answers through its socket."""
        cleanup.push(f"remove socket {self.ifname}", lambda: remove_uapi_socket(self.ifname))
        self.daemon = self.ns.popen(argv, name=f"{name}-{self.ifname}", env=env)

        def ready() -> bool:
            self.daemon.check_alive()
            return self.socket_path.exists() and self.wg("show", self.ifname,
                                                         check=False).returncode == 0
        poll(ready, timeout, lambda: f"{self.socket_path} and `wg show {self.ifname}`\n"
                                     f"{self.daemon.output()}")


class WireguardGo(WgInterface):
    """Debian's wireguard-go in a namespace, configured with ``wg`` and ``ip``."""

    def __init__(self, cleanup: Cleanup, ns: Namespace, address: str | Iterable[str],
                 listen_port: int | None = None, keys: KeyPair | None = None,
                 mtu: int = 1420, ifname: str | None = None, start_timeout: float = 10.0):
        super().__init__(ns, ifname or unique_name("wgo"))
        self.keys = keys or keypair()
        self.addresses = _as_list(address)
        self._start(cleanup, "wireguard-go", ["wireguard-go", self.ifname],
                    {"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}, start_timeout)
        with secret_file(self.keys.private) as key_file:
            args: list[Any] = ["set", self.ifname, "private-key", key_file]
            if listen_port is not None:
                args += ["listen-port", listen_port]
            self.wg(*args)
        for cidr in self.addresses:
            ns.add_address(self.ifname, cidr)
        ns.run(["ip", "link", "set", self.ifname, "mtu", mtu, "up"])


def wg_quick_text(keys: KeyPair, addresses: Sequence[str], listen_port: int | None,
                  peers: Sequence[PeerConfig], mtu: int | None = None) -> str:
    """A wg-quick configuration file (meshwg's own formatter writes it)."""
    def peer(p: PeerConfig) -> wgquick.PeerConfig:
        return wgquick.PeerConfig(
            public_key=decode_key(p.public_key),
            preshared_key=decode_key(p.preshared_key) if p.preshared_key else None,
            allowed_ips=[parse_network(c) for c in p.allowed_ips],
            endpoint=parse_endpoint(p.endpoint, ip_only=True) if p.endpoint else None,
            persistent_keepalive=p.persistent_keepalive or 0)
    return wgquick.format_config(wgquick.InterfaceConfig(
        path="lab", private_key=decode_key(keys.private), listen_port=listen_port,
        addresses=[ipaddress.ip_interface(a) for a in addresses], mtu=mtu,
        peers=[peer(p) for p in peers]))


class MeshwgUp(WgInterface):
    """``meshwg up CONFIG --interface NAME [--timer NAME=SECONDS ...]`` in a namespace.

    The wg-quick file (mode 0600, removed at cleanup) holds the peers given here; more can
    be added later with :meth:`add_peer` (through ``wg set``).
    """

    def __init__(self, cleanup: Cleanup, ns: Namespace, address: str | Iterable[str],
                 listen_port: int | None = None, peers: Sequence[PeerConfig] = (),
                 keys: KeyPair | None = None, mtu: int | None = None,
                 timers: dict[str, float] | None = None, ifname: str | None = None,
                 start_timeout: float = 15.0):
        super().__init__(ns, ifname or unique_name("mwg"))
        self.keys = keys or keypair()
        self.addresses = _as_list(address)
        fd, self.config_path = tempfile.mkstemp(prefix="mwlab-", suffix=".conf")  # 0600
        cleanup.push(f"remove {self.config_path}", lambda: os.unlink(self.config_path))
        with os.fdopen(fd, "w") as f:
            f.write(wg_quick_text(self.keys, self.addresses, listen_port, peers, mtu))
        argv = meshwg_argv("up", self.config_path, "--interface", self.ifname)
        for name, seconds in (timers or {}).items():
            argv += ["--timer", f"{name}={seconds}"]
        self._start(cleanup, "meshwg", argv, None, start_timeout)


def start_wireguard(cleanup: Cleanup, kind: str, ns: Namespace, address: Sequence[str],
                    listen_port: int | None, keys: KeyPair, peers: Sequence[PeerConfig] = (),
                    timers: dict[str, float] | None = None, mtu: int = 1420) -> WgInterface:
    """One WireGuard interface of ``kind`` ("meshwg" or "wireguard-go") with its peers
    (routed). Raises LabError for timers on wireguard-go, ValueError for another kind."""
    if kind == "meshwg":
        return MeshwgUp(cleanup, ns, address, listen_port=listen_port, peers=peers, keys=keys,
                        mtu=mtu, timers=timers)
    if kind == "wireguard-go":
        if timers:
            raise LabError("wireguard-go has no adjustable timers")
        wg = WireguardGo(cleanup, ns, address, listen_port=listen_port, keys=keys, mtu=mtu)
        for p in peers:
            wg.add_peer(p)
        return wg
    raise ValueError(f"unknown WireGuard implementation {kind!r}: expected one of "
                     f"{', '.join(IMPLEMENTATIONS)}")


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


def tunnel_pair(cleanup: Cleanup, kind_a: str, kind_b: str, psk: str | None = None,
                endpoints: str = "both", underlay_v6: bool = False,
                timers_a: dict[str, float] | None = None,
                timers_b: dict[str, float] | None = None,
                port_a: int = 51820, port_b: int = 51821) -> TunnelPair:
    """Build a :class:`TunnelPair` of engines ``kind_a`` and ``kind_b``. ``endpoints``:
    "both", "a" (only a knows b's endpoint: a must initiate) or "b". ``underlay_v6`` uses
    the IPv6 underlay addresses as endpoints."""
    p = TunnelPair  # the address plan lives in the dataclass defaults
    ns_a, ns_b = Namespace(cleanup, "a"), Namespace(cleanup, "b")
    veth_a, veth_b = veth(ns_a, ns_b, [f"{p.underlay_a}/24", f"{p.underlay6_a}/64"],
                          [f"{p.underlay_b}/24", f"{p.underlay6_b}/64"])
    keys_a, keys_b = keypair(), keypair()
    ep_a = format_endpoint((p.underlay6_a if underlay_v6 else p.underlay_a, port_a))
    ep_b = format_endpoint((p.underlay6_b if underlay_v6 else p.underlay_b, port_b))
    peer_of_a = PeerConfig(keys_b.public, [f"{p.tunnel_b}/32", f"{p.tunnel6_b}/128"],
                           endpoint=ep_b if endpoints in ("both", "a") else None,
                           preshared_key=psk)
    peer_of_b = PeerConfig(keys_a.public, [f"{p.tunnel_a}/32", f"{p.tunnel6_a}/128"],
                           endpoint=ep_a if endpoints in ("both", "b") else None,
                           preshared_key=psk)
    a = start_wireguard(cleanup, kind_a, ns_a, [f"{p.tunnel_a}/24", f"{p.tunnel6_a}/64"],
                        port_a, keys_a, [peer_of_a], timers_a)
    b = start_wireguard(cleanup, kind_b, ns_b, [f"{p.tunnel_b}/24", f"{p.tunnel6_b}/64"],
                        port_b, keys_b, [peer_of_b], timers_b)
    return TunnelPair(ns_a, ns_b, a, b, veth_a, veth_b, port_a, port_b, psk)
