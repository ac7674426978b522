"""Network namespaces for labs: the cleanup registry, namespaces, veths, bridges, processes.

The bottom of the lab library (``discovery.lab``): ``meshwg lab``, the tests and the
benchmarks build everything through it. Everything is created through a :class:`Cleanup`
registry, which undoes it newest first (processes before their namespace) on
:meth:`Cleanup.close`, also after exceptions and KeyboardInterrupt. Names are unique per
process (they carry ``os.getpid()``) and interface names stay within Linux's 15 characters.

Waiting is :func:`poll` (a predicate polled until a deadline), never a fixed sleep.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from meshwg.util.errors import MeshwgError

PID = os.getpid()
IFNAMSIZ = 15                   # longest Linux interface name

_counter = itertools.count(1)


class LabError(MeshwgError, RuntimeError):
    """A lab command failed or the lab could not be built; the message names the command
    (or step) and carries its output."""


class ProcessExited(LabError):
    """A lab process exited while something waited for it; :func:`poll` gives up at once."""


class PollTimeout(LabError):
    """:func:`poll` ran out of time; the message names what it waited for."""


def unique_name(prefix: str, limit: int = IFNAMSIZ) -> str:
    """A name unique to this process and call, such as ``mwa1234567n3`` (<= limit chars).
    Raises ValueError when the prefix makes it longer than ``limit``."""
    name = f"{prefix}{PID}n{next(_counter)}"
    if len(name) > limit:
        raise ValueError(f"name {name!r} is longer than {limit} characters; use a shorter prefix")
    return name


def poll(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str],
         interval: float = 0.05) -> Any:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy;
    return that value.

    Exceptions from the predicate count as "not yet", except :class:`ProcessExited`, which
    is raised at once. At the deadline (``timeout`` seconds) :class:`PollTimeout` names
    ``what`` (a string, or a callable giving details at that moment) and the last exception.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - "not yet"; reported at the deadline
            last = exc
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            detail = f" (last error: {last!r})" if last else ""
            raise PollTimeout(f"timed out after {timeout:.1f}s waiting for {text}{detail}")
        time.sleep(interval)


def _environment(env: dict[str, str] | None) -> dict[str, str] | None:
    """This process's environment plus ``env`` (None: inherit unchanged)."""
    return {**os.environ, **env} if env else None


