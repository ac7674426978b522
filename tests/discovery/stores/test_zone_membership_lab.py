"""The membership and the directory in a real DNS zone (discovery.stores.zone_membership over
discovery.dnssd.update): a primary taking TSIG-signed RFC 2136 updates and a secondary
(discovery.lab.dns_servers, configs/dns), the writers in their own namespace. The module runs
twice: a BIND 9 primary with a Knot secondary, a Knot primary with a BIND 9 secondary.

Two writer processes enrolling 2 x 50 members at once (10 names wanted by both) never
share an address or a name; ten single-use invites raced by both are each redeemed once;
revocation removes every name of a member in one update; a single writer keeps its view
across its own updates (one transfer for ten enrollments); an update signed with a wrong
secret is a clean UpdateRefused; an incremental transfer (IXFR) from the primary and
from the secondary, applied to the zone read before, equals a full one; the directory diff writer converges (a second publish
changes nothing) and the secondary serves exactly its records. One lab per primary kind.
"""

from __future__ import annotations

import json

import pytest

from discovery.lab.dns_servers import (BindPrimary, BindSecondary, DnsKeys, KnotPrimary,
                                      KnotSecondary, unavailable_reason)
from discovery.lab.netns import Bridge, Cleanup, Namespace, poll
from tests.conftest import require_netns

pytestmark = pytest.mark.netns

ZONE = "mesh.test"
PRIMARY, SECONDARY, WRITER = "10.54.0.1", "10.54.0.2", "10.54.0.10"
NETWORK = "100.80.0.0/20"

# Runs in the writers' namespace: OP with JSON ARG against the zone on SERVER (HOST:PORT),
# updates signed with the update key, reads with the transfer key; prints JSON.
SCRIPT = """
import json, os, sys, time
from meshwg.core import crypto
from meshwg.core.keys import encode_key
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.tsig_file import TsigKey, read_tsig_key
from discovery.dnssd.update import ServerRefused, ZoneWriter
from discovery.stores.errors import StateError
from discovery.stores.invites import InviteRefusal
from discovery.stores.zone_membership import DirectoryPublisher, ZoneMembership
op, update_file, transfer_file, server, zone, arg = sys.argv[1:]
arg = json.loads(arg)
update_key, transfer_key = read_tsig_key(update_file), read_tsig_key(transfer_file)
writer = ZoneWriter(server, zone, update_key, timeout=20, read_key=transfer_key)
store = ZoneMembership(writer)
def key():
    return crypto.public_key(crypto.generate_private_key())
def record(i):
    k = bytes([i % 256, i // 256]) * 16
    return MemberRecord(k, (f"198.51.100.{i % 250 + 1}", 40000 + i), [f"100.80.1.{i % 250}/32"],
                        name=f"d{i}", mesh_address=f"100.80.1.{i % 250}")
out = None
if op == "init":
    out = store.init(arg).network
elif op == "enroll":
    out = []
    for name in arg:
        try:
            out.append({"name": name, "address": store.add_member(name, key()).mesh_address})
        except StateError as exc:
            out.append({"name": name, "error": getattr(exc, "what", type(exc).__name__)})
elif op == "invites":
    out = [store.create_invite().invite_id for _ in range(arg)]
elif op == "redeem":
    prefix, ids = arg
    out = []
    for n, invite_id in enumerate(ids):
        try:
            member = store.redeem_invite(invite_id, os.urandom(16), f"{prefix}{n}", key(), [],
                                         time.time())
            out.append({"invite": invite_id, "address": member.mesh_address})
        except InviteRefusal as exc:
            out.append({"invite": invite_id, "refused": exc.code})
elif op == "view":
    view = store.view()
    names = {}
    for (name, rdtype), rdatas in writer.read().records.items():
        if rdtype == 1 and len(name) == len(writer.zone) + 1:
            names[name.labels[0].decode()] = [r.address for r in rdatas]
    out = {"members": [[m.name, m.mesh_address, encode_key(m.public_key), m.invite_id]
                       for m in view.members.values()],
           "claims": {a: encode_key(k) for a, k in view.claims.items()},
           "names": names, "dropped": dict(view.dropped),
           "invites": {i: inv.uses for i, (inv, _) in view.invites.items()}}
elif op == "sequential":
    # one writer: after its own updates it keeps its view (serial S + 1) without transfers
    reads = []
    read = writer.read
    writer.read = lambda: reads.append(1) or read()
    invite = store.create_invite(reusable=True)
    for name in arg:
        store.redeem_invite(invite.invite_id, os.urandom(16), name, key(), [], time.time())
    store.remove_member(arg[0])
    cached, fresh = store.view(), store.layout.parse(read())
    out = {"reads": len(reads),
           "same": [cached.serial == fresh.serial, cached.members == fresh.members,
                    cached.claims == fresh.claims, cached.names == fresh.names,
                    cached.nonces == fresh.nonces,
                    {i: v[0] for i, v in cached.invites.items()}
                    == {i: v[0] for i, v in fresh.invites.items()}]}
elif op == "remove":
    out = store.remove_member(arg).mesh_address
elif op == "ixfr":
    # read the zone at SERVER, change it on the primary, then read it again by IXFR and AXFR
    primary, names = arg
    since = writer.read()
    changer = ZoneMembership(ZoneWriter(primary, zone, update_key, timeout=20, read_key=transfer_key))
    for name in names:
        changer.add_member(name, key())
    changer.remove_member(names[0])
    target, deadline = changer.writer.serial(), time.monotonic() + 120
    while writer.serial() != target and time.monotonic() < deadline:
        time.sleep(0.2)                 # a secondary catching up (NOTIFY, IXFR)
    got = writer.read_since(since)
    full = writer.read()
    def lines(c):
        return sorted(f"{n} {t} {r.to_text()}" for (n, t), rs in c.records.items() for r in rs)
    out = {"same": lines(got) == lines(full), "changed": lines(got) != lines(since),
           "serials": [since.serial, got.serial, full.serial, target],
           "applied": writer.ixfr_applied, "full": writer.ixfr_full,
           "fallbacks": writer.ixfr_fallbacks, "problem": writer.ixfr_problem}
elif op == "wrong":
    bad = TsigKey(update_key.name, update_key.algorithm, bytes(32))
    try:
        ZoneMembership(ZoneWriter(server, zone, bad, read_key=transfer_key)).add_member("intruder", key())
        out = "accepted"
    except ServerRefused as exc:
        out = [type(exc).__name__, exc.rcode_text, str(exc)]
elif op == "publish":
    publisher = DirectoryPublisher(writer, batch=arg[1])
    records = [record(i) for i in range(arg[0])]
    first = publisher.publish(records)
    out = [first, publisher.updates_sent, publisher.publish(records)]
elif op == "directory":
    managed = DirectoryPublisher(writer)
    out = sorted(f"{name} {rdtype} {r.to_text()}" for (name, rdtype), rdatas in writer.read().records.items()
                 if managed._managed(name, rdtype) for r in rdatas)
    out = [writer.serial(), out]
print(json.dumps(out))
"""


