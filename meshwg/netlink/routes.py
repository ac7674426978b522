"""Routes through one interface added and deleted in batches: hundreds of netlink
requests per system call, the kernel's answer to each read back in bulk (a route per
call costs ~0.4 ms in pyroute2; 100,000 allowed IPs took 40 s that way).

pyroute2 encodes one request per (operation, family) as a template; each route is that
template with its sequence number, prefix length and destination written in. Every
request asks for an acknowledgement, so each route's outcome is known (added, already
there, refused with the kernel's reason); at most CHUNK requests are in flight, so the
acknowledgements fit the socket's receive buffer.

    result = change_routes("wg0", add=[ip_network("10.0.0.0/24")], delete=[...])
    result.added, result.deleted, result.exists, result.failed

With skip_covered (what `meshwg up` does in the main table), a prefix that a route through
the interface covers already (its own address route, or a wider allowed IP routed
before) is not added, as wg-quick's add_route: `[[ -n $(ip route show dev IFACE match
PREFIX) ]] || ip route add PREFIX dev IFACE`. One route dump per IP version finds them
(read here in bulk, as the acknowledgements are).

Used by the device's route worker (meshwg.device.routes); anything else that routes
allowed IPs through an interface (wg-quick's Table = N) can call change_routes with its
table.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pyroute2.netlink import (NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
                              NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR)
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from meshwg.netlink.link import NetconfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TABLE_MAIN = 254            # RT_TABLE_MAIN
RTPROT_BOOT = 3             # what `ip route add` sets
RT_SCOPE_LINK = 253         # a route through a device without a gateway
RT_SCOPE_NOWHERE = 255      # in a delete: any scope
RTN_UNICAST = 1
CHUNK = 256                 # requests per send; their acknowledgements are read before more
SOCKET_BUFFER = 4 << 20     # bytes of send and receive buffer asked for (forced as root)
ANSWER_TIMEOUT = 30.0       # seconds the kernel may take to answer a chunk (else an error)
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10        # acknowledgements without a copy of the request
NLMSG_HEADER = struct.Struct("=LHHLL")     # length, type, flags, sequence, port
NLMSG_ERRNO = struct.Struct("=i")
RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, protocol,
                                        # scope, type, flags
RTATTR = struct.Struct("=HH")           # length, type
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RTM_F_CLONED = 0x200                    # a cached route, not one of the table's
_MARKERS = {4: ipaddress.ip_address("203.0.113.77"),
            6: ipaddress.ip_address("2001:db8:5eed::77:77")}


@dataclass
class RouteResult:
    """What change_routes did, by route."""
    added: list[Network] = field(default_factory=list)
    deleted: list[Network] = field(default_factory=list)
    exists: list[Network] = field(default_factory=list)      # add: the kernel has it already
    missing: list[Network] = field(default_factory=list)     # delete: it was not there
    failed: list[tuple[Network, str]] = field(default_factory=list)   # (route, reason)
    covered: list[Network] = field(default_factory=list)     # add: a route through it covers it


@dataclass(frozen=True)
class _Template:
    data: bytes
    dst_offset: int


def _template(kind: int, version: int, oif: int, table: int) -> _Template:
    """One request of `kind` for a route of IP `version` through `oif`, encoded by
    pyroute2 with a marker destination whose offset is found in the bytes."""
    msg = rtmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | (
        NLM_F_CREATE | NLM_F_EXCL if kind == RTM_NEWROUTE else 0)
    msg["family"] = socket.AF_INET6 if version == 6 else socket.AF_INET
    msg["dst_len"] = 0
    msg["table"] = table if table < 256 else 252     # RT_TABLE_COMPAT; RTA_TABLE rules
    if kind == RTM_NEWROUTE:
        msg["proto"], msg["scope"], msg["type"] = RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST
    else:
        msg["scope"] = RT_SCOPE_NOWHERE
    marker = _MARKERS[version]
    msg["attrs"] = [("RTA_TABLE", table), ("RTA_DST", str(marker)), ("RTA_OIF", oif)]
    msg.encode()
    data = bytes(msg.data)
    offset = data.find(marker.packed)
    if offset < 0 or data.find(marker.packed, offset + 1) >= 0:
        raise NetconfigError("cannot build a route request (unexpected netlink layout)")
    return _Template(data, offset)


class _Socket:
    """A NETLINK_ROUTE socket of our own (the kernel assigns the port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.settimeout(ANSWER_TIMEOUT)
            self.sock.bind((0, 0))
            for forced, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def messages(self):
        """The netlink messages of one datagram received: (type, sequence, data, start of
        the body, end) each."""
        data = self.sock.recv(1 << 20)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _flags, seq, _port = NLMSG_HEADER.unpack_from(data, offset)
            if length < NLMSG_HEADER.size:
                break
            yield kind, seq, data, offset + NLMSG_HEADER.size, offset + length
            offset += (length + 3) & ~3

    def exchange(self, batch: bytes, sequences: range) -> dict[int, int]:
        """Send `batch` (requests numbered `sequences`) and read every acknowledgement:
        {sequence: errno (0 = done)}."""
        self.sock.send(batch)
        answers: dict[int, int] = {}
        while len(answers) < len(sequences):
            for kind, seq, data, at, _end in self.messages():
                if kind == NLMSG_ERROR and seq in sequences:
                    answers[seq] = -NLMSG_ERRNO.unpack_from(data, at)[0]
                elif kind == NLMSG_DONE and seq in sequences:
                    answers.setdefault(seq, 0)
        return answers

    def dump_routes(self, version: int, sequence: int) -> list[tuple[int, int, int, int]]:
        """Every route of IP `version` (`ip route show table all`): (table, oif,
        prefix length, destination as an int) each; cached routes left out."""
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        self.sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_GETROUTE,
                                         NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body)
        size = 16 if version == 6 else 4
        out = []
        while True:
            for kind, seq, data, at, end in self.messages():
                if seq != sequence:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -NLMSG_ERRNO.unpack_from(data, at)[0]
                    raise OSError(code, os.strerror(code))
                if kind != RTM_NEWROUTE or at + RTMSG.size > end:
                    continue
                _fam, dst_len, _src, _tos, table, _proto, _scope, _type, flags = \
                    RTMSG.unpack_from(data, at)
                if flags & RTM_F_CLONED:
                    continue
                oif = dst = 0
                at += RTMSG.size
                while at + RTATTR.size <= end:
                    alen, atype = RTATTR.unpack_from(data, at)
                    if alen < RTATTR.size:
                        break
                    value = at + RTATTR.size
                    if atype == RTA_OIF and alen >= 8:
                        oif = struct.unpack_from("=I", data, value)[0]
                    elif atype == RTA_TABLE and alen >= 8:
                        table = struct.unpack_from("=I", data, value)[0]
                    elif atype == RTA_DST and alen >= RTATTR.size + size:
                        dst = int.from_bytes(data[value:value + size], "big")
                    at += (alen + 3) & ~3
                out.append((table, oif, dst_len, dst))


