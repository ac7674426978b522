"""What `meshwg up` needs from the routing tables beyond the interface's own routes, as
wg-quick does it (wireguard-tools src/wg-quick/linux.bash), through pyroute2 (netlink):

- the MTU towards an address (set_mtu_up: the route's `mtu`, else its device's MTU) and
  the default route's,
- routes in another table (`Table = N`) and the default-route policy (add_default: an
  unused table T from 51820 up, the engine's UDP socket marked T, rules
  `not fwmark T lookup T` and `lookup main suppress_prefixlength 0`, the /0 route in T),
- routes elsewhere that would collide with one of the interface's (wg-quick then fails),
- the interface's addresses (for SaveConfig).

Routes go in batches (meshwg.netlink.routes), rules one netlink call each; errors the kernel
gives are NetconfigError (one line).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Iterable, NoReturn

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshwg.netlink.link import NetconfigError
from meshwg.netlink.routes import RTPROT_BOOT, TABLE_MAIN, change_routes, interface_index

FIRST_POLICY_TABLE = 51820   # wg-quick's first choice for the default route's table
FR_INVERT = 0x2              # FIB_RULE_INVERT: the rule's `not`
LOWEST_RULE_PRIORITY = 32766  # the main table's default rule
DEFAULT_METRIC = {4: 0, 6: 1024}   # a route added without a metric (IPv6: IP6_RT_PRIO_USER)


def _family(net) -> int:
    return socket.AF_INET6 if net.version == 6 else socket.AF_INET


def _reason(exc: NetlinkError) -> str:
    return exc.args[1] if len(exc.args) > 1 else str(exc)


def _mtu_of(ipr: IPRoute, route) -> int | None:
    """The route's own `mtu` metric, else the MTU of the device it leaves through."""
    metrics = route.get_attr("RTA_METRICS")
    if metrics is not None:
        mtu = metrics.get_attr("RTAX_MTU")
        if mtu:
            return mtu
    oif = route.get_attr("RTA_OIF")
    if not oif:
        return None
    try:
        links = ipr.get_links(oif)
    except NetlinkError:
        return None
    return links[0].get_attr("IFLA_MTU") if links else None


def route_mtu(address: str) -> int | None:
    """MTU of the path the kernel would take to `address` (`ip route get`; a cached path
    MTU counts), None when there is no route."""
    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=str(ipaddress.ip_address(address.split("%")[0])))
            return _mtu_of(ipr, routes[0]) if routes else None
    except (NetlinkError, ValueError, IndexError):
        return None


def default_route_mtu() -> int | None:
    """MTU of the first IPv4 default route of the main table (`ip route show default`)."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET, table=TABLE_MAIN):
            return _mtu_of(ipr, route)
    return None


def table_is_empty(table: int) -> bool:
    with IPRoute() as ipr:
        return not any(ipr.route("dump", table=table, family=family)
                       for family in (socket.AF_INET, socket.AF_INET6))


def tables_in_rules() -> set[int]:
    """The tables some IPv4 or IPv6 rule looks up."""
    with IPRoute() as ipr:
        return {_rule_table(rule) for family in (socket.AF_INET, socket.AF_INET6)
                for rule in ipr.get_rules(family=family)}


def free_table(start: int = FIRST_POLICY_TABLE) -> int:
    """The first table from `start` up that holds no IPv4 or IPv6 route (wg-quick's
    choice) and that no rule looks up: the rules a killed `meshwg up` left name a table
    its interface emptied when it went, and removing them later must not take another
    interface's rules with them."""
    ruled = tables_in_rules()
    table = start
    while table in ruled or not table_is_empty(table):
        table += 1
    return table


def add_routes_to_table(name: str, networks: Iterable, table: int) -> list:
    """`ip route add NET dev NAME table TABLE` for each network, most specific first (in
    batches: meshwg.netlink.routes.change_routes; /0 last, on its own); returns those
    added. A route that exists already, or any other refusal, is a NetconfigError naming
    it (wg-quick's `ip route add` fails there too)."""
    nets = sorted({ipaddress.ip_network(n, strict=False) for n in networks},
                  key=lambda n: -n.prefixlen)
    result = change_routes(name, add=[n for n in nets if n.prefixlen], table=table)
    refused = [(n, os.strerror(errno.EEXIST)) for n in result.exists] + result.failed
    if refused:
        _refused(name, table, *refused[0])
    added = list(result.added)
    oif = interface_index(name)
    with IPRoute() as ipr:
        for net in (n for n in nets if not n.prefixlen):
            try:
                ipr.route("add", dst=str(net.network_address), dst_len=0, oif=oif, table=table,
                          family=_family(net), proto=RTPROT_BOOT)
            except NetlinkError as exc:
                _refused(name, table, net, _reason(exc), exc.code)
            added.append(net)
    return added


