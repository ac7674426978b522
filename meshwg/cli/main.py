"""The `meshwg` command line."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import threading
import time
from importlib.metadata import entry_points

from meshwg import __version__

PID_DIRECTORY = "/var/run/meshwg"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _fail(message: str) -> None:
    raise CliError(message)


# ---------------------------------------------------------------- keys
def cmd_genkey(args) -> int:
    from meshwg.core.keys import generate_private_key_b64
    print(generate_private_key_b64())
    return 0


def cmd_pubkey(args) -> int:
    from meshwg.core.keys import KeyFormatError, public_key_b64
    text = sys.stdin.read().strip()
    try:
        print(public_key_b64(text))
    except KeyFormatError as exc:
        _fail(f"pubkey: {exc}")
    return 0


def cmd_genpsk(args) -> int:
    from meshwg.core.keys import generate_psk_b64
    print(generate_psk_b64())
    return 0


# ---------------------------------------------------------------- up / down
def check_privileges() -> None:
    if os.geteuid() != 0:
        _fail("must run as root (creating a TUN interface needs CAP_NET_ADMIN)")
    if not os.path.exists("/dev/net/tun"):
        _fail("/dev/net/tun does not exist: this kernel or container has no TUN support")


def interface_name_from_path(path: str) -> str:
    base = os.path.basename(path)
    if base.endswith(".conf"):
        base = base[:-5]
    return base


def parse_timer_overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"--timer {item!r}: expected NAME=SECONDS")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            _fail(f"--timer {item!r}: {value!r} is not a number")
    return out


class StopSignal:
    """SIGINT/SIGTERM handlers installed before anything is created, so a signal that
    arrives while an interface is still being set up stops it cleanly afterwards instead
    of killing the process half-way."""

    def __init__(self):
        self.event = threading.Event()
        self.received: list[int] = []
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        self.received.append(signum)
        self.event.set()

    def wait(self) -> int:
        """Block until SIGINT or SIGTERM (returns at once if one came already)."""
        while not self.event.wait(0.2):
            pass
        return self.received[0]


def write_pid_file(name: str) -> str:
    os.makedirs(PID_DIRECTORY, mode=0o755, exist_ok=True)
    path = os.path.join(PID_DIRECTORY, f"{name}.pid")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return path


def cmd_up(args) -> int:
    from meshwg.config.wgquick import ConfigError, load_config, private_key_permission_warning
    from meshwg.device.device import Device
    from meshwg.core.timers import Timers
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _fail(str(exc))
    name = args.interface or interface_name_from_path(args.config)
    if not name or len(name) > 15:
        _fail(f"interface name {name!r} must be 1-15 characters (use --interface NAME)")
    try:
        timers = Timers().with_overrides(parse_timer_overrides(args.timer))
    except ValueError as exc:
        _fail(f"--timer: {exc}")
    for line in list(getattr(config, "warnings", [])) + [private_key_permission_warning(args.config)]:
        if line:
            print(line if line.startswith("Warning") else f"Warning: {line}", file=sys.stderr)
    check_privileges()
    stop = StopSignal()
    device = Device(name, listen_port=config.listen_port or 0, fwmark=config.fwmark or 0,
                    mtu=config.mtu or 1420, addresses=config.addresses, timers=timers,
                    manage_routes=not args.no_routes,
                    offload=False if getattr(args, "no_offload", False) else None)
    device.configure(config)
    _start_device(device)
    pid_path = write_pid_file(device.name)
    try:
        print(f"meshwg: {device.name} is up (UDP port {device.listen_port}); Ctrl-C or "
              f"`meshwg down {device.name}` stops it", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        device.stop()
        try:
            os.unlink(pid_path)
        except FileNotFoundError:
            pass
    print(f"meshwg: {device.name} removed", file=sys.stderr)
    return 0


def _start_device(device) -> None:
    from meshwg.conn.udp import BindError
    from meshwg.netlink.link import NetconfigError
    from meshwg.tun.device import TunError
    from meshwg.uapi.codec import UapiServerError
    try:
        device.start()
    except (TunError, BindError, NetconfigError, UapiServerError) as exc:
        _fail(str(exc))


def cmd_down(args) -> int:
    path = os.path.join(PID_DIRECTORY, f"{args.interface}.pid")
    try:
        pid = int(open(path).read().strip())
    except FileNotFoundError:
        _fail(f"{args.interface} is not a running meshwg interface (no {path})")
    except ValueError:
        _fail(f"{path}: not a pid")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.unlink(path)
        _fail(f"{args.interface}: process {pid} is gone; removed stale {path}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _process_running(pid):
            return 0
        time.sleep(0.05)
    _fail(f"{args.interface}: process {pid} did not stop within 10 s")
    return 1


def _process_running(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------- show
def _b64(hexkey: str) -> str:
    return base64.b64encode(bytes.fromhex(hexkey)).decode()


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or (unit == "second" and not parts):
            n, seconds = divmod(seconds, size)
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts) + " ago"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def interface_summary(name: str) -> dict:
    from meshwg.uapi import client as uapi_client
    dev = uapi_client.parse_get(uapi_client.get(name))
    out = {"interface": name, "public_key": None,
           "listen_port": int(dev.get("listen_port", 0)), "fwmark": int(dev.get("fwmark", 0)),
           "peers": []}
    if dev.get("private_key"):
        from meshwg.core.crypto import public_key
        out["public_key"] = base64.b64encode(public_key(bytes.fromhex(dev["private_key"]))).decode()
    try:
        with open(os.path.join(PID_DIRECTORY, f"{name}.stats.json")) as f:
            out["counters"] = json.load(f).get("counters", {})
    except (OSError, ValueError):
        out["counters"] = {}
    for p in dev["peers"]:
        sec = int(p.get("last_handshake_time_sec", 0))
        out["peers"].append({
            "public_key": _b64(p["public_key"]),
            "preshared_key": bool(p.get("preshared_key")) and p.get("preshared_key") != "0" * 64,
            "endpoint": p.get("endpoint"),
            "allowed_ips": p["allowed_ips"],
            "latest_handshake": sec or None,
            "rx_bytes": int(p.get("rx_bytes", 0)), "tx_bytes": int(p.get("tx_bytes", 0)),
            "persistent_keepalive": int(p.get("persistent_keepalive_interval", 0)),
        })
    return out


def cmd_show(args) -> int:
    from meshwg.uapi import client as uapi_client
    names = [args.interface] if args.interface else uapi_client.list_interfaces()
    summaries = []
    for name in names:
        try:
            summaries.append(interface_summary(name))
        except uapi_client.ControlError as exc:
            if args.interface:
                _fail(str(exc))
    if args.json:
        print(json.dumps(summaries if not args.interface else summaries[0], indent=2))
        return 0
    now = time.time()
    for s in summaries:
        print(f"interface: {s['interface']}")
        if s["public_key"]:
            print(f"  public key: {s['public_key']}")
        print(f"  listening port: {s['listen_port']}")
        if s.get("counters"):
            print("  counters: " + ", ".join(f"{k} {v}" for k, v in s["counters"].items()))
        for p in s["peers"]:
            print(f"\npeer: {p['public_key']}")
            if p["preshared_key"]:
                print("  preshared key: (hidden)")
            if p["endpoint"]:
                print(f"  endpoint: {p['endpoint']}")
            print(f"  allowed ips: {', '.join(p['allowed_ips']) or '(none)'}")
            if p["latest_handshake"]:
                print(f"  latest handshake: {_ago(now - p['latest_handshake'])}")
            if p["rx_bytes"] or p["tx_bytes"]:
                print(f"  transfer: {_bytes(p['rx_bytes'])} received, {_bytes(p['tx_bytes'])} sent")
            if p["persistent_keepalive"]:
                print(f"  persistent keepalive: every {p['persistent_keepalive']} seconds")
        print()
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshwg",
        description="meshwg: a userspace WireGuard engine and NAT-traversal mesh. "
                    "Interfaces it runs are managed by the standard `wg` tool too.")
    parser.add_argument("--version", action="version", version=f"meshwg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol events to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("genkey", help="print a new private key (base64, like `wg genkey`)")
    p.set_defaults(func=cmd_genkey)
    p = sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    p.set_defaults(func=cmd_pubkey)
    p = sub.add_parser("genpsk", help="print a new preshared key")
    p.set_defaults(func=cmd_genpsk)

    p = sub.add_parser("up", help="run an interface from a wg-quick config in the foreground",
                       description="Create a TUN interface from a wg-quick configuration file and run "
                                   "it until SIGINT/SIGTERM, then remove the interface and its control "
                                   "socket. `wg show`, `wg set` and `wg syncconf` work against it.")
    p.add_argument("config", help="wg-quick style file; the interface is named after it (wg0.conf -> wg0)")
    p.add_argument("--interface", "-i", help="interface name instead of the file's name")
    p.add_argument("--timer", action="append", metavar="NAME=SECONDS",
                   help="override a protocol timer (for tests): rekey_after_time, reject_after_time, "
                        "rekey_attempt_time, rekey_timeout, keepalive_timeout")
    p.add_argument("--no-routes", action="store_true", help="do not add routes for peers' allowed IPs")
    p.add_argument("--no-offload", action="store_true",
                   help="no UDP GSO/GRO or TUN TSO/GRO (same as MESHWG_OFFLOAD=0)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop an interface started by `meshwg up` or `meshwg join`")
    p.add_argument("interface")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("show", help="show interfaces, peers, handshakes and transfer (like `wg show`)")
    p.add_argument("interface", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    # Commands of installed extensions (the mesh layer registers its own here: the
    # engine never imports it).
    for entry in entry_points(group="meshwg.commands"):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args) or 0
    except CliError as exc:
        print(f"meshwg: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
