"""Network namespaces for labs: namespaces, veths, bridges, NAT routers, daemons, cleanup.

A small library the NAT lab (``discovery.lab``) and the lab tests build on. Everything is
created through a :class:`Cleanup` registry, which undoes it in reverse order (processes
before namespaces) also on exceptions and KeyboardInterrupt. Names are unique per process
(they carry ``os.getpid()``) and interface names stay within Linux's 15 characters.

NAT modes of :class:`NatRouter` (see docs: netlab.md):

* ``rewrite``: ``MASQUERADE --to-ports 40000-40100`` for UDP and TCP: endpoint-independent
  mapping with port rewriting (what hole punching is built for);
* ``symmetric``: ``MASQUERADE --random-fully``: a new public port per destination;
* ``keep``: plain MASQUERADE (keeps the local port).

Every router also gets a home router's filter rules (unsolicited inbound traffic on the
uplink is dropped, so its conntrack entry is never confirmed) and does no hairpinning.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

PID = os.getpid()
IFNAMSIZ = 15
UAPI_DIR = Path("/var/run/wireguard")
PORT_RANGE = "40000-40100"
NAT_MODES = ("rewrite", "symmetric", "keep")

_counter = itertools.count(1)


class NetnsError(RuntimeError):
    """A lab command failed; the message names the command and carries its output."""


class PollTimeout(AssertionError):
    """:func:`poll` ran out of time (an AssertionError, so pytest reports a failure)."""


def unique_name(prefix: str, limit: int = IFNAMSIZ) -> str:
    """A name unique to this process and call, such as ``mwa1234567n3`` (<= limit chars)."""
    name = f"{prefix}{PID}n{next(_counter)}"
    if len(name) > limit:
        raise ValueError(f"name {name!r} is longer than {limit} characters; use a shorter prefix")
    return name


def poll(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str],
         interval: float = 0.1) -> Any:
    """Call ``predicate`` until it returns something truthy and return that value.

    Exceptions from the predicate count as "not yet"; at the deadline :class:`PollTimeout`
    names ``what`` (a string or a callable giving details) and the last exception.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - "not yet"; reported at the deadline
            last = exc
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            detail = f" (last error: {last})" if last else ""
            raise PollTimeout(f"timed out after {timeout:.1f}s waiting for {text}{detail}")
        time.sleep(interval)


def run(cmd: Sequence[str], check: bool = True, timeout: float = 30.0,
        input: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command (argv list) and capture its output; NetnsError when it fails."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input, env=env)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise NetnsError(f"command failed (exit {proc.returncode}): {' '.join(argv)}: "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def unavailable_reason(tools: Iterable[str] = ("ip", "iptables", "conntrack", "ping", "wg")
                       ) -> str | None:
    """Why a namespace lab cannot run here (not root, no TUN, a tool missing), or None."""
    if os.geteuid() != 0:
        return "network-namespace labs need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"tools missing: {', '.join(missing)}"
    probe = f"mwprobe{PID}"
    made = run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails: {made.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return None


# ----------------------------------------------------------------------------- cleanup

class Cleanup:
    """Undo actions, run last-in first-out by :meth:`close` (idempotent).

    Use as a context manager: ``close`` runs on normal exit, exceptions and
    KeyboardInterrupt. Errors from undo actions are collected, not raised.
    """

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], Any]]] = []
        self.errors: list[str] = []

    def push(self, label: str, action: Callable[[], Any]) -> None:
        self._actions.append((label, action))

    def close(self) -> list[str]:
        """Run every action (newest first); return the errors seen."""
        while self._actions:
            label, action = self._actions.pop()
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - keep cleaning up
                self.errors.append(f"{label}: {exc!r}")
        return self.errors

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- processes

class Daemon:
    """A background process whose stdout and stderr go to files (kept for failure reports)."""

    def __init__(self, argv: Sequence[str], name: str, env: dict[str, str] | None = None,
                 log_dir: str | None = None, cwd: str | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.owns_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"mwlab-{name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{name}.stdout"
        self.stderr_path = self.log_dir / f"{name}.stderr"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, cwd=cwd,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self, tail: int = 3000) -> str:
        """Both logs (their last ``tail`` characters), for error messages."""
        return (f"[{self.name} pid {self.pid} exit {self.proc.poll()}: {' '.join(self.argv)}]\n"
                f"--- stdout ---\n{self.stdout()[-tail:]}\n--- stderr ---\n{self.stderr()[-tail:]}")

    def signal(self, sig: int) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL its process group; the exit code."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        return self.proc.returncode


# ----------------------------------------------------------------------------- namespaces

