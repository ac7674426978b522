"""The directory on real DNS at scale (issue 10): N members' wgsd-layout directory published
into a BIND 9 primary by TSIG-signed RFC 2136 updates (discovery.stores.zone_membership.
DirectoryPublisher, minimal diff, bounded messages), then the whole zone transferred from a
Knot secondary (AXFR signed with the transfer key, discovery.dnssd.update.ZoneWriter.read),
and the enrollment rate of ZoneMembership.add_member at a given zone size.

Each run builds its own lab (discovery.lab.dns_servers from configs/dns, in namespaces) and
removes it. Per run: publish time and rate (records and update messages per second), the
time until Knot serves the primary's serial, the full-zone fetch time from Knot, and the
time of E enrollments. Not run in CI; on a loaded machine the figures are lower bounds.

configs/dns gives BIND ``max-records-per-type 0;`` (9.18.28 and later refuse more than 100
records of one type at one name by default, which would stop the service's PTR set at 100
members; the publisher bounds that set to 64 KiB anyway: DirectoryPublisher docstring).
Re-publishing is timed three ways: nothing changed (the publisher kept what it wrote per
member and the zone's serial is the one it left: one SOA query), one member moved (that
member written), and nothing changed by a new publisher (the zone read and diffed whole).
With --dnsperf S, dnsperf then queries the Knot secondary for S seconds from a member's
address (SRV of random members' instances): queries per second a secondary answers.
Then one member moves and a rendezvous reading at Knot sees it: the zone read again by IXFR
from its last read (ZoneWriter.read_since) and by AXFR, both parsed (membership and
directory records), and the rendezvous's ZoneState with its reader worker: when it saw the
move, and the longest gap of a main-loop stand-in calling refresh() and members() meanwhile.

Run as root:  .venv/bin/python bench/dns_directory.py [--members 10000] [--runs 3]
              [--enroll 20] [--dnsperf 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from discovery.lab.dns_servers import BindPrimary, DnsKeys, KnotSecondary, unavailable_reason
from discovery.lab.netns import Bridge, Cleanup, Namespace, measure_in_lab, poll

ZONE = "mesh.bench"
PRIMARY, KNOT, WRITER = "10.55.0.1", "10.55.0.2", "10.55.0.10"

# Runs in the writer's namespace: prints one JSON object.
SCRIPT = """
import json, sys, time
from meshwg.core import crypto
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.tsig_file import read_tsig_key
from discovery.dnssd.update import ZoneWriter
from discovery.stores.zone_membership import DirectoryPublisher, ZoneMembership
op, update_file, transfer_file, server, zone, count = sys.argv[1:]
count = int(count)
server, _, primary = server.partition(",")      # reread: "READ_SERVER,PRIMARY"
def member(i):
    return MemberRecord(bytes([i % 256, i // 256 % 256]) + bytes(30),
                        (f"198.51.{i // 250 % 250}.{i % 250 + 1}", 40000 + i % 20000),
                        [f"100.96.{i // 250}.{i % 250 + 1}/32"], name=f"m{i}",
                        mesh_address=f"100.96.{i // 250}.{i % 250 + 1}")
writer = ZoneWriter(server, zone, read_tsig_key(update_file), timeout=60,
                    read_key=read_tsig_key(transfer_file), max_transfer_time=600)
out = {}
if op == "publish":
    records = [member(i) for i in range(count)]
    publisher = DirectoryPublisher(writer)
    started = time.monotonic()
    changed = publisher.publish(records)
    out = {"seconds": time.monotonic() - started, "records": changed,
           "updates": publisher.updates_sent, "unlisted": publisher.unlisted,
           "serial": writer.serial()}
    started = time.monotonic()
    out["again"] = publisher.publish(records)
    out["noop_seconds"] = time.monotonic() - started
    records[count // 2].endpoint = ("203.0.113.1", 1)          # one member moves
    started = time.monotonic()
    out["one_change"] = publisher.publish(records)
    out["one_change_seconds"] = time.monotonic() - started
    started = time.monotonic()                                  # a fresh writer: reads the zone
    out["cold"] = DirectoryPublisher(writer).publish(records)
    out["cold_seconds"] = time.monotonic() - started
elif op == "fetch":
    started = time.monotonic()
    content = writer.read()
    out = {"seconds": time.monotonic() - started, "serial": content.serial,
           "records": sum(len(v) for v in content.records.values())}
elif op == "reread":
    # a rendezvous reading at SERVER sees one member move (written at PRIMARY): the zone
    # read again incrementally (IXFR from the last read) and whole (AXFR), and parsed
    from discovery.stores.zone_directory import zone_records
    layout = ZoneMembership(writer).layout
    def timed(action):
        started = time.monotonic()
        result = action()
        return result, time.monotonic() - started
    since, out["axfr_first"] = timed(writer.read)
    _, out["parse"] = timed(lambda: layout.parse(since))
    _, out["parse_records"] = timed(lambda: zone_records(since, zone))
    moved = member(count // 3)
    moved.endpoint = ("203.0.113.2", 2)
    changer = ZoneWriter(primary, zone, read_tsig_key(update_file), timeout=60,
                         read_key=read_tsig_key(transfer_file), max_transfer_time=600)
    DirectoryPublisher(changer).write([moved])
    target, deadline = changer.serial(), time.monotonic() + 300
    while writer.serial() != target and time.monotonic() < deadline:
        time.sleep(0.05)
    got, out["ixfr"] = timed(lambda: writer.read_since(since))
    full, out["axfr"] = timed(writer.read)
    _, out["parse_after"] = timed(lambda: (layout.parse(got), zone_records(got, zone)))
    sets = lambda c: {k: set(v) for k, v in c.records.items()}
    out.update(same=sets(got) == sets(full), applied=writer.ixfr_applied,
               fallbacks=writer.ixfr_fallbacks, serials=[since.serial, got.serial, target])
elif op == "stall":
    # the rendezvous's ZoneState with its reader (discovery.stores.zone_rendezvous) at
    # SERVER while one member moves (written at PRIMARY): a main-loop stand-in calls
    # refresh() and members() every millisecond; its longest gap, and when it saw the move
    import os, shutil, tempfile, threading
    from discovery.stores.rendezvous import RendezvousState
    from discovery.stores import zone_rendezvous as zr
    folder = tempfile.mkdtemp() + "/rdv"
    RendezvousState.init(folder, "100.96.0.0/16", "192.0.2.1:51820", zone,
                         address="100.96.255.254",
                         extra_meta={zr.META_DIRECTORY: f"dns://{server}",
                                     zr.META_TRANSFER_KEY: "1"}).close()
    for source, name in ((update_file, zr.KEY_FILE), (transfer_file, zr.TRANSFER_KEY_FILE)):
        shutil.copy(source, f"{folder}/{name}")
        os.chmod(f"{folder}/{name}", 0o600)
    zone_state = zr.ZoneState(RendezvousState.open(folder), min_interval=0.2)
    zone_state.refresh(force=True)                  # the first read, as start() does it
    woken = threading.Event()
    zone_state.start_reader(woken.set)
    moved = member(count // 5)
    moved.endpoint = ("203.0.113.3", 3)
    changer = ZoneWriter(primary, zone, read_tsig_key(update_file), timeout=60,
                         read_key=read_tsig_key(transfer_file), max_transfer_time=600)
    DirectoryPublisher(changer).write([moved])
    written = last = time.monotonic()
    gap = 0.0
    while time.monotonic() < written + 300:
        seen = zone_state.refresh()
        zone_state.members()
        now = time.monotonic()
        gap, last = max(gap, now - last), now
        record = zone_state.directory_records().get(moved.public_key)
        if seen and record is not None and record.endpoint == moved.endpoint:
            break
        time.sleep(0.001)
    out = {"seen": time.monotonic() - written, "stall_max": gap,
           "applied": zone_state._stores[0].writer.ixfr_applied}
    zone_state.close()
    shutil.rmtree(os.path.dirname(folder))
elif op == "serial":
    out = {"serial": writer.serial()}
elif op == "enroll":
    store = ZoneMembership(writer)
    try:
        store.init("100.64.0.0/16")
    except Exception:
        pass
    started = time.monotonic()
    for i in range(count):
        store.add_member(f"e{i}", crypto.public_key(crypto.generate_private_key()))
    out = {"seconds": time.monotonic() - started, "count": count}
print(json.dumps(out))
"""


def dnsperf(ns: Namespace, server: str, members: int, seconds: int) -> float:
    """Queries per second dnsperf gets from `server` (SRV of members' instances)."""
    import random
    import tempfile
    from discovery.dnssd.names import instance_label
    picks = random.Random(7).sample(range(members), min(members, 2000))
    lines = [f"{instance_label(bytes([i % 256, i // 256 % 256]) + bytes(30))}._wireguard._udp.{ZONE} SRV"
             for i in picks]
    with tempfile.NamedTemporaryFile("w", suffix=".queries", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    out = ns.run(["dnsperf", "-s", server, "-d", f.name, "-l", str(seconds), "-c", "4", "-q", "200"],
                 timeout=seconds + 60).stdout
    for line in out.splitlines():
        if "Queries per second:" in line:
            return float(line.split(":")[1])
    raise RuntimeError(f"dnsperf printed no rate: {out[-400:]}")


def one_run(members: int, enroll: int, perf_seconds: int = 0) -> dict:
    with Cleanup() as cleanup:
        bridge = Bridge(Namespace(cleanup, "dbsw"))
        ns = {}
        for tag, address in (("pri", PRIMARY), ("knot", KNOT), ("writer", WRITER)):
            ns[tag] = Namespace(cleanup, tag)
            bridge.attach(ns[tag], f"{address}/24")
        keys = DnsKeys.generate(cleanup)
        primary = BindPrimary(ns["pri"], PRIMARY, ZONE, keys, secondaries=[(KNOT, 53)],
                              members=[f"{WRITER}/32"])
        KnotSecondary(ns["knot"], KNOT, primary)

        def run(op: str, server: str, count: int) -> dict:
            out = ns["writer"].run_python(SCRIPT, op, keys.update, keys.transfer,
                                          f"{server}:53", ZONE, count, timeout=3600)
            return json.loads(out.stdout)

        published = run("publish", PRIMARY, members)
        poll(lambda: run("serial", KNOT, 0)["serial"] >= published["serial"], 600,
             "Knot to serve the primary's serial")
        fetched = run("fetch", KNOT, 0)
        reread = run("reread", f"{KNOT}:53,{PRIMARY}", members)
        reread.update(run("stall", f"{KNOT}:53,{PRIMARY}", members))
        enrolled = run("enroll", PRIMARY, enroll) if enroll else None
        qps = dnsperf(ns["writer"], KNOT, members, perf_seconds) if perf_seconds else None
        return {"publish": published, "fetch": fetched, "enroll": enrolled, "dnsperf_qps": qps,
                "reread": reread}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--enroll", type=int, default=20,
                        help="enrollments timed after the publish (0: none)")
    parser.add_argument("--dnsperf", type=int, default=10,
                        help="seconds of dnsperf against the Knot secondary (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if unavailable_reason():
        print(f"dns_directory: {unavailable_reason()}", file=sys.stderr)
        return 2
    runs = []
    for _ in range(args.runs):
        code, result = measure_in_lab("dns_directory", lambda: one_run(args.members, args.enroll, args.dnsperf))
        if code:
            return code
        runs.append(result)
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0

    def summary(values: list[float], unit: str) -> str:
        return (f"median {statistics.median(values):.2f} {unit} "
                f"(range {min(values):.2f}-{max(values):.2f}, {len(values)} runs)")

    pub = [r["publish"] for r in runs]
    print(f"{args.members} members published into BIND: "
          f"{summary([p['seconds'] for p in pub], 's')}; "
          f"{summary([p['records'] / p['seconds'] for p in pub], 'records/s')}; "
          f"{summary([p['updates'] / p['seconds'] for p in pub], 'updates/s')}; "
          f"{pub[0]['records']} records in {pub[0]['updates']} updates, "
          f"{pub[0]['unlisted']} members beyond the PTR set's 64 KiB")
    print(f"re-publish, nothing changed: {summary([p['noop_seconds'] for p in pub], 's')} "
          f"({pub[0]['again']} records written)")
    if "one_change_seconds" in pub[0]:
        print(f"re-publish, one member moved: {summary([p['one_change_seconds'] for p in pub], 's')} "
              f"({pub[0]['one_change']} members written)")
        print(f"re-publish, nothing changed, by a new publisher (reads and diffs the zone): "
              f"{summary([p['cold_seconds'] for p in pub], 's')} ({pub[0]['cold']} records written)")
    print(f"full-zone fetch (AXFR) from the Knot secondary: "
          f"{summary([r['fetch']['seconds'] for r in runs], 's')}, "
          f"{runs[0]['fetch']['records']} records")
    re = [r["reread"] for r in runs]
    assert all(r["same"] and r["applied"] == 1 for r in re), re
    print(f"a rendezvous reading at Knot sees one member move: IXFR {summary([r['ixfr'] for r in re], 's')}, "
          f"AXFR {summary([r['axfr'] for r in re], 's')}; parsing the zone (membership + directory "
          f"records) {summary([r['parse_after'] for r in re], 's')} (membership "
          f"{summary([r['parse'] for r in re], 's')}, directory records "
          f"{summary([r['parse_records'] for r in re], 's')}); IXFR applied == AXFR content")
    print(f"a rendezvous's ZoneState (reader in a worker) sees the move "
          f"{summary([r['seen'] for r in re], 's')} after the write; the longest gap of a "
          f"main-loop stand-in calling refresh()/members() every ms meanwhile: "
          f"{summary([r['stall_max'] * 1000 for r in re], 'ms')}")
    if args.enroll:
        print(f"{args.enroll} enrollments (add_member) into that zone: "
              f"{summary([r['enroll']['seconds'] / args.enroll for r in runs], 's each')}")
    if args.dnsperf:
        print(f"dnsperf against the Knot secondary ({args.dnsperf} s, SRV of members' instances): "
              f"{summary([r['dnsperf_qps'] for r in runs], 'queries/s')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
