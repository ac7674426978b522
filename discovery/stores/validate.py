"""Checks of the values a mesh stores and receives: member names, host candidates, zone
names, interface names, public keys. No I/O; each raises ValueError with one line naming
the bad value (callers turn it into StateError or a refusal)."""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

import dns.exception
import dns.name

from meshwg.core import crypto
from meshwg.core.keys import KEY_SIZE, decode_key
from meshwg.util.endpoint import EndpointError, parse_endpoint

from discovery.dnssd.member import published_ip

MAX_CANDIDATES = 16
MAX_CANDIDATE_LENGTH = 255

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# Names that mean something else where members are listed or resolved: `meshwg status`
# shows the rendezvous's own row as "rendezvous"; the others are DNS and host conventions.
RESERVED_NAMES = frozenset({"rendezvous", "localhost", "local", "relay", "self", "all"})
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")   # RFC 6598 carrier-grade NAT


def validate_name(name: str) -> str:
    """Return the member name if it is one DNS label of a-z, 0-9 and '-' and not one of
    RESERVED_NAMES; else ValueError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid member name {name!r}: use 1-63 characters a-z, 0-9 "
                         f"and '-', not starting or ending with '-'")
    if name in RESERVED_NAMES:
        raise ValueError(f"member name {name!r} is reserved "
                         f"(reserved: {', '.join(sorted(RESERVED_NAMES))})")
    return name


def host_address(network: str, address: str) -> str:
    """`address` as canonical text when it is a host address of `network` (not its network
    or broadcast address unless the network is a /31 or /32, /127 or /128); ValueError."""
    net = ipaddress.ip_network(network)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"address {address!r} is not an IP address") from None
    if ip not in net or (ip in (net.network_address, net.broadcast_address)
                          and net.num_addresses > 2):
        raise ValueError(f"address {address} is not a host address of {network}")
    return str(ip)


def check_strong_key(public_key: bytes) -> bytes:
    """`public_key` (32 bytes) unless it is a low-order Curve25519 point (all zeros and
    the other points whose Diffie-Hellman result is all zeros: RFC 7748 section 6.1);
    ValueError otherwise. Tested with one exchange against a fresh key."""
    try:
        crypto.dh(crypto.generate_private_key(), public_key)
    except crypto.WeakKeyError:
        raise ValueError("the public key is a low-order point (a weak key no one can "
                         "complete a handshake with)") from None
    return public_key


def candidate_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP of a host candidate "IP:PORT" if a peer may be asked to probe it: an IP
    literal (no host name), no IPv6 scope, IPv4-mapped IPv6 as IPv4, and not unspecified,
    loopback, link-local, multicast or reserved. ValueError naming the candidate else."""
    host, _ = parse_endpoint(text)
    ip = published_ip(host, f"host candidate {text!r}")
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast \
            or ip.is_reserved:
        raise ValueError(f"host candidate {text!r}: {ip} is not an address peers can probe")
    return ip


def is_local_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, unique-local or carrier-grade NAT space: a LAN address, not a third
    party's on the internet."""
    return ip.is_private or ip in _SHARED_SPACE


def candidate_problems(candidates: list[str]) -> list[str]:
    """Why each candidate a peer could not be given (candidate_ip) is unusable, one line
    each: for states that stored candidates before they were checked."""
    problems = []
    for cand in candidates:
        try:
            candidate_ip(cand)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def screen_candidates(candidates: list[str], observed: list[str],
                      seen_endpoint: Callable[[tuple[str, int]], bool] | None = None
                      ) -> tuple[list[str], list[str]]:
    """Split host candidates into (kept, dropped): kept when candidate_ip accepts it and
    its IP is local (is_local_ip) or one of the `observed` IPs (the addresses the
    rendezvous saw this member at), or `seen_endpoint((ip, port))` says a request came from that
    very endpoint (the observation responder's recently answered sources: a member's
    reflexive endpoint in its other address family), so a member cannot make the others
    probe third parties. Each dropped entry is a one-line reason."""
    seen = set()
    for text in observed:
        ip = ipaddress.ip_address(text.split("%")[0])
        seen.add(getattr(ip, "ipv4_mapped", None) or ip)
    kept, dropped = [], []
    for cand in candidates:
        try:
            ip = candidate_ip(cand)
        except ValueError as exc:
            dropped.append(str(exc))
            continue
        if is_local_ip(ip) or ip in seen or (
                seen_endpoint is not None and seen_endpoint((str(ip), parse_endpoint(cand)[1]))):
            kept.append(cand)
        else:
            dropped.append(f"host candidate {cand!r}: {ip} is neither a LAN address nor "
                           f"where the rendezvous sees this member (a third party?)")
    return kept, dropped


def validate_candidates(candidates: list[str]) -> list[str]:
    """Check host candidates ("IP:PORT" strings, at most MAX_CANDIDATES, each as
    candidate_ip accepts); the list unchanged, or ValueError naming the bad one."""
    if not isinstance(candidates, (list, tuple)):
        raise ValueError("host candidates must be a list of HOST:PORT strings")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"{len(candidates)} host candidates given, at most {MAX_CANDIDATES} allowed")
    out = []
    for cand in candidates:
        if not isinstance(cand, str) or len(cand) > MAX_CANDIDATE_LENGTH or cand != cand.strip():
            raise ValueError(f"host candidate {cand!r} is not a HOST:PORT string")
        try:
            candidate_ip(cand)
        except EndpointError as exc:
            raise ValueError(f"host candidate: {exc}") from None
        out.append(cand)
    return out


def normalize_zone(zone: str) -> str:
    """Lowercase, fully-qualified zone name ("mesh.internal."); ValueError otherwise."""
    try:
        name = dns.name.from_text(zone)
    except (dns.exception.DNSException, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"invalid zone {zone!r}: {exc}") from None
    if name == dns.name.root:
        raise ValueError("zone must not be the DNS root")
    return name.to_text().lower()


def validate_interface_name(name: str) -> str:
    """A Linux interface name: 1-15 of A-Z a-z 0-9 _ . -; ValueError otherwise."""
    if not isinstance(name, str) or not _IFNAME_RE.match(name):
        raise ValueError(f"interface name {name!r}: use 1-15 of A-Z a-z 0-9 _ . -")
    return name


def public_key_bytes(public_key: bytes | str) -> bytes:
    """A 32-byte WireGuard public key from bytes or its base64 text; ValueError otherwise."""
    if isinstance(public_key, str):
        return decode_key(public_key, "public key")
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise ValueError(f"a WireGuard public key is {KEY_SIZE} bytes")
    return public_key
