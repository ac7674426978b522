"""What a member's host is told so that ``ping laptop.ZONE`` and ``ping laptop`` work
(MagicDNS-like): the choice of mechanism, the names and addresses, the marked block in a
hosts file with its short names, and the ``resolvectl`` arguments. No I/O;
discovery.daemons.host_dns applies it.

Modes (``meshwg join --dns MODE``):

* ``resolved``: systemd-resolved's per-link DNS. On the tunnel interface: DNS server =
  the rendezvous's mesh address (port when not 53), domain ``ZONE`` (a search domain, so
  a single-label name ``laptop`` is tried as ``laptop.ZONE``, and a routing domain: names
  under ZONE go there) and no default route (no other query goes there); undone by
  ``resolvectl revert IFACE``. Every name of the zone then resolves live from the
  rendezvous's directory (discovery.dnssd.zone), through the tunnel. What the host
  already resolves comes first (systemd-resolved answers its own host name and
  /etc/hosts before asking a link's servers), so a short name shadows nothing.
* ``hosts``: a block in /etc/hosts between two marker lines naming the interface, one
  ``ADDRESS NAME.ZONE NAME`` line per member (and the rendezvous, and this member),
  rewritten whenever the directory changes and removed on stop; lines outside the block
  are never changed. The short alias NAME is left out (and `meshwg status` says why) when
  it would shadow what the host resolves already: a line outside the block giving NAME
  another address, or the machine's own host name. Works with any libc resolver and no
  daemon (``hosts: files ...`` in nsswitch.conf, Debian's default); names are known only
  as fresh as the member's last directory read.
* ``auto``: ``resolved`` when systemd-resolved runs, else ``hosts``.
* ``off``: nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from discovery.dnssd.names import RENDEZVOUS_LABEL, host_label

DNS_MODES = ("auto", "resolved", "hosts", "off")
DNS_PORT = 53


def choose_mode(requested: str, resolved_running: bool) -> str:
    """The mode to use: `requested`, with ``auto`` -> ``resolved`` when systemd-resolved
    runs, else ``hosts``. ValueError for a mode not in DNS_MODES."""
    if requested not in DNS_MODES:
        raise ValueError(f"DNS mode {requested!r}: use one of {', '.join(DNS_MODES)}")
    if requested == "auto":
        return "resolved" if resolved_running else "hosts"
    return requested


def zone_text(zone: str) -> str:
    """The zone as users write it: "mesh.internal" (no final dot, lowercase)."""
    return zone.rstrip(".").lower()


def host_entries(zone: str, rendezvous: Iterable[str], members: Iterable[tuple[str, str]]
                 ) -> list[tuple[str, str]]:
    """(address, NAME.ZONE) for the hosts file: the rendezvous's mesh `rendezvous`
    addresses as ``rendezvous.ZONE``, then each (name, mesh address) of `members` whose
    name is a DNS label and whose address an IP literal; a name already given keeps its
    first address (the rendezvous's first), as the directory answers. Sorted by name."""
    suffix = "." + zone_text(zone)

    def fqdn(name: str) -> str:
        return host_label(name).lower() + suffix

    names: dict[str, list[str]] = {}
    own = [ip for ip in map(_ip_text, rendezvous) if ip]
    if own:
        names[fqdn(RENDEZVOUS_LABEL)] = own
    for name, address in members:
        try:
            owner = fqdn(name)
        except ValueError:
            continue
        if owner not in names:          # a second holder of one name: the first keeps it
            ip = _ip_text(address)
            if ip:
                names[owner] = [ip]
    return [(ip, name) for name in sorted(names) for ip in names[name]]


def _ip_text(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _markers(interface: str) -> tuple[str, str]:
    return (f"# BEGIN meshwg {interface}: managed by `meshwg join`, do not edit",
            f"# END meshwg {interface}")


def hosts_block(interface: str, entries: list[tuple[str, str]]) -> str:
    """The marked block for `interface` holding `entries` (address, names: "NAME.ZONE" or
    "NAME.ZONE NAME"); "" for none."""
    if not entries:
        return ""
    begin, end = _markers(interface)
    return "".join([begin + "\n", *(f"{ip}\t{name}\n" for ip, name in entries), end + "\n"])


def outside_names(text: str, interface: str) -> dict[str, set[str]]:
    """Every name (lowercase) the hosts file `text` gives outside `interface`'s marked
    block, with its addresses (hosts(5): ``ADDRESS NAME [ALIAS...]``, '#' to the end of a
    line is a comment; other interfaces' blocks count as outside)."""
    begin, end = _markers(interface)
    names: dict[str, set[str]] = {}
    inside = False
    for line in text.splitlines():
        if line == begin:
            inside = True
        elif line == end:
            inside = False
        elif not inside:
            fields = line.split("#", 1)[0].split()
            ip = _ip_text(fields[0]) if fields else None
            for name in fields[1:] if ip else ():
                names.setdefault(name.lower(), set()).add(ip)
    return names


def with_short_names(zone: str, entries: list[tuple[str, str]], taken: dict[str, set[str]],
                     hostname: str, where: str = "/etc/hosts"
                     ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """`entries` (address, NAME.ZONE) as hosts-file lines with the short alias NAME:
    (address, "NAME.ZONE NAME") unless NAME would shadow what the host resolves already,
    then (address, "NAME.ZONE") and NAME -> why in the second result. Shadowing: `taken`
    (outside_names of the hosts file at `where`) gives NAME an address NAME.ZONE lacks,
    or NAME is the machine's `hostname` (either the whole or its first label)."""
    suffix = "." + zone_text(zone)
    own = {hostname.lower(), hostname.lower().split(".", 1)[0]} - {""}
    mine: dict[str, set[str]] = {}
    for ip, name in entries:
        mine.setdefault(name, set()).add(ip)
    lines, left_out = [], {}
    for ip, name in entries:
        short = name[:-len(suffix)] if name.endswith(suffix) else ""
        if not short:
            lines.append((ip, name))
            continue
        if short in own:
            left_out[short] = "the machine's own host name"
        elif taken.get(short, set()) - mine[name]:
            others = ", ".join(sorted(taken[short] - mine[name]))
            left_out[short] = f"{where} gives it {others}"
        lines.append((ip, name) if short in left_out else (ip, f"{name} {short}"))
    return lines, left_out


def replace_block(text: str, interface: str, block: str) -> str:
    """`text` (a hosts file) with `interface`'s marked block replaced by `block` ("":
    removed), appended at the end when it had none. Every other line is kept as it was;
    an unterminated block (no END line) is kept as text, not guessed at."""
    begin, end = _markers(interface)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == begin), None)
    stop = None if start is None else next(
        (i for i in range(start + 1, len(lines)) if lines[i].rstrip("\n") == end), None)
    if start is not None and stop is not None:
        return "".join(lines[:start]) + block + "".join(lines[stop + 1:])
    if not block:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + block


def resolved_server(address: str, port: int = DNS_PORT) -> str:
    """A DNS server as ``resolvectl dns`` takes it: "10.0.0.1", or "10.0.0.1:5353",
    "[fd00::1]:5353" when the port is not 53 (systemd 246 and later)."""
    ip = ipaddress.ip_address(address)
    if port == DNS_PORT:
        return str(ip)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def resolved_commands(interface: str, servers: Iterable[str], zone: str) -> list[list[str]]:
    """``resolvectl`` arguments that route ZONE's names to `servers` (resolved_server's
    text) on `interface` and nothing else there, with ZONE a search domain (short names;
    resolvectl(1): a domain without "~" both routes and is searched)."""
    return [["dns", interface, *servers],
            ["domain", interface, zone_text(zone)],
            ["default-route", interface, "false"]]


def resolved_revert(interface: str) -> list[str]:
    """``resolvectl`` arguments that undo resolved_commands."""
    return ["revert", interface]
