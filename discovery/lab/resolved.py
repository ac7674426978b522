"""A live systemd-resolved inside one lab namespace, for the test of ``meshwg join --dns
resolved`` against the real daemon rather than the commands it runs.

systemd-resolved is not installed on the lab machine: installing Debian's package turns
the host's /etc/resolv.conf into a link to resolved's stub file (its postinst), which
nothing serves on a machine without systemd as PID 1, so the host would lose DNS. The
Makefile unpacks the package instead (``make resolved-lab``: ``apt-get download`` +
``dpkg-deb -x`` into RESOLVED_ROOT) and this module runs it:

* in the namespace's network and a mount namespace of its own (``unshare -m``) where
  /run is a tmpfs holding the runtime folder /run/systemd/resolve (bound to WORKDIR/run:
  resolved's stub-resolv.conf is readable there), /etc/passwd and /etc/group are copies
  with the ``systemd-resolve`` user it drops privileges to, and /etc/systemd holds a
  resolved.conf with no fallback servers, LLMNR or mDNS;
* with a private D-Bus system bus (dbus-daemon, in the same mount namespace so it knows
  that user) on WORKDIR/bus: resolvectl talks to resolved only over D-Bus, and finds it
  through DBUS_SYSTEM_BUS_ADDRESS.

Nothing of the host changes; the Cleanup stops both processes (one process group) and the
namespace goes with the lab.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from discovery.lab.avahi import DBUS_CONFIG     # a system bus open to every user
from discovery.lab.netns import Daemon, Namespace, poll

RESOLVED_ROOT = os.environ.get("MESHWG_RESOLVED_ROOT", "/var/cache/meshwg/systemd-resolved")
DAEMON = "lib/systemd/systemd-resolved"
RESOLVECTL = "usr/bin/resolvectl"
USER_ID = 64991                     # systemd-resolve's uid and gid inside the mount namespace

RESOLVED_CONF = "[Resolve]\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\n"
START = """set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/resolve
mount --bind {work}/run /run/systemd/resolve
mount --bind {work}/passwd /etc/passwd
mount --bind {work}/group /etc/group
if [ -d /etc/systemd ]; then mount --bind {work}/etc-systemd /etc/systemd; fi
dbus-daemon --config-file={work}/bus.conf --nofork &
export DBUS_SYSTEM_BUS_ADDRESS=unix:path={work}/bus
exec {daemon}
"""


def unavailable_reason(root: str = RESOLVED_ROOT) -> str | None:
    """Why a live systemd-resolved cannot run here, or None."""
    for path in (Path(root) / DAEMON, Path(root) / RESOLVECTL):
        if not os.access(path, os.X_OK):
            return (f"no unpacked systemd-resolved ({path} missing: `make resolved-lab` "
                    f"unpacks Debian's package there, or set MESHWG_RESOLVED_ROOT)")
    for tool in ("/usr/bin/dbus-daemon", "/usr/bin/unshare"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing"
    return None


class LiveResolved:
    """systemd-resolved running in `ns` with its files in a folder of its own under the
    temporary folder (every user may reach it: the bus socket is opened by resolved after
    it dropped privileges), removed by the namespace's Cleanup."""

    def __init__(self, ns: Namespace, root: str = RESOLVED_ROOT):
        self.ns = ns
        self.work = Path(tempfile.mkdtemp(prefix="mwlab-resolved-"))
        ns.cleanup.push(f"remove {self.work}", lambda: shutil.rmtree(self.work, ignore_errors=True))
        self.root = Path(root)
        self.bus = self.work / "bus"
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus}"}
        self.daemon: Daemon | None = None

    def start(self, timeout: float = 30.0) -> "LiveResolved":
        """Start the bus and resolved; return once resolved answers on the bus."""
        work = self.work
        (work / "run").mkdir()
        os.chown(work / "run", USER_ID, USER_ID)
        os.chmod(work, 0o755)
        (work / "etc-systemd").mkdir(exist_ok=True)
        (work / "etc-systemd" / "resolved.conf").write_text(RESOLVED_CONF)
        user = f"systemd-resolve:x:{USER_ID}:{USER_ID}:lab resolver:/:/usr/sbin/nologin\n"
        (work / "passwd").write_text(Path("/etc/passwd").read_text() + user)
        (work / "group").write_text(Path("/etc/group").read_text() + f"systemd-resolve:x:{USER_ID}:\n")
        (work / "bus.conf").write_text(DBUS_CONFIG.format(socket=self.bus))
        (work / "start.sh").write_text(START.format(work=work, daemon=self.root / DAEMON))
        self.daemon = self.ns.popen(["unshare", "-m", "sh", work / "start.sh"],
                                    name="systemd-resolved")
        self.ns.cleanup.push("stop systemd-resolved and its bus", self.stop)
        poll(lambda: self.daemon.check_alive() or
             self.resolvectl("status", check=False).returncode == 0,
             timeout, lambda: f"systemd-resolved to answer on its bus: {self.daemon.output()}")
        return self

    def stop(self, timeout: float = 8.0) -> None:
        """End resolved and the bus (its process group: Daemon.stop signals the leader
        only), then wait until none of the group is left."""
        if self.daemon is None:
            return
        group, deadline = self.daemon.pid, time.monotonic() + timeout
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            self.daemon.stop(timeout=timeout)
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    self.daemon = None
                    return
                time.sleep(0.05)        # a process's exit has no event to wait on here
            deadline = time.monotonic() + timeout
        self.daemon = None

    def resolvectl(self, *args: str, check: bool = True, timeout: float = 30.0):
        """``resolvectl ARGS`` in the namespace, on this resolved's bus."""
        return self.ns.run([self.root / RESOLVECTL, *args], check=check, timeout=timeout,
                           env=self.env)

    def command(self) -> str:
        """A program standing for ``resolvectl`` in the namespace on this bus (what
        discovery.daemons.host_dns.HostDns runs); written into the work folder."""
        path = self.work / "resolvectl"
        path.write_text("#!/bin/sh\n"
                        f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={self.bus} exec "
                        f"{' '.join(self.ns.argv([self.root / RESOLVECTL]))} \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def stub_resolv_conf(self) -> str:
        """resolved's stub-resolv.conf as it is now (nameserver 127.0.0.53 and the links'
        search domains): what /etc/resolv.conf links to on a host running resolved."""
        return (self.work / "run" / "stub-resolv.conf").read_text()