class ZoneLab:
    def __init__(self, cleanup: Cleanup, kind: str):
        switch = Namespace(cleanup, "zmsw")
        bridge = Bridge(switch)
        self.ns = {}
        for tag, address in (("pri", PRIMARY), ("sec", SECONDARY), ("writer", WRITER)):
            self.ns[tag] = Namespace(cleanup, tag)
            bridge.attach(self.ns[tag], f"{address}/24")
        self.keys = DnsKeys.generate(cleanup)
        self.kind = kind
        primary, secondary = {"bind": (BindPrimary, KnotSecondary),
                              "knot": (KnotPrimary, BindSecondary)}[kind]
        self.primary = primary(self.ns["pri"], PRIMARY, ZONE, self.keys,
                               secondaries=[(SECONDARY, 53)], members=[f"{WRITER}/32"])
        self.secondary = secondary(self.ns["sec"], SECONDARY, self.primary)

    def argv(self, op: str, arg: object, server: str = f"{PRIMARY}:53") -> tuple:
        return (SCRIPT, op, self.keys.update, self.keys.transfer, server, ZONE, json.dumps(arg))

    def run(self, op: str, arg: object = None, server: str = f"{PRIMARY}:53"):
        out = self.ns["writer"].run_python(*self.argv(op, arg, server), timeout=240)
        return json.loads(out.stdout)

    def race(self, op: str, first: object, second: object) -> tuple:
        """The same operation from two processes at once; their two results."""
        daemons = [self.ns["writer"].popen_python(*self.argv(op, arg), name=f"writer{n}")
                   for n, arg in enumerate((first, second))]
        for daemon in daemons:
            poll(lambda: not daemon.alive, 300, f"{daemon.name} to finish\n{daemon.output()}")
            assert daemon.returncode == 0, daemon.output()
        return tuple(json.loads(d.stdout().strip().splitlines()[-1]) for d in daemons)


@pytest.fixture(scope="module", params=["bind", "knot"])
def zone_lab(request):
    require_netns()
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        lab = ZoneLab(cleanup, request.param)
        assert lab.run("init", NETWORK) == NETWORK
        yield lab


def check_consistent(view: dict) -> None:
    """Every member has its own address, claim and name (NAME.ZONE A its address)."""
    addresses = [address for _, address, _, _ in view["members"]]
    names = [name for name, _, _, _ in view["members"]]
    assert len(set(addresses)) == len(addresses)
    assert len(set(names)) == len(names)
    for name, address, key, _ in view["members"]:
        assert view["claims"][address] == key
        assert view["names"][name] == [address]
    assert not view["dropped"], view["dropped"]


