"""`meshwg up` as wg-quick does it (wireguard-tools src/wg-quick/linux.bash, cmd_up and
cmd_down), around a meshwg Device:

up:   create the interface, PreUp hooks, addresses and MTU (derived when the file has no
      MTU line), DNS, routes (Table), PostUp hooks. Anything failing undoes what up did
      (DNS, policy rules, the interface), as wg-quick's trap does; PreDown/PostDown do not
      run then.
down: PreDown hooks, SaveConfig (the running configuration written back), the interface,
      rules and DNS removed, PostDown hooks. Down always completes: a failing hook or an
      unwritable file is a warning.

Table (wg-quick's add_route): "off" adds no route; a number or "main" puts every
AllowedIPs route into that table; "auto" (or no Table line) routes through the main table,
and a default route (0.0.0.0/0, ::/0) gets wg-quick's policy: table T (the FwMark if set,
else the first empty table from 51820 up, which becomes the engine's fwmark), rules
`not fwmark T lookup T` and `lookup main suppress_prefixlength 0`, the /0 route in T. The
engine's own UDP packets carry mark T, so they keep following the main table's default
route while everything else goes through the tunnel. wg-quick's firewall rules come with it
(its iptables form, through iptables-restore, commented "meshwg rule for IFACE"): the
mark is saved to the UDP flow's conntrack entry and restored on the replies, so a strict
reverse-path filter (with src_valid_mark) accepts them; packets for the interface's
addresses that arrive on another interface from a non-local source are dropped.

A route in the same table for the same prefix through another device (issue 9, case 16)
makes wg-quick fail (`ip route add` gives "File exists") and undo everything; meshwg up
refuses the same way, before creating anything, naming the AllowedIPs line and the other
device. Converging later instead (adding the route once the other one is gone) would leave
the user believing the tunnel carries a prefix it does not.

A `meshwg up` killed with SIGKILL loses its interface (the kernel removes a TUN device with
its last descriptor) but leaves what it added outside it: policy rules, firewall rules, a
resolvconf record. Before adding any, up records the policy table and the DNS record in
RUN_DIRECTORY/NAME.quick.json; remove_leftovers() clears them as wg-quick's down does
(every rule of the table, both families, and its comment-marked firewall rules), called by
`meshwg down` and by the next `meshwg up` of the name, which says what it removed.

DNS goes through `resolvconf` (as wg-quick: `resolvconf -a IFACE -m 0 -x`) or, on a host
with systemd-resolved and no resolvconf, through `resolvectl dns/domain` (and `resolvectl
revert` on down); a host with neither refuses a file with DNS lines.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

from meshwg.config.wgquick import (MIN_MTU, ConfigError, InterfaceConfig, PeerConfig,
                                   format_config)
from meshwg.netlink import routing
from meshwg.netlink.routes import TABLE_MAIN
from meshwg.uapi.codec import DEFAULT_DIRECTORY as UAPI_DIRECTORY
from meshwg.uapi.codec import socket_path
from meshwg.util.errors import MeshwgError
from meshwg.util.files import RUN_DIRECTORY, atomic_write
from meshwg.util.numbers import bounded_int

MTU_OVERHEAD = 80          # wg-quick: IPv6 (40) + UDP (8) + WireGuard (32) headers
DEFAULT_UNDERLAY_MTU = 1500
RESOLVCONF_ORDER = "/etc/resolvconf/interface-order"
RESOLVED_RUN = "/run/systemd/resolve"


class QuickError(MeshwgError):
    """A hook that failed, DNS that could not be set, a route that collides: one line."""


def say(line: str) -> None:
    """wg-quick's trace of what it runs: "[#] command" on stderr."""
    print(f"[#] {line}", file=sys.stderr, flush=True)


