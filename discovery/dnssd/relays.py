"""Relays in the directory: which members offer to relay, and where. No I/O.

A member started with ``meshwg join --relay`` runs a members-only relay
(discovery.relay.server) on a UDP port of its own and reports that port to the
rendezvous (discovery.traversal.report, ``"relay": PORT``). The rendezvous publishes it as
one more key in the member's TXT record (wgsd's layout, discovery.dnssd.zone)::

    B32._wireguard._udp.ZONE  TXT  "txtvers=1" "pub=BASE64" ... "relay=PORT"

and in the member's strings of the bulk directory (discovery.dnssd.bulk). The relay
listens at the member's published endpoint address (its A/AAAA record, the address the
rendezvous observes) on PORT; its relay key (discovery.relay.wire.relay_key) is derived
from the member's WireGuard public key (``pub=``), so a member needs nothing else to
bind there. A record without ``relay=``, with a value that is no port, or without an
endpoint offers no relay (hostile values are dropped, never fatal).

The rendezvous's own relay is not in the directory: every member knows it (the
rendezvous's endpoint, port + 1, its key from the join token).
"""

from __future__ import annotations

from meshwg.util.endpoint import Endpoint

from discovery.dnssd.member import MemberRecord, check_port

RELAY_TXT_KEY = "relay"


def relay_txt(port: int) -> dict[str, str]:
    """The TXT extra field offering a relay on UDP `port` (MemberRecord.extra). Raises
    ValueError for a port outside 1..65535."""
    return {RELAY_TXT_KEY: str(check_port(port, "relay"))}


def relay_port(record: MemberRecord) -> int | None:
    """The relay port a record offers (None: none, or not a port)."""
    text = record.extra.get(RELAY_TXT_KEY, "")
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def relay_endpoint(record: MemberRecord) -> Endpoint | None:
    """Where the member's relay listens: its published endpoint's address and the
    ``relay=`` port; None when it offers none or has no endpoint."""
    port = relay_port(record)
    if port is None or record.endpoint is None:
        return None
    return record.endpoint[0], port