def run(cmd: Sequence[Any], check: bool = True, timeout: float = 30.0,
        input: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command (argv list; items are str()-ed) in this namespace and capture its text
    output. ``env`` adds to the inherited environment. Raises LabError when it times out,
    or exits non-zero and ``check`` is set."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input, env=_environment(env))
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"command failed (exit {proc.returncode}): {' '.join(argv)}: "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def python_argv(code: str, *args: Any) -> list[str]:
    """argv running Python source (dedented) with this interpreter (the project's venv)."""
    return [sys.executable, "-c", textwrap.dedent(code), *[str(a) for a in args]]


def unavailable_reason(tools: Iterable[str] = ("ip", "iptables", "conntrack", "ping", "wg")
                       ) -> str | None:
    """Why a namespace lab cannot run here (not root, no TUN, a tool missing, no
    ``ip netns``), or None when it can."""
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


LAB_TOOLS = ("ip", "iptables", "conntrack", "ping", "wg")


def measure_in_lab(name: str, measure: Callable[[], Any], tools: Iterable[str] = LAB_TOOLS
                   ) -> tuple[int, Any]:
    """A benchmark's run: (0, measure()) when a lab can run here; otherwise one line
    "NAME: why" on stderr and (2, None) when it cannot run, (1, None) when it failed
    (LabError)."""
    reason = unavailable_reason(tools)
    if reason:
        print(f"{name}: {reason}", file=sys.stderr)
        return 2, None
    try:
        return 0, measure()
    except LabError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1, None


# ----------------------------------------------------------------------------- cleanup

class Cleanup:
    """The lab registry: undo actions run newest first by :meth:`close` (idempotent).

    Use as a context manager: ``close`` runs on normal exit, exceptions and
    KeyboardInterrupt. Errors from undo actions are collected, not raised.
    """

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], Any]]] = []
        self.errors: list[str] = []

    def push(self, label: str, action: Callable[[], Any]) -> None:
        """Register ``action`` (named ``label`` in error reports) to run at close."""
        self._actions.append((label, action))

    def close(self) -> list[str]:
        """Run every action (newest first); return the errors seen ("label: error")."""
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
    """A background process whose stdout and stderr go to files (kept for failure reports).

    It runs in its own session, so :meth:`stop` can kill what it started too.
    """

    def __init__(self, argv: Sequence[Any], name: str, env: dict[str, str] | None = None,
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
                                         stdin=subprocess.DEVNULL, env=_environment(env),
                                         cwd=cwd, start_new_session=True)
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

    def check_alive(self) -> None:
        """Raise :class:`ProcessExited` (with the logs) when the process has exited."""
        if not self.alive:
            raise ProcessExited(f"{self.name} exited\n{self.output()}")

    def cpu_seconds(self) -> float:
        """CPU time (utime + stime, seconds) the process has used so far (/proc/PID/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        # after "pid (comm) " the state is field 3 (index 0): utime is field 14, stime 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig: int) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; subprocess.TimeoutExpired when still running after ``timeout``."""
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
    """A network namespace with loopback up; the registry deletes it (after its processes)."""

    def __init__(self, cleanup: Cleanup, tag: str = "ns"):
        self.cleanup = cleanup
        self.tag = tag
        self.name = unique_name(f"mw{tag[:6]}", limit=40)
        run(["ip", "netns", "add", self.name])
        cleanup.push(f"delete namespace {self.name}", self.delete)
        self.run(["ip", "link", "set", "lo", "up"])

    def __repr__(self) -> str:
        return f"Namespace({self.name})"

    def argv(self, cmd: Sequence[Any]) -> list[str]:
        """``cmd`` wrapped to run inside this namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.name, *[str(c) for c in cmd]]

    def run(self, cmd: Sequence[Any], check: bool = True, timeout: float = 30.0,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (see :func:`run`)."""
        return run(self.argv(cmd), check=check, timeout=timeout, input=input, env=env)

    def popen(self, cmd: Sequence[Any], name: str | None = None,
              env: dict[str, str] | None = None, log_dir: str | None = None,
              cwd: str | None = None) -> Daemon:
        """Start a background process inside; the registry stops it (before the namespace)
        and removes its logs unless they go to ``log_dir``."""
        daemon = Daemon(self.argv(cmd), name or Path(str(cmd[0])).name, env=env,
                        log_dir=log_dir, cwd=cwd)
        if daemon.owns_log_dir:
            self.cleanup.push(f"remove logs of {daemon.name}",
                              lambda: shutil.rmtree(daemon.log_dir, ignore_errors=True))
        self.cleanup.push(f"stop {daemon.name}", daemon.stop)
        return daemon

    def run_python(self, code: str, *args: Any, timeout: float = 30.0,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run Python source inside with this interpreter (see :func:`python_argv`)."""
        return self.run(python_argv(code, *args), check=check, timeout=timeout)

    def popen_python(self, code: str, *args: Any, name: str = "python") -> Daemon:
        """Start Python source inside as a background :class:`Daemon`."""
        return self.popen(python_argv(code, *args), name=name)

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def read_sysctl(self, key: str) -> str:
        return self.run(["sysctl", "-n", key]).stdout.strip()

    def etc_files(self, files: dict[str, str]) -> None:
        """Files (``hosts``, ``gai.conf``, ...) that ``ip netns exec`` mounts over /etc/NAME
        for what runs inside (/etc/netns/NAMESPACE/NAME; removed with the namespace)."""
        folder = Path("/etc/netns") / self.name
        folder.mkdir(parents=True, exist_ok=True)
        self.cleanup.push(f"remove {folder}", lambda: shutil.rmtree(folder, ignore_errors=True))
        for name, text in files.items():
            (folder / name).write_text(text)

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add an address with prefix ("10.0.0.1/24", "fd00::1/64"); IPv6 skips duplicate
        address detection, so it is usable at once."""
        extra = ["nodad"] if ":" in cidr else []
        self.run(["ip", "addr", "add", cidr, "dev", ifname, *extra])

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
        """``ping -c COUNT -W WAIT -i INTERVAL``; never raises on loss (read returncode and
        output)."""
        cmd: list[Any] = ["ping", "-n", "-c", count, "-W", wait, "-i", interval]
        if size is not None:
            cmd += ["-s", size]
        return self.run([*cmd, addr], check=False, timeout=count * (interval + wait) + 10)

    def wait_ping(self, addr: str, timeout: float = 10.0) -> None:
        """Ping until one reply arrives; PollTimeout after ``timeout`` seconds."""
        poll(lambda: self.ping(addr, wait=0.5).returncode == 0, timeout,
             f"ping {addr} from {self.name}", interval=0.0)

    def ping_rtts(self, addr: str, count: int = 20, interval: float = 0.05) -> list[float]:
        """Round-trip times in milliseconds of the replies to ``count`` pings."""
        out = self.ping(addr, count=count, wait=2, interval=interval).stdout
        return [float(line.split("time=")[1].split()[0])
                for line in out.splitlines() if "time=" in line]

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


# ----------------------------------------------------------------------------- links

def _as_list(addresses: str | Iterable[str] | None) -> list[str]:
    if addresses is None:
        return []
    return [addresses] if isinstance(addresses, str) else list(addresses)


def veth(ns_a: Namespace, ns_b: Namespace, addr_a: str | Iterable[str] | None = None,
         addr_b: str | Iterable[str] | None = None, mtu: int | None = None,
         names: tuple[str, str] | None = None) -> tuple[str, str]:
    """A veth pair between two namespaces, addressed (with prefix; a list for several) and
    up. ``names`` sets the two interface names (default: unique ones).
    Returns (interface name in ns_a, interface name in ns_b)."""
    name_a, name_b = names or (unique_name("mwv"), unique_name("mwv"))
    run(["ip", "link", "add", name_a, "netns", ns_a.name, "type", "veth",
         "peer", "name", name_b, "netns", ns_b.name])
    for ns, name, addresses in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
        if mtu:
            ns.run(["ip", "link", "set", name, "mtu", mtu])
        for cidr in _as_list(addresses):
            ns.add_address(name, cidr)
        ns.run(["ip", "link", "set", name, "up"])
    return name_a, name_b


class Bridge:
    """A Linux bridge (one L2 segment) in namespace ``ns``; hosts plug in with :meth:`attach`.

    Multicast snooping is off, so mDNS floods every port as on a small switch.
    """

    def __init__(self, ns: Namespace, name: str = "br0"):
        self.ns = ns
        self.name = name
        ns.run(["ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0"])
        ns.run(["ip", "link", "set", name, "up"])

    def attach(self, host: Namespace, addresses: str | Iterable[str] | None = None,
               ifname: str = "eth0") -> str:
        """Plug ``host`` in through a veth named ``ifname`` on its side, with ``addresses``
        (with prefix); returns ``ifname``."""
        port = unique_name("mwp")
        veth(host, self.ns, addresses, None, names=(ifname, port))
        self.ns.run(["ip", "link", "set", port, "master", self.name])
        return ifname


def change_host_address(host: Namespace, ifname: str, old_cidr: str, new_cidr: str,
                        gateway: str | None = None) -> None:
    """Renumber a host (a new DHCP lease): the new address in, the old one out (the new one
    is promoted, not dropped), and the default route back via ``gateway`` when given."""
    host.sysctl(f"net.ipv4.conf.{ifname}.promote_secondaries", 1)
    host.add_address(ifname, new_cidr)
    host.del_address(ifname, old_cidr)
    if gateway:
        host.run(["ip", "route", "replace", "default", "via", gateway])
