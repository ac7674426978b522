"""Real authoritative DNS servers for the directory on DNS: a BIND 9 or Knot primary, Knot and
BIND secondaries in lab namespaces, configured from the templates users copy (``configs/dns``).

The lab renders the very files in ``configs/dns`` (``{{PLACEHOLDER}}`` filled in, an
unknown or unfilled placeholder is a LabError), so the examples are what the tests run:

* ``named.conf.meshwg-primary`` and ``meshwg-zone.template``: :class:`BindPrimary`,
  accepting RFC 2136 updates signed with the ``meshwg-update`` key (RFC 8945 TSIG),
  sending signed NOTIFYs (RFC 1996) with no delay, keeping its journal;
* ``knot.conf.meshwg-primary`` (and the same zone template): :class:`KnotPrimary`, the same
  interface as :class:`BindPrimary` (the zone and every change in Knot's journal);
* ``knot.conf.meshwg-secondary``: :class:`KnotSecondary` (whole zone in its journal);
* ``named.conf.meshwg-secondary``: :class:`BindSecondary`.

Keys come from ``tsig-keygen`` (:class:`DnsKeys`): ``meshwg-update`` (the rendezvous write),
``meshwg-transfer`` (NOTIFY, IXFR/AXFR between servers) and ``meshwg-read`` (the operator's
signed dig; BIND only: Knot restricts queries by source address, ``mod-queryacl``). Queries
are answered from the ``members`` addresses (the template's ``{{RENDEZVOUS_ADDRESSES}}``:
give the rendezvous' own addresses, as a user would; 127.0.0.1 is added for the readiness
check) and, on BIND, signed ones; others get REFUSED (BIND) or NOTAUTH (Knot).

Each server has its own folder (owned by bind or knot) under one temporary folder; it is
started with ``named -g -u bind -c FILE`` or ``knotd -c FILE`` in its namespace, and
:meth:`DnsServer.start` waits (poll) for its SOA answer. :meth:`DnsServer.kill` is kill -9,
:meth:`DnsServer.restart` starts it again on the same folder (BIND replays its journal).
The lab :class:`~discovery.lab.netns.Cleanup` stops every server and removes every file,
also on failure. Facts: ../shared/reference/netlab.md, "BIND 9 primary and Knot secondary".
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from discovery.dnssd.tsig_file import TsigKey, read_tsig_key
from discovery.lab.netns import Cleanup, Daemon, LabError, Namespace, poll, run

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dns"
NAMED = "/usr/sbin/named"
KNOTD = "/usr/sbin/knotd"
TSIG_KEYGEN = "/usr/sbin/tsig-keygen"
KEY_NAMES = {"update": "meshwg-update", "transfer": "meshwg-transfer", "read": "meshwg-read"}
READY_TIMEOUT = 30.0
_PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")


def unavailable_reason() -> str | None:
    """Why the DNS servers cannot run here (a package missing), or None."""
    needs = {NAMED: "bind9", KNOTD: "knot", TSIG_KEYGEN: "bind9"}
    for path, package in needs.items():
        if not Path(path).exists():
            return f"{path} is not installed (Debian package {package})"
    if shutil.which("dig") is None:
        return "dig is not installed (Debian package bind9-dnsutils)"
    for user in ("bind", "knot"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"user {user} is missing (Debian packages bind9, knot)"
    return None


def render_template(name: str, values: dict[str, str]) -> str:
    """``configs/dns/NAME`` with every ``{{PLACEHOLDER}}`` replaced by ``values``; a
    placeholder without a value raises LabError (so a template never runs half-filled)."""
    text = (CONFIG_DIR / name).read_text()
    missing = sorted({key for key in _PLACEHOLDER.findall(text) if key not in values})
    if missing:
        raise LabError(f"{CONFIG_DIR / name}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _own(path: Path, user: str, mode: int) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)


@dataclass(frozen=True)
class DnsKeys:
    """The three TSIG key files (``tsig-keygen -a hmac-sha256 NAME`` output; root:bind 0640)."""

    update: Path
    transfer: Path
    read: Path

    @classmethod
    def generate(cls, cleanup: Cleanup, algorithm: str = "hmac-sha256") -> "DnsKeys":
        """New keys in a temporary folder the registry removes."""
        folder = Path(tempfile.mkdtemp(prefix="mwlab-dnskeys-"))
        cleanup.push(f"remove {folder}", lambda: shutil.rmtree(folder, ignore_errors=True))
        os.chmod(folder, 0o755)
        paths = {}
        for role, name in KEY_NAMES.items():
            path = folder / f"{name}.key"
            path.write_text(run([TSIG_KEYGEN, "-a", algorithm, name]).stdout)
            os.chown(path, 0, grp.getgrnam("bind").gr_gid)
            os.chmod(path, 0o640)
            paths[role] = path
        return cls(**paths)

    def key(self, role: str) -> TsigKey:
        """The parsed key of ``role`` (update, transfer or read)."""
        return read_tsig_key(getattr(self, role))


@dataclass(frozen=True)
class Soa:
    """The zone's SOA as a server answered it (``dig +short``)."""

    serial: int
    refresh: int
    retry: int
    expire: int


