"""Member names on the host (``meshwg join --dns auto|resolved|hosts|off``): makes
``NAME.ZONE`` and the short ``NAME`` resolvable on the member's machine, as
discovery.dnssd.host_names decides.

* ``resolved``: ``resolvectl dns/domain/default-route`` on the tunnel interface at start
  (the zone a search and routing domain), ``resolvectl revert`` at stop (the link also
  vanishes with the interface).
* ``hosts``: the interface's marked block in /etc/hosts, rewritten when the names change
  (``ADDRESS NAME.ZONE NAME``; a short NAME that another line of the file gives another
  address, or that is this machine's host name, is left out and listed in status)
  (under a lock file in /var/run/meshwg, so two members on one host take turns) and
  removed at stop. The file is replaced atomically (meshwg.util.files.atomic_write, its
  mode kept); where /etc/hosts is a mount point (``ip netns exec`` bind-mounts
  /etc/netns/NS/hosts over it, containers mount theirs) a rename cannot replace it, so it
  is rewritten in place (one write, then truncate). A block left by a member killed with
  -9 is replaced at its next start.

Failures are logged and shown in `meshwg status` (``dns.error``); they never stop the
member.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import socket
import subprocess
from typing import Any, Iterable

from meshwg.util.files import RUN_DIRECTORY, atomic_write

from discovery.dnssd.host_names import (
    choose_mode, host_entries, hosts_block, outside_names, replace_block, resolved_commands,
    resolved_revert, resolved_server, with_short_names, zone_text,
)

log = logging.getLogger("meshwg.member.dns")

HOSTS_PATH = "/etc/hosts"
RESOLVED_RUN = "/run/systemd/resolve"     # exists while systemd-resolved runs
LOCK_NAME = "hosts.lock"
TOOL_TIMEOUT = 10.0                       # seconds for one resolvectl call


def resolved_running(resolved_run: str = RESOLVED_RUN) -> str | None:
    """The path of ``resolvectl`` when systemd-resolved runs here (its runtime folder
    exists and the tool is installed), else None."""
    tool = shutil.which("resolvectl")
    return tool if tool and os.path.isdir(resolved_run) else None


class HostDns:
    """One member's names on its host: start() once the interface exists, update(names)
    after each directory read, stop() before the interface goes; status() for `meshwg
    status`. `rendezvous` are the rendezvous's mesh addresses, `dns_port` its DNS port;
    `hostname` this machine's (default socket.gethostname()): no short name shadows it."""

    def __init__(self, requested: str, interface: str, zone: str, rendezvous: list[str],
                 dns_port: int, hosts_path: str = HOSTS_PATH, resolvectl: str | None = None,
                 lock_dir: str = RUN_DIRECTORY, hostname: str | None = None):
        self.requested = requested
        self.resolvectl = resolvectl if resolvectl is not None else resolved_running()
        self.mode = choose_mode(requested, self.resolvectl is not None)   # ValueError
        self.interface = interface
        self.zone = zone
        self.rendezvous = list(rendezvous)
        self.dns_port = dns_port
        self.hosts_path = hosts_path
        self.lock_path = os.path.join(lock_dir, LOCK_NAME)
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.error: str | None = None
        self._block: str | None = None        # what our block in the hosts file holds now
        self.left_out: dict[str, str] = {}    # short names not written, and why
        self._pairs: list[tuple[str, str]] | None = None   # the names it was made from
        self._failed = False                  # the last hosts-file write failed
        self._names = 0
        self._linked = False                  # resolved was told about our link

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.mode == "resolved":
            if self.resolvectl is None:
                self.error = "systemd-resolved is not running here (no resolvectl and " \
                             f"{RESOLVED_RUN}): names are not resolvable on this host"
                log.warning("%s", self.error)
                return
            servers = [resolved_server(a, self.dns_port) for a in self.rendezvous]
            self._linked = True
            for args in resolved_commands(self.interface, servers, self.zone):
                if not self._resolvectl(args):
                    break

    def update(self, names: Iterable[tuple[str, str]]) -> None:
        """The members' (name, mesh address), this member's included: in hosts mode, the
        block is rewritten when it changed."""
        if self.mode != "hosts":
            return
        pairs = list(names)
        if pairs == self._pairs:
            return                  # a directory read that changed no name (most do not)
        entries = host_entries(self.zone, self.rendezvous, pairs)
        if not self._rewrite(entries):
            self._pairs = None      # pending: retried at the next update
            return
        self._pairs, self._names = pairs, len(entries)

    @property
    def pending(self) -> bool:
        """The last hosts-file write failed: call update() again (the member does at its
        next serial check)."""
        return self._failed

    def stop(self) -> None:
        if self._linked:
            self._linked = False
            self._resolvectl(resolved_revert(self.interface))
        if self._block:
            if self._rewrite([]):
                self._pairs, self._names, self.left_out = None, 0, {}

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode, "requested": self.requested,
                               "error": self.error}
        if self.mode == "hosts":
            doc.update(hosts_file=self.hosts_path, names=self._names,
                       short_names_left_out=dict(self.left_out))
        elif self.mode == "resolved":
            doc.update(servers=[resolved_server(a, self.dns_port) for a in self.rendezvous],
                       domain=zone_text(self.zone), search=True)
        return doc

    # ------------------------------------------------------------------ resolved
    def _resolvectl(self, args: list[str]) -> bool:
        argv = [str(self.resolvectl), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
        else:
            if done.returncode == 0:
                self.error = None
                return True
            reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        self.error = f"resolvectl {' '.join(args)}: {reason}"
        log.warning("%s", self.error)
        return False

    # ------------------------------------------------------------------ hosts file
    def _rewrite(self, entries: list[tuple[str, str]]) -> bool:
        """Our block in the hosts file := `entries` (address, NAME.ZONE) with the short
        names that shadow nothing in the file as it is now (under the lock; [] removes
        the block); False on failure."""
        try:
            os.makedirs(os.path.dirname(self.lock_path), mode=0o755, exist_ok=True)
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                path = os.path.realpath(self.hosts_path)
                try:
                    with open(path, encoding="utf-8", errors="surrogateescape") as f:
                        text = f.read()
                    mode = os.stat(path).st_mode & 0o777
                except FileNotFoundError:
                    text, mode = "", 0o644
                lines, left_out = with_short_names(
                    self.zone, entries, outside_names(text, self.interface), self.hostname,
                    self.hosts_path)
                block = hosts_block(self.interface, lines)
                new = replace_block(text, self.interface, block)
                if new != text:
                    write_hosts(path, new.encode("utf-8", "surrogateescape"), mode)
        except OSError as exc:
            self.error = f"{self.hosts_path}: {exc.strerror or exc}"
            log.warning("cannot update %s", self.error)
            self._failed = True
            return False
        if left_out != self.left_out:
            for short, why in left_out.items():
                log.info("short name %s not in %s: %s", short, self.hosts_path, why)
        self._block, self.left_out = block, left_out
        self.error, self._failed = None, False
        return True


def write_hosts(path: str, data: bytes, mode: int) -> None:
    """Replace `path` atomically, or, when it is a mount point (a rename onto it fails
    with EBUSY), rewrite it in place: one write from the start, then truncate."""
    try:
        atomic_write(path, data, mode=mode)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