def _refused(name: str, table: int, net, why: str, code: int = 0) -> NoReturn:
    if net.version == 6 and (code == errno.ENODEV or why == os.strerror(errno.ENODEV)):
        why += " (IPv6 needs an MTU of at least 1280; this interface has less)"
    raise NetconfigError(f"route {net} dev {name} table {table}: {why}")


@dataclass(frozen=True)
class PolicyRule:
    """One rule added for the default route (so it can be removed exactly)."""
    family: int
    priority: int
    table: int
    fwmark: int = 0            # with FR_INVERT: `not fwmark`
    suppress_prefixlength: int | None = None

    def netlink_args(self) -> dict:
        args = {"family": self.family, "priority": self.priority, "table": self.table}
        if self.fwmark:
            args.update(fwmark=self.fwmark, fwmask=0xFFFFFFFF, flags=FR_INVERT)
        if self.suppress_prefixlength is not None:
            args["suppress_prefixlen"] = self.suppress_prefixlength
        return args


def _next_priority(ipr: IPRoute, family: int) -> int:
    """The priority `ip rule add` picks without one: just before the first rule after
    the local table's (priority 0)."""
    used = sorted(r.get_attr("FRA_PRIORITY") or 0 for r in ipr.get_rules(family=family))
    after_local = [p for p in used if p > 0]
    return (after_local[0] if after_local else LOWEST_RULE_PRIORITY + 1) - 1


def add_default_route_policy(name: str, network, table: int) -> list[PolicyRule]:
    """wg-quick's add_default for one family: `not fwmark TABLE lookup TABLE`, then
    `lookup main suppress_prefixlength 0` (so it is read first), then the /0 route in
    TABLE. The engine's own UDP socket must carry fwmark TABLE (its packets then skip
    TABLE and follow main's default route). Returns the rules added, for removal; on a
    failure what was added is removed again."""
    net = ipaddress.ip_network(network, strict=False)
    family = _family(net)
    added: list[PolicyRule] = []
    try:
        with IPRoute() as ipr:
            for rule in (dict(table=table, fwmark=table), dict(table=TABLE_MAIN, suppress_prefixlength=0)):
                policy = PolicyRule(family=family, priority=_next_priority(ipr, family), **rule)
                try:
                    ipr.rule("add", **policy.netlink_args())
                except NetlinkError as exc:
                    raise NetconfigError(f"rule for the default route of {name}: {_reason(exc)}") from None
                added.append(policy)
        add_routes_to_table(name, [net], table)
    except BaseException:
        delete_policy_rules(added)
        raise
    return added


def delete_policy_rules(rules: Iterable[PolicyRule]) -> None:
    """Remove rules added by add_default_route_policy (gone already: fine)."""
    with IPRoute() as ipr:
        for rule in rules:
            try:
                ipr.rule("del", **rule.netlink_args())
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ESRCH):
                    raise NetconfigError(f"removing rule {rule}: {_reason(exc)}") from None


def _rule_table(rule) -> int:
    return rule.get_attr("FRA_TABLE") or rule["table"]


def _is_policy(rule) -> bool:
    """`not fwmark T lookup T`: a default-route policy of wg-quick's kind (any T)."""
    table = _rule_table(rule)
    return bool(rule["flags"] & FR_INVERT) and rule.get_attr("FRA_FWMARK") == table


def _is_suppress(rule) -> bool:
    """`lookup main suppress_prefixlength 0`."""
    return _rule_table(rule) == TABLE_MAIN and rule.get_attr("FRA_SUPPRESS_PREFIXLEN") == 0