class Namespace:
    """A network namespace with loopback up; deleted by the cleanup registry."""

    def __init__(self, cleanup: Cleanup, tag: str):
        self.cleanup = cleanup
        self.tag = tag
        self.name = unique_name(f"mw{tag[:6]}", limit=40)
        run(["ip", "netns", "add", self.name])
        cleanup.push(f"delete namespace {self.name}", self.delete)
        self.run(["ip", "link", "set", "lo", "up"])

    def __repr__(self) -> str:
        return f"Namespace({self.name})"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *[str(c) for c in cmd]]

    def run(self, cmd: Sequence[str], check: bool = True, timeout: float = 30.0,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return run(self.argv(cmd), check=check, timeout=timeout, input=input, env=env)

    def popen(self, cmd: Sequence[str], name: str, env: dict[str, str] | None = None,
              log_dir: str | None = None) -> Daemon:
        """Start a background process inside; the registry stops it (before the namespace)."""
        daemon = Daemon(self.argv(cmd), name, env=env, log_dir=log_dir)
        if daemon.owns_log_dir:
            self.cleanup.push(f"remove logs of {name}",
                              lambda: shutil.rmtree(daemon.log_dir, ignore_errors=True))
        self.cleanup.push(f"stop {name}", daemon.stop)
        return daemon

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def read_sysctl(self, key: str) -> str:
        return self.run(["sysctl", "-n", key]).stdout.strip()

    def add_address(self, ifname: str, cidr: str) -> None:
        self.run(["ip", "addr", "add", cidr, "dev", ifname])

    def del_address(self, ifname: str, cidr: str) -> None:
        self.run(["ip", "addr", "del", cidr, "dev", ifname])

    def link_stats(self, ifname: str) -> dict[str, int]:
        """rx/tx bytes and packets of an interface (``ip -s -j link``)."""
        doc = json.loads(self.run(["ip", "-s", "-j", "link", "show", "dev", ifname]).stdout)
        stats = doc[0]["stats64"]
        return {"rx_bytes": stats["rx"]["bytes"], "rx_packets": stats["rx"]["packets"],
                "tx_bytes": stats["tx"]["bytes"], "tx_packets": stats["tx"]["packets"]}

    def forwarded_datagrams(self) -> int:
        """Ip ForwDatagrams of this namespace's IPv4 stack (/proc/net/snmp is per netns)."""
        lines = [line.split() for line in self.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
                 if line.startswith("Ip:")]
        return int(dict(zip(lines[0], lines[1]))["ForwDatagrams"])

    def ping(self, addr: str, count: int = 1, wait: float = 1.0, interval: float = 0.2,
             size: int | None = None) -> subprocess.CompletedProcess[str]:
        """``ping -c COUNT``; never raises on loss (read returncode / output)."""
        cmd = ["ping", "-n", "-c", count, "-W", wait, "-i", interval]
        if size is not None:
            cmd += ["-s", size]
        return self.run([*cmd, addr], check=False, timeout=count * (interval + wait) + 10)

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


def veth(ns_a: Namespace, ns_b: Namespace, name_a: str | None = None,
         name_b: str | None = None) -> tuple[str, str]:
    """A veth pair between two namespaces, both ends up; returns (name in a, name in b)."""
    name_a = name_a or unique_name("mwv")
    name_b = name_b or unique_name("mwv")
    run(["ip", "link", "add", name_a, "netns", ns_a.name, "type", "veth",
         "peer", "name", name_b, "netns", ns_b.name])
    ns_a.run(["ip", "link", "set", name_a, "up"])
    ns_b.run(["ip", "link", "set", name_b, "up"])
    return name_a, name_b


def add_bridge(ns: Namespace, name: str) -> None:
    """A Linux bridge in ``ns`` (multicast snooping off, so mDNS floods like a switch)."""
    ns.run(["ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0"])
    ns.run(["ip", "link", "set", name, "up"])


def attach(bridge_ns: Namespace, bridge: str, host: Namespace, cidr: str | None,
           host_ifname: str = "eth0") -> str:
    """Plug ``host`` into ``bridge`` with a veth named ``host_ifname`` on the host side."""
    host_if, port = veth(host, bridge_ns, unique_name("mwt"), unique_name("mwp"))
    host.run(["ip", "link", "set", host_if, "down"])
    host.run(["ip", "link", "set", host_if, "name", host_ifname])
    host.run(["ip", "link", "set", host_ifname, "up"])
    bridge_ns.run(["ip", "link", "set", port, "master", bridge])
    if cidr:
        host.add_address(host_ifname, cidr)
    return host_ifname


# ----------------------------------------------------------------------------- the internet

class Internet:
    """A fake internet: one bridge in its own namespace; public hosts attach with an address.

    The bridge namespace also holds ``gateway`` (an address on the bridge) that routers use
    as their default route, so renumbering can move a default route as on a real uplink.
    """

    def __init__(self, cleanup: Cleanup, network: str = "198.18.0.0/15",
                 gateway: str = "198.18.0.1"):
        self.network = ipaddress.ip_network(network)
        self.gateway = gateway
        self.ns = Namespace(cleanup, "inet")
        self.bridge = "br0"
        add_bridge(self.ns, self.bridge)
        self.ns.add_address(self.bridge, self.cidr(gateway))

    def cidr(self, address: str) -> str:
        return f"{address}/{self.network.prefixlen}"

    def attach(self, host: Namespace, address: str, ifname: str = "eth0") -> str:
        """Give ``host`` a public ``address`` on the internet; returns its interface name."""
        return attach(self.ns, self.bridge, host, self.cidr(address), ifname)


# ----------------------------------------------------------------------------- NAT routers

class NatRouter:
    """A home router: a LAN bridge (``lan0``) and NAT towards its uplink on the internet.

    LAN hosts attach with :meth:`add_host`; they get a default route via the router and a
    224.0.0.0/4 route on the LAN for mDNS. No hairpinning (Linux does none by default).
    """

    def __init__(self, cleanup: Cleanup, internet: Internet, public_address: str,
                 lan: str, mode: str = "rewrite", tag: str = "nat"):
        if mode not in NAT_MODES:
            raise ValueError(f"NAT mode {mode!r}: expected one of {', '.join(NAT_MODES)}")
        self.cleanup, self.internet, self.mode = cleanup, internet, mode
        self.public_address = public_address
        self.lan = ipaddress.ip_network(lan)
        self.lan_gateway = str(next(self.lan.hosts()))
        self._next_host = 10
        self.ns = Namespace(cleanup, tag)
        self.ns.sysctl("net.ipv4.ip_forward", 1)
        self.uplink = internet.attach(self.ns, public_address, "wan0")
        # Deleting the primary address must promote the new (secondary) one, not drop it.
        self.ns.sysctl(f"net.ipv4.conf.{self.uplink}.promote_secondaries", 1)
        self.ns.run(["ip", "route", "add", "default", "via", internet.gateway,
                     "dev", self.uplink, "src", public_address])
        self.lan_bridge = "lan0"
        add_bridge(self.ns, self.lan_bridge)
        self.ns.add_address(self.lan_bridge, f"{self.lan_gateway}/{self.lan.prefixlen}")
        self._install_rules()

    def _install_rules(self) -> None:
        up = self.uplink
        if self.mode == "rewrite":
            nat = [["-p", "udp", "-j", "MASQUERADE", "--to-ports", PORT_RANGE],
                   ["-p", "tcp", "-j", "MASQUERADE", "--to-ports", PORT_RANGE],
                   ["-j", "MASQUERADE"]]
        elif self.mode == "symmetric":
            nat = [["-j", "MASQUERADE", "--random-fully"]]
        else:
            nat = [["-j", "MASQUERADE"]]
        for rule in nat:
            self.ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", up, *rule])
        for chain in ("INPUT", "FORWARD"):
            self.ns.run(["iptables", "-A", chain, "-i", up, "-m", "conntrack",
                         "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            self.ns.run(["iptables", "-A", chain, "-i", up, "-j", "DROP"])

    def next_lan_address(self) -> str:
        address = str(self.lan.network_address + self._next_host)
        self._next_host += 1
        return address

    def add_host(self, tag: str, address: str | None = None) -> tuple[Namespace, str]:
        """A new LAN host namespace (interface ``eth0``); returns (namespace, address)."""
        host = Namespace(self.cleanup, tag)
        address = address or self.next_lan_address()
        attach(self.ns, self.lan_bridge, host, f"{address}/{self.lan.prefixlen}")
        host.run(["ip", "route", "add", "default", "via", self.lan_gateway])
        host.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])
        return host, address

    def renumber(self, new_address: str) -> None:
        """Move the uplink to ``new_address``: add it, move the default route, delete the old
        address and drop every mapping (``conntrack -F``), as an ISP renumbering does."""
        old = self.public_address
        self.ns.add_address(self.uplink, self.internet.cidr(new_address))
        self.ns.run(["ip", "route", "replace", "default", "via", self.internet.gateway,
                     "dev", self.uplink, "src", new_address])
        self.ns.del_address(self.uplink, self.internet.cidr(old))
        self.public_address = new_address
        self.flush_mappings()

    def flush_mappings(self) -> None:
        """Drop every NAT mapping, as a router reboot or mapping timeout does."""
        self.ns.run(["conntrack", "-F"], check=False)

    def udp_mappings(self) -> list[dict[str, str]]:
        """The router's UDP conntrack entries as dicts of the fields ``conntrack -L`` prints
        (the first src/dst/sport/dport are the original direction, ``r*`` the reply)."""
        out = self.ns.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
        entries = []
        for line in out.splitlines():
            fields: dict[str, str] = {}
            for word in line.split():
                if "=" in word:
                    key, _, value = word.partition("=")
                    fields["r" + key if key in fields else key] = value
            if fields:
                entries.append(fields)
        return entries


def change_host_address(host: Namespace, ifname: str, old_cidr: str, new_cidr: str,
                        gateway: str) -> None:
    """Renumber a LAN host (a new DHCP lease): new address in, old out, default route back."""
    host.sysctl(f"net.ipv4.conf.{ifname}.promote_secondaries", 1)
    host.add_address(ifname, new_cidr)
    host.del_address(ifname, old_cidr)
    host.run(["ip", "route", "replace", "default", "via", gateway])


def remove_uapi_socket(ifname: str) -> None:
    """Remove a WireGuard UAPI socket left behind by a killed daemon (shared directory)."""
    try:
        (UAPI_DIR / f"{ifname}.sock").unlink()
    except FileNotFoundError:
        pass
