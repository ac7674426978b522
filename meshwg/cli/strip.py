"""`meshwg strip FILE|IFACE`: a wg-quick file without wg-quick's own keys, as `wg-quick
strip` prints it, for `wg syncconf IFACE <(meshwg strip IFACE)`.

The file is checked as `meshwg up` checks it first (the same one-line FILE:LINE errors),
without resolving Endpoint host names: the lines printed are the file's own
(meshwg.config.wgquick.strip_config), host names and comments included.
"""

from __future__ import annotations

import socket
import sys

from meshwg.cli.interface import config_path
from meshwg.config.wgquick import parse_config, read_config_text, strip_config

UNRESOLVED = "192.0.2.1"     # what a host name stands for while the file is checked


def _unresolved(host: str, port: int, *args) -> list:
    """A resolver for checking only (getaddrinfo's shape): every name has an address."""
    return [(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (UNRESOLVED, port))]


def cmd_strip(args) -> int:
    path = config_path(args.config)
    text = read_config_text(path)
    for line in parse_config(text, path, resolve=_unresolved).warnings:
        print(f"Warning: {line}", file=sys.stderr)
    sys.stdout.write(strip_config(text))
    sys.stdout.flush()
    return 0