def _describe_rule(rule) -> str:
    version = 6 if rule["family"] == socket.AF_INET6 else 4
    what = ("lookup main suppress_prefixlength 0" if _is_suppress(rule) else
            f"{'not ' if rule['flags'] & FR_INVERT else ''}"
            f"{'fwmark %#x ' % rule.get_attr('FRA_FWMARK') if rule.get_attr('FRA_FWMARK') else ''}"
            f"lookup {_rule_table(rule)}")
    return f"IPv{version} rule {rule.get_attr('FRA_PRIORITY') or 0}: {what}"


RESERVED_TABLES = (0, 253, TABLE_MAIN, 255)   # unspec, default, main, local: never cleared
MAX_RULE_ROUNDS = 64         # dumps of the rules before delete_default_route_policy gives up


def delete_default_route_policy(table: int) -> list[str]:
    """wg-quick's del_if for a default route, IPv4 and IPv6: every rule that looks up
    `table` (its `ip rule delete table T` until `ip rule show` has none), then the
    `lookup main suppress_prefixlength 0` rules beyond the number other default-route
    policies still need (one per other `not fwmark X lookup X` table; wg-quick deletes
    them all, which breaks another tunnel's exit route). Rules left by a killed
    `meshwg up` and duplicates go too; idempotent. Returns each rule deleted, as
    "IPv4 rule 32765: not fwmark 0xca6c lookup 51820"."""
    deleted: list[str] = []
    if table in RESERVED_TABLES:
        return deleted
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for _ in range(MAX_RULE_ROUNDS):
                rules = list(ipr.get_rules(family=family))
                others = {_rule_table(r) for r in rules if _is_policy(r) and _rule_table(r) != table}
                suppress = [r for r in rules if _is_suppress(r)]
                doomed = [r for r in rules if _rule_table(r) == table and not _is_suppress(r)]
                doomed += suppress[:max(0, len(suppress) - len(others))]
                if not doomed:
                    break
                for rule in doomed:
                    args = {"family": family, "priority": rule.get_attr("FRA_PRIORITY") or 0,
                            "table": _rule_table(rule)}
                    if _is_suppress(rule):
                        args["suppress_prefixlen"] = 0
                    try:
                        ipr.rule("del", **args)
                    except NetlinkError as exc:
                        if exc.code not in (errno.ENOENT, errno.ESRCH):
                            raise NetconfigError(f"removing {_describe_rule(rule)}: "
                                                 f"{_reason(exc)}") from None
                        continue
                    deleted.append(_describe_rule(rule))
            else:
                raise NetconfigError(f"rules for table {table} still there after "
                                     f"{MAX_RULE_ROUNDS} rounds of deleting them")
    return deleted


def colliding_routes(name: str, networks: Iterable, table: int = TABLE_MAIN) -> dict:
    """{network: device name} for each network that already has a route of the same
    prefix and the metric ours would get (IPv4 0, IPv6 1024) in `table` through another
    device: adding ours would fail with EEXIST, which makes wg-quick give up."""
    out = {}
    with IPRoute() as ipr:
        own = ipr.link_lookup(ifname=name)
        for net in (ipaddress.ip_network(n, strict=False) for n in networks):
            if net.prefixlen == 0:
                continue
            for route in ipr.route("dump", family=_family(net), table=table,
                                   dst=str(net.network_address), dst_len=net.prefixlen):
                if route["dst_len"] != net.prefixlen or route["type"] != 1 \
                        or (route.get_attr("RTA_PRIORITY") or 0) != DEFAULT_METRIC[net.version]:
                    continue
                oif = route.get_attr("RTA_OIF")
                if oif and oif in own:
                    continue
                links = ipr.get_links(oif) if oif else []
                out[net] = links[0].get_attr("IFLA_IFNAME") if links else "another route"
                break
    return out


def interface_addresses(name: str) -> list:
    """The interface's addresses as ip_interface values, IPv4 first (`ip -brief address`
    without IPv6 link-local ones)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return []
        out = [ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
               for a in ipr.get_addr(index=found[0])]
    return sorted((a for a in out if not a.is_link_local), key=lambda a: a.version)


def set_src_valid_mark() -> None:
    """net.ipv4.conf.all.src_valid_mark = 1 (wg-quick sets it for an IPv4 default route:
    reverse-path checks then see the fwmark)."""
    path = "/proc/sys/net/ipv4/conf/all/src_valid_mark"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return
        with open(path, "w") as f:
            f.write("1\n")
    except OSError as exc:
        raise NetconfigError(f"{path}: {exc.strerror or exc}") from None