def dig(ns: Namespace, server: str, port: int, name: str, rdtype: str = "SOA",
        key_file: Path | None = None, source: str | None = None, tcp: bool = False,
        timeout: float = 2.0) -> subprocess.CompletedProcess[str]:
    """``dig`` inside ``ns`` (one try; signed with ``key_file`` when given; from ``source``
    when given); never raises on a DNS error: read ``status:`` from its output."""
    cmd: list[str | int | Path] = ["dig", "-p", port, f"@{server}", name, rdtype,
                                   "+tries=1", f"+time={max(1, int(timeout))}", "+norecurse"]
    if key_file is not None:
        cmd += ["-k", key_file]
    if source is not None:
        cmd += ["-b", source]
    if tcp:
        cmd.append("+tcp")
    return ns.run(cmd, check=False, timeout=timeout + 10)


def dig_status(result: subprocess.CompletedProcess[str]) -> str | None:
    """The rcode name dig printed (``NOERROR``, ``REFUSED``, ...); for AXFR, ``REFUSED``
    style failures print "Transfer failed." (returned as ``TRANSFER-FAILED``)."""
    match = re.search(r"status: ([A-Z]+)", result.stdout)
    if match:
        return match.group(1)
    if "Transfer failed." in result.stdout:
        return "TRANSFER-FAILED"
    return None


