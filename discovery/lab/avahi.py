"""avahi-daemon in a lab namespace as an independent mDNS client (``avahi-browse``).

avahi needs a D-Bus system bus: :class:`AvahiObserver` starts a private ``dbus-daemon``
listening on a socket in its work folder and points avahi-daemon and avahi-browse at it
(DBUS_SYSTEM_BUS_ADDRESS). avahi-daemon runs with a tmpfs on /run inside the mount
namespace ``ip netns exec`` gives it, so its pid file and socket never meet the host's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from discovery.lab.netns import Namespace, poll

TOOLS = ("dbus-daemon", "avahi-daemon", "avahi-browse")

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

AVAHI_CONFIG = """[server]
host-name={host}
use-ipv4=yes
use-ipv6=yes
allow-interfaces=eth0
enable-dbus=yes
disallow-other-stacks=no
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""


def avahi_unavailable() -> str | None:
    """Why the avahi observer cannot run here (a tool missing), or None."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


class AvahiObserver:
    """avahi-daemon (host name ``host``, interface eth0) in ``ns`` on a private system bus
    whose files live in ``workdir``; the namespace's registry stops both daemons."""

    def __init__(self, ns: Namespace, workdir: Path, host: str) -> None:
        self.ns = ns
        self.socket = workdir / "bus"
        (workdir / "dbus.conf").write_text(DBUS_CONFIG.format(socket=self.socket))
        (workdir / "avahi.conf").write_text(AVAHI_CONFIG.format(host=host))
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.socket}"}
        self.bus = ns.popen(["dbus-daemon", f"--config-file={workdir / 'dbus.conf'}",
                             "--nofork"], name="dbus-daemon")
        poll(lambda: self.socket.exists(), 10, "the private dbus-daemon socket")
        self.avahi = ns.popen(
            ["sh", "-c", "mount -t tmpfs none /run && exec avahi-daemon --no-drop-root "
                         f"--no-chroot --no-rlimits -f {workdir / 'avahi.conf'}"],
            name="avahi-daemon", env=self.env)

        def started() -> bool:
            self.avahi.check_alive()
            return "Server startup complete" in self.avahi.stdout() + self.avahi.stderr()
        poll(started, 15, lambda: f"avahi-daemon startup\n{self.avahi.output()}")

    def browse(self, service_type: str) -> list[list[str]]:
        """Resolved entries of ``avahi-browse -rpt``: one field list per '=' line
        (=;iface;proto;name;type;domain;host;address;port;txt). LabError when it fails."""
        out = self.ns.run(["avahi-browse", "-rpt", service_type], env=self.env).stdout
        return [line.split(";") for line in out.splitlines() if line.startswith("=;")]

    def close(self) -> None:
        """Stop avahi-daemon, then the bus (idempotent)."""
        self.avahi.stop(timeout=5)
        self.bus.stop(timeout=5)
