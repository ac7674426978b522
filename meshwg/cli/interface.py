"""`meshwg up` and `meshwg down`: run an interface from a wg-quick file in the foreground, stop it."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time

from meshwg.cli.common import PID_DIRECTORY, StopSignal, check_privileges, fail, run_in_foreground
from meshwg.util.files import process_running, read_pid_file


def interface_name_from_path(path: str) -> str:
    base = os.path.basename(path)
    if base.endswith(".conf"):
        base = base[:-5]
    return base


_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")   # wg-quick's interface name pattern


def check_interface_name(name: str, hint: str = "") -> str:
    """`name` if it is an interface name wg-quick accepts (1-15 of a-z A-Z 0-9 _ = + . -);
    otherwise a CliError. Nothing else reaches a pid file or socket path: `meshwg down
    ../../x` would read a pid from outside the run directory and signal it."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        fail(f"interface name {name!r} must be 1-15 characters of a-z A-Z 0-9 _ = + . -{hint}")
    return name


CONFIG_DIRECTORY = "/etc/wireguard"


def config_path(argument: str, directory: str = CONFIG_DIRECTORY) -> str:
    """wg-quick's CONFIG_FILE: a bare interface name ("wg0") that is not a file here means
    DIRECTORY/wg0.conf; anything else (a FILE.conf too) is a path."""
    if ("/" not in argument and not argument.endswith(".conf") and _NAME.fullmatch(argument)
            and not os.path.exists(argument)):
        return os.path.join(directory, f"{argument}.conf")
    return argument


def parse_timer_overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--timer {item!r}: expected NAME=SECONDS")
        try:
            seconds = float(value)
        except ValueError:
            fail(f"--timer {item!r}: {value!r} is not a number")
        if not math.isfinite(seconds):     # nan/inf passed Timers' "> 0" check
            fail(f"--timer {item!r}: {value!r} is not a finite number of seconds")
        out[name.strip()] = seconds
    return out


def cmd_up(args) -> int:
    from meshwg.cli.quick import QuickInterface, check_collisions, derive_mtu, plan_routes
    from meshwg.config.wgquick import ConfigError, load_config, private_key_permission_warning
    from meshwg.device.device import Device
    from meshwg.core.timers import Timers
    args.config = config_path(args.config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        fail(str(exc))
    name = check_interface_name(args.interface or interface_name_from_path(args.config),
                                "" if args.interface else " (use --interface NAME)")
    try:
        timers = Timers().with_overrides(parse_timer_overrides(args.timer))
    except ValueError as exc:
        fail(f"--timer: {exc}")
    for line in list(getattr(config, "warnings", [])) + [private_key_permission_warning(args.config)]:
        if line:
            print(line if line.startswith("Warning") else f"Warning: {line}", file=sys.stderr)
    check_privileges()
    clear_leftovers(name, "Warning: ")
    stop = StopSignal()
    plan = plan_routes(config, no_routes=args.no_routes)
    check_collisions(config, plan, name)
    device = Device(name, listen_port=config.listen_port or 0,
                    fwmark=config.fwmark or plan.policy_table or 0,
                    mtu=derive_mtu(config), addresses=config.addresses, timers=timers,
                    manage_routes=plan.device_routes,
                    offload=False if getattr(args, "no_offload", False) else None)
    if getattr(args, "no_fastpath", False):
        device.use_fastpath(False)
    device.configure(config)
    run_in_foreground(QuickInterface(config, device, plan), lambda: device.name, lambda: (
        f"meshwg: {device.name} is up (UDP port {device.listen_port}, MTU {device.mtu}); "
        f"Ctrl-C or `meshwg down {device.name}` stops it"), stop)
    print(f"meshwg: {device.name} removed", file=sys.stderr)
    return 0


def _is_meshwg(pid: int) -> bool:
    """Whether process `pid` runs meshwg (`meshwg ...` or `python -m meshwg ...`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"meshwg" in f.read(65536)
    except OSError:
        return False


def _owner(name: str) -> int | None:
    """The live meshwg process that runs interface `name` (its pid file, or the state
    file of a `meshwg up` still starting), else None."""
    from meshwg.cli.quick import read_state
    for pid in (read_pid_file(name, PID_DIRECTORY), read_state(name, PID_DIRECTORY).get("pid")):
        if pid and pid != os.getpid() and process_running(pid) and _is_meshwg(pid):
            return pid
    return None


def clear_leftovers(name: str, prefix: str = "") -> tuple[list[str], list[str]]:
    """What a meshwg killed while running `name` left (policy and firewall rules, DNS,
    its pid file; meshwg.cli.quick.remove_leftovers), removed, each line printed on
    stderr: (removed, could not be removed). Refuses (CliError) while a live meshwg
    process runs the name."""
    from meshwg.cli.quick import remove_leftovers
    pid = _owner(name)
    if pid is not None:
        fail(f"{name} is run by meshwg process {pid} already (`meshwg down {name}` stops it)")
    stale = read_pid_file(name, PID_DIRECTORY)
    removed, failed = remove_leftovers(name, PID_DIRECTORY)
    path = os.path.join(PID_DIRECTORY, f"{name}.pid")
    if os.path.lexists(path):
        os.unlink(path)
        removed.append(f"stale {path}" + (f" (pid {stale})" if stale else ""))
    for line in removed:
        print(f"{prefix}{name}: removed what a killed meshwg left: {line}", file=sys.stderr)
    for line in failed:
        print(f"{prefix}{name}: could not remove what a killed meshwg left: {line}",
              file=sys.stderr)
    return removed, failed


def cmd_down(args) -> int:
    if args.interface.endswith(".conf"):      # `wg-quick down /etc/wireguard/wg0.conf` works too
        args.interface = interface_name_from_path(args.interface)
    check_interface_name(args.interface)
    path = os.path.join(PID_DIRECTORY, f"{args.interface}.pid")
    pid = _owner(args.interface)
    if pid is None:           # nothing runs it: clear what a killed `meshwg up` left
        removed, failed = clear_leftovers(args.interface)
        if failed:
            fail(f"{args.interface}: {len(failed)} leftovers of a killed meshwg not removed")
        if not removed:
            fail(f"{args.interface} is not a running meshwg interface (no {path})")
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 1 if clear_leftovers(args.interface)[1] else 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not process_running(pid):
            return 0
        time.sleep(0.05)
    fail(f"{args.interface}: process {pid} did not stop within 10 s")
    return 1
