"""meshwg: a userspace WireGuard engine and NAT-traversal mesh."""

__version__ = "0.1.0"