class DnsServer:
    """One authoritative server of ``zone`` at ``address``:``port`` in ``ns``.

    ``folder`` is its working folder (config, zone, journal), ``log()`` its output. Started
    by the constructor; :meth:`stop` (SIGTERM), :meth:`kill` (SIGKILL), :meth:`start` /
    :meth:`restart` (same folder) after that.
    """

    kind = "server"
    user = "root"

    def __init__(self, ns: Namespace, address: str, zone: str, keys: DnsKeys,
                 members: Iterable[str] = (), port: int = 53, start: bool = True):
        self.ns = ns
        self.cleanup = ns.cleanup
        self.address = str(ipaddress.ip_address(address))
        self.port = port
        self.zone = zone.rstrip(".")
        self.keys = keys
        self.members = ["127.0.0.1/32", *[str(ipaddress.ip_network(m, strict=False))
                                          for m in members]]
        self.base = Path(tempfile.mkdtemp(prefix=f"mwlab-{self.kind}-"))
        self.cleanup.push(f"remove {self.base}", lambda: shutil.rmtree(self.base, ignore_errors=True))
        os.chmod(self.base, 0o755)
        self.folder = self.base / "state"
        self.folder.mkdir()
        _own(self.folder, self.user, 0o750)
        self.logs = self.base / "logs"
        self.config = self.base / "server.conf"
        self.daemon: Daemon | None = None
        self._write_files()
        if start:
            self.start()

    # -- to specialise
    def _write_files(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _values(self) -> dict[str, str]:
        """Placeholder values every template may use."""
        transfer, update = self.keys.key("transfer"), self.keys.key("update")
        return {
            "ZONE": self.zone, "ADDRESS": self.address, "PORT": str(self.port),
            "STATE_DIR": str(self.folder),
            "UPDATE_KEY_FILE": str(self.keys.update),
            "TRANSFER_KEY_FILE": str(self.keys.transfer),
            "READ_KEY_FILE": str(self.keys.read),
            "TRANSFER_KEY_ALGORITHM": transfer.algorithm,
            "TRANSFER_KEY_SECRET": transfer.secret_base64,
            "UPDATE_KEY_ALGORITHM": update.algorithm,
            "UPDATE_KEY_SECRET": update.secret_base64,
            "RENDEZVOUS_ADDRESSES": " ".join(f"{m};" for m in self.members),
        }

    # -- life cycle
    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the server and wait until it answers the zone's SOA."""
        if self.daemon is not None and self.daemon.alive:
            raise LabError(f"{self.kind} at {self.address} is already running")
        self.daemon = self.ns.popen(self._argv(), name=self.kind, log_dir=str(self.logs))
        poll(self._ready, timeout, lambda: f"{self.kind} at {self.address}:{self.port} to answer "
             f"the SOA of {self.zone}\n{self.log()}")

    def _ready(self) -> Soa | None:
        assert self.daemon is not None
        self.daemon.check_alive()
        return self.soa()

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after a while); the exit code."""
        return self.daemon.stop() if self.daemon else None

    def kill(self) -> int | None:
        """kill -9, as a crash; the exit code."""
        if self.daemon is None:
            return None
        self.daemon.signal(signal.SIGKILL)
        return self.daemon.wait(timeout=10)

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop (when running) and start again on the same folder."""
        self.stop()
        self.start(timeout)

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive

    def log(self, tail: int = 4000) -> str:
        """The server's output (stdout and stderr, their last ``tail`` characters)."""
        return self.daemon.output(tail) if self.daemon else f"{self.kind}: not started"

    # -- questions
    def dig(self, name: str | None = None, rdtype: str = "SOA", key_file: Path | None = None,
            source: str | None = "127.0.0.1", tcp: bool = False) -> subprocess.CompletedProcess[str]:
        """``dig`` to this server from inside its namespace (see :func:`dig`); ``name``
        defaults to the zone; the source defaults to 127.0.0.1 (a member network)."""
        return dig(self.ns, self.address, self.port, name or self.zone, rdtype,
                   key_file=key_file, source=source, tcp=tcp)

    def soa(self) -> Soa | None:
        """The zone's SOA as this server answers it now, or None (no answer, not loaded)."""
        result = self.dig()
        if result.returncode != 0 or dig_status(result) != "NOERROR":
            return None
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) == 11 and fields[3] == "SOA" and not line.startswith(";"):
                return Soa(*(int(f) for f in fields[6:10]))
        return None

    def serial(self) -> int | None:
        """The zone's serial here now, or None."""
        soa = self.soa()
        return soa.serial if soa else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address}:{self.port}, zone={self.zone})"


def _named_argv(address: str, config: Path) -> list[str]:
    family = ["-4"] if ipaddress.ip_address(address).version == 4 else ["-6"]
    return [NAMED, *family, "-g", "-u", "bind", "-c", str(config)]


class _Primary(DnsServer):
    """A primary of the zone: TSIG-signed updates with ``meshwg-update``, signed NOTIFYs to
    ``secondaries`` ((address, port) pairs), signed transfers only (``meshwg-transfer``,
    ``meshwg-update``). ``primary_name`` is the SOA's and NS's host name."""

    def __init__(self, ns: Namespace, address: str, zone: str, keys: DnsKeys,
                 secondaries: Sequence[tuple[str, int]] = (), members: Iterable[str] = (),
                 port: int = 53, primary_name: str = "ns1.meshwg-lab.invalid",
                 start: bool = True):
        self.secondaries = [(str(ipaddress.ip_address(a)), p) for a, p in secondaries]
        self.primary_name = primary_name.rstrip(".")
        super().__init__(ns, address, zone, keys, members=members, port=port, start=start)

    @property
    def zone_file(self) -> Path:
        return self.folder / f"{self.zone}.zone"

    def _values(self) -> dict[str, str]:
        return {**super()._values(), "PRIMARY_NAME": self.primary_name}

    def _write_zone_file(self, values: dict[str, str]) -> None:
        self.zone_file.write_text(render_template("meshwg-zone.template", values))
        _own(self.zone_file, self.user, 0o640)


