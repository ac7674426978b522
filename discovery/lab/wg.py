"""WireGuard interfaces seen through Debian's ``wg`` tool: keys, peers, ``wg show``.

Works the same against any engine behind the interface (meshwg, wireguard-go): it only
speaks ``wg``, which talks to the engine's control socket in /var/run/wireguard. Keys are
base64 text, as ``wg`` reads and prints them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from discovery.lab.netns import LabError, Namespace, run

UAPI_DIR = Path("/var/run/wireguard")


@dataclass(frozen=True)
class KeyPair:
    """A private key and its public key, base64 text."""

    private: str
    public: str


def genkey() -> str:
    """A new private key (``wg genkey``)."""
    return run(["wg", "genkey"]).stdout.strip()


def pubkey(private: str) -> str:
    """The public key of a private key (``wg pubkey``)."""
    return run(["wg", "pubkey"], input=private + "\n").stdout.strip()


def genpsk() -> str:
    """A new preshared key (``wg genpsk``)."""
    return run(["wg", "genpsk"]).stdout.strip()


def keypair() -> KeyPair:
    private = genkey()
    return KeyPair(private, pubkey(private))


@contextlib.contextmanager
def secret_file(value: str) -> Iterator[str]:
    """The path of a 0600 temporary file holding ``value`` (one line), removed on exit
    (``wg`` reads keys from files only)."""
    fd, path = tempfile.mkstemp(prefix="mwlab-key-")      # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        yield path
    finally:
        os.unlink(path)


def remove_uapi_socket(ifname: str) -> None:
    """Remove a WireGuard control socket left behind by a killed daemon."""
    try:
        (UAPI_DIR / f"{ifname}.sock").unlink()
    except FileNotFoundError:
        pass


@dataclass
class PeerConfig:
    """A peer as ``wg set`` takes it: base64 keys, prefixes, "HOST:PORT" endpoint text."""

    public_key: str
    allowed_ips: list[str]
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int | None = None


class WgView:
    """One WireGuard interface in a namespace, read and configured through ``wg``."""

    def __init__(self, ns: Namespace, ifname: str):
        self.ns = ns
        self.ifname = ifname

    @property
    def socket_path(self) -> Path:
        return UAPI_DIR / f"{self.ifname}.sock"

    def wg(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``wg ARGS`` in the interface's namespace (LabError on failure with ``check``)."""
        return self.ns.run(["wg", *args], check=check)

    def show(self, what: str | None = None) -> str:
        """The text of ``wg show IFNAME [WHAT]``."""
        return self.wg("show", self.ifname, *([what] if what else [])).stdout

    def per_peer(self, what: str) -> dict[str, list[str]]:
        """``wg show IFNAME WHAT`` as public key -> the remaining tab-separated fields."""
        rows = (line.split("\t") for line in self.show(what).splitlines())
        return {row[0]: row[1:] for row in rows if len(row) >= 2}

    def endpoints(self) -> dict[str, str]:
        """public key -> endpoint text ('(none)' when unknown)."""
        return {key: fields[0] for key, fields in self.per_peer("endpoints").items()}

    def latest_handshakes(self) -> dict[str, int]:
        """public key -> unix time of the latest handshake (0 = never)."""
        return {key: int(f[0]) for key, f in self.per_peer("latest-handshakes").items()}

    def transfer(self) -> dict[str, tuple[int, int]]:
        """public key -> (rx bytes, tx bytes)."""
        return {key: (int(f[0]), int(f[1])) for key, f in self.per_peer("transfer").items()}

    def listen_port(self) -> int:
        return int(self.show("listen-port").strip())

    def set_listen_port(self, port: int) -> None:
        self.wg("set", self.ifname, "listen-port", port)

    def set_peer(self, peer: PeerConfig) -> None:
        """Add or update a peer through ``wg set`` (its allowed IPs replace the old ones)."""
        args: list[Any] = ["set", self.ifname, "peer", peer.public_key,
                           "allowed-ips", ",".join(peer.allowed_ips)]
        if peer.endpoint:
            args += ["endpoint", peer.endpoint]
        if peer.persistent_keepalive is not None:
            args += ["persistent-keepalive", peer.persistent_keepalive]
        if not peer.preshared_key:
            self.wg(*args)
            return
        with secret_file(peer.preshared_key) as psk:
            self.wg(*args, "preshared-key", psk)

    def route_peer(self, peer: PeerConfig) -> None:
        """Route the peer's allowed IPs into the interface (as wg-quick does)."""
        for cidr in peer.allowed_ips:
            self.ns.run(["ip", "-6" if ":" in cidr else "-4", "route", "replace", cidr,
                         "dev", self.ifname])

    def add_peer(self, peer: PeerConfig) -> None:
        """:meth:`set_peer` and :meth:`route_peer`."""
        self.set_peer(peer)
        self.route_peer(peer)

    def set_endpoint(self, public_key: str, endpoint: str) -> None:
        self.wg("set", self.ifname, "peer", public_key, "endpoint", endpoint)


class HandshakeRecorder:
    """Reads the peer's latest-handshake time every ``interval`` seconds in a thread and
    keeps the distinct values seen. Use as a context manager around the traffic whose
    handshakes you want to observe."""

    def __init__(self, view: WgView, public_key: str, interval: float = 0.2):
        self.view, self.public_key, self.interval = view, public_key, interval
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)

    def _record(self) -> None:
        while not self._stop.is_set():
            try:
                t = self.view.latest_handshakes().get(self.public_key, 0)
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
