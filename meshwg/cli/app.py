"""The `meshwg` command line: the parser and the one place errors are printed.

Engine commands live beside this module (keys, interface, show); installed extensions add
theirs through the "meshwg.commands" entry point group (the mesh layer's discovery.cli).
"""

from __future__ import annotations

import argparse
import logging
import sys

from meshwg import __version__, accel
from meshwg.cli.interface import cmd_down, cmd_up
from meshwg.cli.keys import cmd_genkey, cmd_genpsk, cmd_pubkey
from meshwg.cli.show import cmd_show
from meshwg.cli.strip import cmd_strip
from meshwg.util.errors import MeshwgError


ENGINE_COMMANDS = ("genkey", "pubkey", "genpsk", "up", "down", "show", "strip")


def build_parser(extensions: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `extensions=False` leaves out the commands of installed
    extensions (finding them scans the installed packages: ~0.1 s)."""
    parser = argparse.ArgumentParser(
        prog="meshwg",
        description="meshwg: a userspace WireGuard engine and NAT-traversal mesh. "
                    "Interfaces it runs are managed by the standard `wg` tool too.")
    parser.add_argument("--version", action="version", version=f"meshwg {__version__} "
                        f"(data path: {accel.describe(accel.select(warn=False))})")
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
    p.add_argument("--no-fastpath", action="store_true",
                   help="seal and open in pure Python, not the compiled data path "
                        "(same as MESHWG_FASTPATH=0)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop an interface started by `meshwg up` or `meshwg join`")
    p.add_argument("interface")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("strip", help="print a wg-quick config without wg-quick's own keys "
                       "(like `wg-quick strip`)",
                       description="Print FILE (or /etc/wireguard/IFACE.conf) without Address, DNS, "
                                   "MTU, Table, PreUp, PostUp, PreDown, PostDown and SaveConfig, as "
                                   "`wg-quick strip` does: `wg syncconf IFACE <(meshwg strip IFACE)`.")
    p.add_argument("config", metavar="FILE|IFACE")
    p.set_defaults(func=cmd_strip)

    p = sub.add_parser("show", help="show interfaces, peers, handshakes and transfer (like `wg show`)")
    p.add_argument("interface", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    # Commands of installed extensions (the mesh layer registers its own here: the
    # engine never imports it).
    if extensions:
        from importlib.metadata import entry_points
        for entry in entry_points(group="meshwg.commands"):
            entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(extensions=command not in ENGINE_COMMANDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args) or 0
    except MeshwgError as exc:
        print(f"meshwg: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