def test_two_writers_enrolling_at_once_never_share_an_address_or_a_name(zone_lab) -> None:
    shared = [f"both{i}" for i in range(10)]
    first, second = zone_lab.race("enroll", [f"a{i}" for i in range(40)] + shared,
                                  [f"b{i}" for i in range(40)] + shared)
    won = [r for r in first + second if "address" in r]
    taken = [r for r in first + second if "error" in r]
    # each shared name went to exactly one writer; the other got a clean "name taken"
    assert sorted(r["name"] for r in won) == sorted([f"a{i}" for i in range(40)]
                                                    + [f"b{i}" for i in range(40)] + shared)
    assert sorted(r["name"] for r in taken) == shared
    assert {r["error"] for r in taken} == {"name"}
    assert len({r["address"] for r in won}) == len(won) == 90
    view = zone_lab.run("view")
    assert len(view["members"]) == 90
    check_consistent(view)


def test_single_use_invites_raced_by_two_writers_are_each_redeemed_once(zone_lab) -> None:
    ids = zone_lab.run("invites", 10)
    first, second = zone_lab.race("redeem", ["x", ids], ["y", ids])
    for invite_id in ids:
        outcomes = [r for r in first + second if r["invite"] == invite_id]
        assert sorted("address" in r for r in outcomes) == [False, True], outcomes
        assert [r["refused"] for r in outcomes if "refused" in r] == ["used_up"]
    view = zone_lab.run("view")
    assert all(view["invites"][i] == 1 for i in ids)
    check_consistent(view)


def test_revocation_removes_every_name_of_the_member_and_frees_its_address(zone_lab) -> None:
    (entry,) = zone_lab.run("enroll", ["gone"])
    assert zone_lab.run("remove", "gone") == entry["address"]
    view = zone_lab.run("view")
    assert "gone" not in view["names"]
    assert entry["address"] not in view["claims"]
    assert all(name != "gone" for name, *_ in view["members"])
    check_consistent(view)
    (again,) = zone_lab.run("enroll", ["back"])     # the first free address again
    assert again["address"] == entry["address"]


def test_one_writer_keeps_its_view_after_its_own_updates(zone_lab) -> None:
    result = zone_lab.run("sequential", [f"seq{i}" for i in range(10)])
    assert result["same"] == [True] * 6
    # BIND increments the serial by one per update (its default serial-update-method)
    assert result["reads"] == 1         # one transfer for 10 enrollments and a removal


@pytest.mark.parametrize("where", [PRIMARY, SECONDARY])
def test_an_incremental_transfer_applied_equals_the_full_transfer(zone_lab, where) -> None:
    out = zone_lab.run("ixfr", [f"{PRIMARY}:53", [f"ix{where[-1]}{i}" for i in range(3)]],
                       server=f"{where}:53")
    assert out["same"] and out["changed"], out
    assert out["serials"][1:] == [out["serials"][3]] * 3, out
    # both servers answer from their journals: a delta, not the whole zone
    assert (out["applied"], out["full"], out["fallbacks"]) == (1, 0, 0), out


def test_update_with_a_wrong_secret_is_a_clean_refusal(zone_lab) -> None:
    before = zone_lab.primary.serial()
    kind, rcode, message = zone_lab.run("wrong")
    assert (kind, rcode) == ("UpdateRefused", "NOTAUTH"), message
    assert "meshwg-update" in message and "intruder" in message
    assert zone_lab.primary.serial() == before


def test_directory_diff_writer_converges_and_the_secondary_serves_the_same(zone_lab) -> None:
    # 60 members in batches of 50 records: several update messages
    changed, updates, again = zone_lab.run("publish", [60, 50])
    assert changed == 60 * 4 + 1 and updates > 4 and again == 0
    serial, on_primary = zone_lab.run("directory")
    assert len(on_primary) == 60 * 4 + 1
    # the secondary has caught up (NOTIFY, IXFR) when it serves the primary's serial
    poll(lambda: zone_lab.run("directory", server=f"{SECONDARY}:53")[0] >= serial, 60,
         "the secondary to reach the primary's serial")
    assert zone_lab.run("directory", server=f"{SECONDARY}:53")[1] == on_primary
    # a smaller directory: only the difference is sent, and it converges too
    changed, _, again = zone_lab.run("publish", [40, 400])
    assert changed == 20 * 4 and again == 0


def test_the_primary_keeps_the_directory_across_a_crash_and_takes_updates_again(zone_lab) -> None:
    # BIND replays its .jnl; Knot (journal-content: changes, zonefile-sync: -1) loads the
    # initial zone file and replays its journal. (With journal-content: all Knot reloaded
    # the bare zone file, or with zonefile-load: difference-no-serial reverted to it: the
    # directory was gone.)
    serial, before = zone_lab.run("directory")
    members = zone_lab.run("view")["members"]
    zone_lab.primary.kill()
    zone_lab.primary.start()
    assert zone_lab.run("directory") == [serial, before]
    assert zone_lab.run("view")["members"] == members
    (entry,) = zone_lab.run("enroll", ["after-crash"])
    view = zone_lab.run("view")
    assert view["names"]["after-crash"] == [entry["address"]]
    check_consistent(view)