def interface_index(name: str) -> int:
    """The interface's index; NetconfigError when there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise NetconfigError(f"interface {name} not found") from None


def _uncovered(nl: _Socket, oif: int, table: int, add: list[Network],
               deleting: list[Network]) -> tuple[list[Network], list[Network]]:
    """(`add` without what a route of `table` through `oif` covers, those covered):
    wg-quick's `ip route show dev IFACE match PREFIX`, a route about to be deleted not
    counting."""
    gone = {(n.version, n.prefixlen, int(n.network_address)) for n in deleting}
    keep, covered = [], []
    for version in sorted({n.version for n in add}):
        bits = 128 if version == 6 else 32
        routes = {(version, length, dst) for t, o, length, dst in nl.dump_routes(version, 1)
                  if t == table and o == oif} - gone
        lengths = sorted({length for _v, length, _d in routes})
        for net in (n for n in add if n.version == version):
            address = int(net.network_address)
            if any(length <= net.prefixlen and (version, length, address >> (bits - length)
                                                << (bits - length)) in routes
                   for length in lengths):
                covered.append(net)
            else:
                keep.append(net)
    return sorted(keep, key=lambda n: (-n.prefixlen, n.version)), covered


def change_routes(name: str, add: Iterable = (), delete: Iterable = (), *,
                  table: int = TABLE_MAIN, skip_covered: bool = False,
                  stop: Callable[[], bool] | None = None) -> RouteResult:
    """Delete then add routes `NET dev NAME [table TABLE]` (networks or CIDR strings; /0
    is left to the caller's policy routing and skipped), CHUNK requests per system call,
    most specific first. `skip_covered`: a prefix a route of TABLE through NAME covers
    (that route's prefix holds it; routes being deleted do not count) is not added but
    listed as `covered`, as wg-quick does. Returns each route's outcome; stops between
    chunks once `stop()` is true (what was not sent is in no list). NetconfigError when
    the interface is gone or netlink cannot be used."""
    oif = interface_index(name)
    result = RouteResult()
    deletes, adds = _networks(delete), _networks(add)
    if not deletes and not adds:
        return result
    templates: dict[tuple[int, int], _Template] = {}
    try:
        nl = _Socket()
    except OSError as exc:
        raise NetconfigError(f"routes via {name}: netlink: {exc.strerror or exc}") from None
    sequence = 1            # 1: the dumps'
    try:
        if skip_covered and adds:
            try:
                adds, result.covered = _uncovered(nl, oif, table, adds, deletes)
            except OSError as exc:
                raise NetconfigError(f"routes via {name}: netlink: {exc.strerror or exc}") from None
        jobs = [(RTM_DELROUTE, net) for net in deletes] + [(RTM_NEWROUTE, net) for net in adds]
        for start in range(0, len(jobs), CHUNK):
            if stop is not None and stop():
                break
            chunk = jobs[start:start + CHUNK]
            batch = bytearray()
            first = sequence + 1
            for kind, net in chunk:
                template = templates.get((kind, net.version))
                if template is None:
                    template = templates[(kind, net.version)] = _template(
                        kind, net.version, oif, table)
                sequence += 1
                at = len(batch)
                batch += template.data
                struct.pack_into("=L", batch, at + 8, sequence)
                batch[at + 17] = net.prefixlen
                packed = net.network_address.packed
                batch[at + template.dst_offset:at + template.dst_offset + len(packed)] = packed
            try:
                answers = nl.exchange(bytes(batch), range(first, sequence + 1))
            except OSError as exc:
                raise NetconfigError(f"routes via {name}: netlink: {exc.strerror or exc}") from None
            for seq, (kind, net) in enumerate(chunk, first):
                code = answers.get(seq, errno.EIO)
                if kind == RTM_NEWROUTE:
                    if code == 0:
                        result.added.append(net)
                    elif code == errno.EEXIST:
                        result.exists.append(net)
                    else:
                        result.failed.append((net, os.strerror(code)))
                elif code == 0:
                    result.deleted.append(net)
                elif code in (errno.ESRCH, errno.ENOENT):
                    result.missing.append(net)
                else:
                    result.failed.append((net, os.strerror(code)))
    finally:
        nl.close()
    return result


def _networks(items: Iterable) -> list[Network]:
    """Distinct networks (host bits cleared), /0 left out, most specific first."""
    nets = {n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
            else ipaddress.ip_network(n, strict=False) for n in items}
    return sorted((n for n in nets if n.prefixlen), key=lambda n: (-n.prefixlen, n.version))