def warn(line: str) -> None:
    print(f"Warning: {line}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- MTU

def derive_mtu(config: InterfaceConfig, route_mtu: Callable[[str], int | None] = routing.route_mtu,
               default_route_mtu: Callable[[], int | None] = routing.default_route_mtu) -> int:
    """The MTU line, else wg-quick's set_mtu_up: the smallest MTU of the routes to the
    peers' endpoints (a route's own mtu, else its device's), else the default route's,
    else 1500; minus 80 (at least 68)."""
    if config.mtu is not None:
        return config.mtu
    found = [m for m in (route_mtu(p.endpoint[0]) for p in config.peers if p.endpoint) if m]
    underlay = min(found) if found else (default_route_mtu() or DEFAULT_UNDERLAY_MTU)
    return max(MIN_MTU, underlay - MTU_OVERHEAD)


# ----------------------------------------------------------------------------- hooks

def run_hooks(kind: str, commands: list[str], name: str) -> None:
    """Each command with `%i` replaced by the interface name, through `bash -c` (wg-quick's
    execute_hooks); the first that exits non-zero is a QuickError."""
    for command in commands:
        command = command.replace("%i", name)
        say(command)
        try:
            status = subprocess.run(["bash", "-c", command]).returncode
        except OSError as exc:
            raise QuickError(f"{kind} hook: cannot run bash: {exc.strerror or exc}") from None
        if status != 0:
            raise QuickError(f"{kind} hook failed (exit status {status}): {command}")


# ----------------------------------------------------------------------------- DNS

def _run_tool(argv: list[str], input: str | None = None) -> None:
    say(" ".join(argv))
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuickError(f"{argv[0]}: {getattr(exc, 'strerror', None) or exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise QuickError(f"{' '.join(argv[:3])}: {reason}")


def resolvconf_name(name: str, resolvconf: str, order_file: str = RESOLVCONF_ORDER) -> str:
    """wg-quick's resolvconf_iface_prefix: Debian's resolvconf orders interfaces by the
    patterns in interface-order ("tun*" -> "tun.NAME"); not for a symlinked resolvconf
    (systemd's)."""
    if not os.path.isfile(order_file) or os.path.islink(resolvconf):
        return name
    with open(order_file) as f:
        for line in f:
            line = line.strip()
            if line.endswith("*") and line[:-1] and all(c.isalnum() or c == "-" for c in line[:-1]):
                return f"{line[:-1]}.{name}"
    return name


@dataclass
class DnsSetting:
    """The host's resolver manager, found once; set() returns nothing, unset() undoes it."""
    name: str
    servers: list[str]
    search: list[str]
    which: Callable[[str], str | None] = shutil.which
    resolved_run: str = RESOLVED_RUN
    done: list[str] = field(default_factory=list)

    def tool(self) -> tuple[str, str]:
        resolvconf = self.which("resolvconf")
        if resolvconf:
            return "resolvconf", resolvconf
        resolvectl = self.which("resolvectl")
        if resolvectl and os.path.isdir(self.resolved_run):
            return "resolvectl", resolvectl
        raise QuickError("DNS needs resolvconf or systemd-resolved (resolvectl); this host has "
                         "neither (install one, or remove the DNS lines)")

    def set(self) -> None:
        kind, path = self.tool()
        if kind == "resolvconf":
            text = "".join(f"nameserver {s}\n" for s in self.servers)
            if self.search:
                text += f"search {' '.join(self.search)}\n"
            record = resolvconf_name(self.name, path)
            _run_tool([path, "-a", record, "-m", "0", "-x"], input=text)
            self.done = [path, "-d", record, "-f"]
        else:
            self.done = [path, "revert", self.name]
            _run_tool([path, "dns", self.name, *self.servers])
            # -x (exclusive) in resolved's resolvconf: the "~." routing domain
            _run_tool([path, "domain", self.name, "~.", *self.search])

    def leftover(self) -> list[str] | None:
        """The command that removes what set() leaves behind after its process is killed
        (a resolvconf record; resolved forgets a link's DNS when the link goes)."""
        kind, path = self.tool()
        return [path, "-d", resolvconf_name(self.name, path), "-f"] if kind == "resolvconf" else None

    def unset(self) -> None:
        if self.done:
            argv, self.done = self.done, []
            _run_tool(argv)


# ----------------------------------------------------------------------------- routes

@dataclass(frozen=True)
class RoutePlan:
    """Where the routes of a configuration go: `device_routes` (the engine's own route
    sync, main table), `table` (every AllowedIPs route into this table at up), `policy`
    (/0 routes under policy table `policy_table`)."""
    device_routes: bool
    table: int | None = None
    default_routes: tuple = ()
    policy_table: int | None = None


def plan_routes(config: InterfaceConfig, no_routes: bool = False,
                free_table: Callable[[], int] = routing.free_table) -> RoutePlan:
    table = "off" if no_routes else (config.table or "auto")
    if table == "off":
        return RoutePlan(device_routes=False)
    if table != "auto":
        return RoutePlan(device_routes=False, table=TABLE_MAIN if table == "main" else int(table))
    defaults = tuple(dict.fromkeys(n for p in config.peers for n in p.allowed_ips if n.prefixlen == 0))
    if not defaults:
        return RoutePlan(device_routes=True)
    return RoutePlan(device_routes=True, default_routes=defaults,
                     policy_table=config.fwmark or free_table())


def check_collisions(config: InterfaceConfig, plan: RoutePlan, name: str,
                     colliding: Callable = routing.colliding_routes) -> None:
    """Refuse (ConfigError at the AllowedIPs line) a prefix that `plan` would route while
    the same table holds a route for it through another device."""
    if plan.table is None and not plan.device_routes:
        return
    table = plan.table or TABLE_MAIN
    lines = {}
    for peer in config.peers:
        for net in peer.allowed_ips:
            if plan.table is not None or net.prefixlen:
                lines.setdefault(net, peer.allowed_ip_lines.get(net, peer.line))
    found = colliding(name, list(lines), table)
    if found:
        net, device = next(iter(found.items()))
        where = "main table" if table == TABLE_MAIN else f"table {table}"
        raise ConfigError(config.path, lines[net],
                          f"AllowedIPs: {net} is routed through {device} already ({where}); "
                          f"wg-quick refuses this too: remove that route, narrow AllowedIPs "
                          f"or set Table = off")


# ----------------------------------------------------------------------------- firewall

def _firewall_tool(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def add_firewall(name: str, version: int, mark: int, addresses: list) -> None:
    """wg-quick's add_default firewall (iptables form) for one IP version."""
    comment = f'-m comment --comment "meshwg rule for {name}"'
    lines = ["*raw"]
    lines += [f"-I PREROUTING ! -i {name} -d {a.ip} -m addrtype ! --src-type LOCAL -j DROP {comment}"
              for a in addresses if a.version == version]
    lines += ["COMMIT", "*mangle",
              f"-I POSTROUTING -m mark --mark {mark} -p udp -j CONNMARK --save-mark {comment}",
              f"-I PREROUTING -p udp -j CONNMARK --restore-mark {comment}", "COMMIT", ""]
    _run_tool([f"{_firewall_tool(version)}-restore", "-n"], input="\n".join(lines))


def remove_firewall(name: str, version: int) -> int:
    """Delete every rule add_firewall made for `name` (wg-quick's remove_firewall): how
    many."""
    tool = _firewall_tool(version)
    try:
        dump = subprocess.run([f"{tool}-save"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuickError(f"{tool}-save: {getattr(exc, 'strerror', None) or exc}") from None
    marker = f'--comment "meshwg rule for {name}"'
    kept = [("-D" + line[2:]) if line.startswith("-A ") else line for line in dump.splitlines()
            if line.startswith("*") or line == "COMMIT" or (line.startswith("-A ") and marker in line)]
    found = sum(line.startswith("-D ") for line in kept)
    if found:
        _run_tool([f"{tool}-restore", "-n"], input="\n".join(kept) + "\n")
    return found


# ----------------------------------------------------------------------------- leftovers

def state_path(name: str, directory: str = RUN_DIRECTORY) -> str:
    """DIRECTORY/NAME.quick.json: what a killed `meshwg up NAME` may have left."""
    return os.path.join(directory, f"{name}.quick.json")


def read_state(name: str, directory: str = RUN_DIRECTORY) -> dict:
    """The state file of NAME ({} when there is none or it is not ours): "pid", "table"
    (the default route's policy table), "dns" (the command that removes the record)."""
    try:
        with open(state_path(name, directory)) as f:
            state = json.loads(f.read(4096))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    pid = bounded_int(str(state.get("pid")), (1 << 32) - 1, 1)
    table = bounded_int(str(state.get("table")), 0xFFFFFFFF, 1)
    dns = state.get("dns")
    if not (isinstance(dns, list) and dns and all(isinstance(a, str) for a in dns)):
        dns = None
    return {"pid": pid, "table": table, "dns": dns}


def remove_leftovers(name: str, directory: str = RUN_DIRECTORY,
                     uapi_directory: str = UAPI_DIRECTORY) -> tuple[list[str], list[str]]:
    """Remove what a `meshwg up NAME` killed with SIGKILL left, as wg-quick's down would:
    every rule that looks up its policy table and the suppress_prefixlength rules no other
    tunnel needs (IPv4 and IPv6), its iptables/ip6tables rules, its resolvconf record; and
    its control socket (which nobody serves), the state file. Only for a name no live
    process runs; idempotent. Returns (one line per thing removed, one line per thing that
    could not be removed); the state file stays while anything could not."""
    state = read_state(name, directory)
    removed: list[str] = []
    failed: list[str] = []

    def attempt(what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except MeshwgError as exc:
            failed.append(f"{what}: {exc}")
        except OSError as exc:
            failed.append(f"{what}: {exc.strerror or exc}")

    if state.get("table"):
        attempt(f"rules of table {state['table']}",
                lambda: removed.extend(routing.delete_default_route_policy(state["table"])))
    for version in (4, 6):
        tool = _firewall_tool(version)
        if shutil.which(f"{tool}-save"):
            def firewall(version=version, tool=tool) -> None:
                found = remove_firewall(name, version)
                if found:
                    removed.append(f"{found} {tool} rules commented \"meshwg rule for {name}\"")
            attempt(f"{tool} rules", firewall)
    if state.get("dns") and shutil.which(state["dns"][0]):
        def dns() -> None:
            _run_tool(state["dns"])
            removed.append(f"DNS ({' '.join(state['dns'])})")
        attempt("DNS", dns)
    if _remove_dead_socket(socket_path(name, uapi_directory)):
        removed.append(f"control socket {socket_path(name, uapi_directory)} (nobody "
                       f"served it)")
    if not failed:
        try:
            os.unlink(state_path(name, directory))
        except FileNotFoundError:
            pass
    return removed, failed


def _remove_dead_socket(path: str) -> bool:
    """Unlink `path` if it is a Unix socket nobody listens on; whether it was."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return False             # served (by another implementation): not ours to remove
    except ConnectionRefusedError:
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


# ----------------------------------------------------------------------------- SaveConfig

def saved_config(config: InterfaceConfig, status, addresses: list, mtu: int | None) -> InterfaceConfig:
    """wg-quick's save_config: the running state (`wg showconf`: key, port, fwmark, peers
    with their current endpoints) plus the interface's addresses, DNS, MTU (when the file
    had one), Table, SaveConfig and the hooks."""
    peers = [PeerConfig(public_key=p.public_key, preshared_key=p.preshared_key,
                        allowed_ips=list(p.allowed_ips), endpoint=p.endpoint,
                        persistent_keepalive=p.persistent_keepalive) for p in status.peers]
    return InterfaceConfig(
        path=config.path, private_key=status.private_key, listen_port=status.listen_port,
        addresses=list(addresses), mtu=mtu if config.mtu is not None else None,
        fwmark=status.fwmark or None, peers=peers, dns=list(config.dns),
        dns_search=list(config.dns_search), table=config.table, save_config=True,
        pre_up=list(config.pre_up), post_up=list(config.post_up),
        pre_down=list(config.pre_down), post_down=list(config.post_down))


# ----------------------------------------------------------------------------- up / down

class QuickInterface:
    """A Device run the wg-quick way: start() is cmd_up, stop() is cmd_down (what
    meshwg.cli.common.run_in_foreground drives)."""

    def __init__(self, config: InterfaceConfig, device, plan: RoutePlan,
                 run_directory: str = RUN_DIRECTORY):
        self.config = config
        self.device = device
        self.plan = plan
        self.run_directory = run_directory
        self.recorded = False                # the state file is written
        self.rules: list[routing.PolicyRule] = []
        self.firewalls: list[int] = []       # IP versions with firewall rules
        self.dns: DnsSetting | None = None

    @property
    def name(self) -> str:
        return self.device.name

    def start(self) -> None:
        cfg = self.config
        self.device.start(after_create=lambda name: run_hooks("PreUp", cfg.pre_up, name))
        try:
            if cfg.dns or cfg.dns_search:
                self.dns = DnsSetting(self.name, cfg.dns, cfg.dns_search)
            self._record()
            if self.dns is not None:
                self.dns.set()
            if self.plan.table is not None:
                routing.add_routes_to_table(
                    self.name, [n for p in cfg.peers for n in p.allowed_ips], self.plan.table)
            for net in self.plan.default_routes:
                self.rules += routing.add_default_route_policy(self.name, net, self.plan.policy_table)
                self.firewalls.append(net.version)
                add_firewall(self.name, net.version, self.plan.policy_table,
                             routing.interface_addresses(self.name))
                if net.version == 4:
                    routing.set_src_valid_mark()
            run_hooks("PostUp", cfg.post_up, self.name)
            if cfg.private_key is None and not any(self.device.status().private_key or b""):
                raise QuickError(f"{self.name}: no private key: {cfg.path} has no PrivateKey "
                                 f"and its PostUp hooks set none")
        except BaseException:
            self._remove()
            raise

    def _record(self) -> None:
        """Write the state file before adding anything a SIGKILL would leave behind."""
        dns = self.dns.leftover() if self.dns is not None else None
        if not (dns or self.plan.default_routes):
            return
        state = {"pid": os.getpid(), "table": self.plan.policy_table if self.plan.default_routes
                 else None, "dns": dns}
        os.makedirs(self.run_directory, mode=0o755, exist_ok=True)
        atomic_write(state_path(self.name, self.run_directory), json.dumps(state) + "\n", 0o600)
        self.recorded = True

    def stop(self) -> None:
        cfg = self.config
        name = self.name
        self._quietly(lambda: run_hooks("PreDown", cfg.pre_down, name))
        if cfg.save_config:
            self._quietly(self.save)
        self._remove()
        self._quietly(lambda: run_hooks("PostDown", cfg.post_down, name))

    def save(self) -> None:
        status = self.device.status()
        if status.private_key is None:
            raise QuickError(f"SaveConfig: {self.name} has no private key now; "
                             f"{self.config.path} left as it was")
        addresses = routing.interface_addresses(self.name)
        text = format_config(saved_config(self.config, status, addresses, self.device.mtu))
        say(f"save {self.name} -> {self.config.path}")
        try:
            atomic_write(os.path.realpath(self.config.path), text, 0o600)
        except OSError as exc:
            raise QuickError(f"SaveConfig: cannot write {self.config.path}: "
                             f"{exc.strerror or exc}") from None

    def _remove(self) -> None:
        """Undo up: DNS, firewall and policy rules, the interface (its routes go with it)."""
        if self.dns is not None:
            self._quietly(self.dns.unset)
        versions, self.firewalls = self.firewalls, []
        for version in versions:
            self._quietly(lambda: remove_firewall(self.name, version))
        rules, self.rules = self.rules, []
        if rules:     # all rules of the table, as wg-quick's down (duplicates too)
            self._quietly(lambda: routing.delete_default_route_policy(self.plan.policy_table))
        self.device.stop()
        if self.recorded:
            self.recorded = False
            try:
                os.unlink(state_path(self.name, self.run_directory))
            except FileNotFoundError:
                pass

    @staticmethod
    def _quietly(step: Callable[[], None]) -> None:
        """Run one step of down; what it raises is a warning, so the rest still runs (down
        must always remove the interface)."""
        try:
            step()
        except MeshwgError as exc:
            warn(str(exc))
        except Exception as exc:  # noqa: BLE001 -- netlink/OS errors: down goes on
            warn(f"{type(exc).__name__}: {exc}")