class BindPrimary(_Primary):
    """BIND 9 primary of the zone (``named.conf.meshwg-primary``)."""

    kind = "bind-primary"
    user = "bind"

    @property
    def journal(self) -> Path:
        """BIND's journal of the updates (replayed on restart)."""
        return self.folder / f"{self.zone}.zone.jnl"

    def _values(self) -> dict[str, str]:
        return {**super()._values(),
                "SECONDARIES": " ".join(f"{a} port {p} key {KEY_NAMES['transfer']};"
                                        for a, p in self.secondaries)}

    def _write_files(self) -> None:
        values = self._values()
        self.config.write_text(render_template("named.conf.meshwg-primary", values))
        self._write_zone_file(values)

    def _argv(self) -> list[str]:
        return _named_argv(self.address, self.config)


def knot_secondary_remotes(secondaries: Sequence[tuple[str, int]]) -> tuple[str, str]:
    """knot.conf's ``remote:`` entries (YAML list items) for ``secondaries`` and the list of
    their ids for ``notify: [ ... ]``: the two SECONDARY_* placeholders of the Knot primary."""
    ids = [f"secondary{n}" for n in range(1, len(secondaries) + 1)]
    remotes = "\n".join(f"  - id: {i}\n    address: {a}@{p}\n    key: {KEY_NAMES['transfer']}"
                        for i, (a, p) in zip(ids, secondaries))
    return remotes, ", ".join(ids)


class KnotPrimary(_Primary):
    """Knot DNS primary of the zone (``knot.conf.meshwg-primary``): the same interface as
    :class:`BindPrimary`; the zone file is the initial template, every change (and the whole
    zone) lives in Knot's journal. Queries from outside ``members``: NOTAUTH."""

    kind = "knot-primary"
    user = "knot"

    def _values(self) -> dict[str, str]:
        remotes, ids = knot_secondary_remotes(self.secondaries)
        # mod-queryacl sees addresses only: the secondaries' SOA checks must pass it too
        allowed = [*self.members, *(str(ipaddress.ip_network(a)) for a, _ in self.secondaries)]
        return {**super()._values(), "RENDEZVOUS_ADDRESSES": ", ".join(allowed),
                "SECONDARY_REMOTES": remotes, "SECONDARY_IDS": ids}

    def _write_files(self) -> None:
        values = self._values()
        self.config.write_text(render_template("knot.conf.meshwg-primary", values))
        os.chown(self.config, 0, grp.getgrnam("knot").gr_gid)
        os.chmod(self.config, 0o640)
        self._write_zone_file(values)

    def _argv(self) -> list[str]:
        return [KNOTD, "-c", str(self.config)]


class _Secondary(DnsServer):
    def __init__(self, ns: Namespace, address: str, primary: _Primary | tuple[str, int],
                 members: Iterable[str] = (), port: int = 53, start: bool = True):
        if isinstance(primary, _Primary):
            self.primary_address, self.primary_port = primary.address, primary.port
            zone, keys = primary.zone, primary.keys
            members = [*primary.members[1:], *members]
        else:
            raise LabError("a secondary needs its BindPrimary or KnotPrimary "
                           "(zone and keys come from it)")
        super().__init__(ns, address, zone, keys, members=members, port=port, start=start)

    def _values(self) -> dict[str, str]:
        return {**super()._values(), "PRIMARY_ADDRESS": self.primary_address,
                "PRIMARY_PORT": str(self.primary_port)}


class KnotSecondary(_Secondary):
    """Knot DNS secondary of ``primary``'s zone (``knot.conf.meshwg-secondary``): refresh and
    transfers signed with ``meshwg-transfer``, NOTIFY accepted from the primary when signed,
    the zone kept in its journal only. Queries from outside ``members``: NOTAUTH."""

    kind = "knot-secondary"
    user = "knot"

    def _values(self) -> dict[str, str]:
        return {**super()._values(), "RENDEZVOUS_ADDRESSES": ", ".join(self.members)}

    def _write_files(self) -> None:
        self.config.write_text(render_template("knot.conf.meshwg-secondary", self._values()))
        os.chown(self.config, 0, grp.getgrnam("knot").gr_gid)
        os.chmod(self.config, 0o640)

    def _argv(self) -> list[str]:
        return [KNOTD, "-c", str(self.config)]


class BindSecondary(_Secondary):
    """BIND 9 secondary of ``primary``'s zone (``named.conf.meshwg-secondary``)."""

    kind = "bind-secondary"
    user = "bind"

    def _write_files(self) -> None:
        self.config.write_text(render_template("named.conf.meshwg-secondary", self._values()))

    def _argv(self) -> list[str]:
        return _named_argv(self.address, self.config)
