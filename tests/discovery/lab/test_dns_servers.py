"""Real authoritative DNS for the directory (discovery.lab.dns_servers, configs/dns): a BIND 9
primary, a Knot secondary and a BIND secondary in namespaces, run from the example configs.

A TSIG-signed RFC 2136 update (dnspython, key read by discovery.dnssd.tsig_file) reaches
both secondaries through signed NOTIFY and IXFR; an unsigned update is REFUSED and a wrong
secret BADSIG; an unsigned query or AXFR from outside the members is refused by every
server (dig); after kill -9 of the primary the secondaries keep answering, and a restart
replays the journal and takes updates again. One lab for the whole module."""

from __future__ import annotations

import json

import pytest

from discovery.lab.dns_servers import (BindPrimary, BindSecondary, DnsKeys, KnotSecondary,
                                       dig, dig_status, unavailable_reason)
from discovery.lab.netns import Bridge, Cleanup, Namespace, poll
from tests.conftest import require_netns

pytestmark = pytest.mark.netns

ZONE = "mesh.test"
PRIMARY, KNOT, BIND2 = "10.53.0.1", "10.53.0.2", "10.53.0.3"
MEMBER, OUTSIDER = "10.53.0.10", "10.53.0.99"
# Runs in a namespace: send one update adding NAME A ADDRESS (mode signed, unsigned or
# wrong: the update key's name with another secret), then wait for NAME at each watched
# secondary; prints {"result": rcode or BADSIG, "delays": {server: seconds}}.
UPDATE = """
import json, sys, time
import dns.message, dns.query, dns.rcode, dns.rdatatype, dns.tsig, dns.update
from discovery.dnssd.tsig_file import TsigKey, read_tsig_key
mode, key_file, server, port, zone, name, address, *watch = sys.argv[1:]
key = read_tsig_key(key_file)
if mode == "wrong":
    key = TsigKey(key.name, key.algorithm, bytes(32))
update = dns.update.UpdateMessage(zone, keyring=None if mode == "unsigned" else key.keyring())
update.add(name, 60, "A", address)
try:
    reply = dns.query.tcp(update, server, port=int(port), timeout=10)
    result = dns.rcode.to_text(reply.rcode())
except dns.tsig.PeerBadSignature:
    result = "BADSIG"
sent = time.monotonic()
delays = {}
fqdn = f"{name}.{zone}."
for target in watch:
    host, target_port = target.rsplit(":", 1)
    while time.monotonic() < sent + 60:
        try:
            answer = dns.query.udp(dns.message.make_query(fqdn, "A"), host,
                                   port=int(target_port), timeout=1)
            if any(rr.address == address for rrset in answer.answer for rr in rrset):
                delays[target] = round(time.monotonic() - sent, 3)
                break
        except Exception:
            pass
        time.sleep(0.01)
print(json.dumps({"result": result, "delays": delays}))
"""


class DnsLab:
    def __init__(self, cleanup: Cleanup):
        switch = Namespace(cleanup, "dnssw")
        bridge = Bridge(switch)
        self.ns = {}
        for tag, address in (("pri", PRIMARY), ("knot", KNOT), ("bsec", BIND2),
                             ("member", MEMBER), ("out", OUTSIDER)):
            self.ns[tag] = Namespace(cleanup, tag)
            bridge.attach(self.ns[tag], f"{address}/24")
        self.keys = DnsKeys.generate(cleanup)
        self.primary = BindPrimary(self.ns["pri"], PRIMARY, ZONE, self.keys,
                                   secondaries=[(KNOT, 53), (BIND2, 53)],
                                   members=[f"{MEMBER}/32"])
        self.knot = KnotSecondary(self.ns["knot"], KNOT, self.primary)
        self.bind2 = BindSecondary(self.ns["bsec"], BIND2, self.primary)
        self.servers = (self.primary, self.knot, self.bind2)

    def update(self, name: str, address: str, mode: str = "signed",
               watch: tuple = ()) -> dict:
        """Send an update from the member namespace; wait for it at ``watch`` servers."""
        out = self.ns["member"].run_python(
            UPDATE, mode, self.keys.update, PRIMARY, 53, ZONE, name, address,
            *[f"{server.address}:{server.port}" for server in watch], timeout=90)
        return json.loads(out.stdout)

    def dig(self, tag: str, server, name: str = ZONE, rdtype: str = "SOA", **kwargs):
        """``dig`` from the member's or the outsider's namespace to ``server``."""
        return dig(self.ns[tag], server.address, server.port, name, rdtype, **kwargs)


@pytest.fixture(scope="module")
def dns_lab():
    require_netns()
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        yield DnsLab(cleanup)


def answers(lab: DnsLab, server, name: str, address: str) -> bool:
    result = lab.dig("member", server, f"{name}.{ZONE}", "A")
    return dig_status(result) == "NOERROR" and address in result.stdout


def soa_records(dig_output: str) -> int:
    """How many SOA records dig printed (an AXFR starts and ends with one)."""
    return sum(1 for line in dig_output.splitlines()
               if not line.startswith(";") and line.split()[3:4] == ["SOA"])


def test_signed_update_reaches_knot_and_bind_secondaries(dns_lab) -> None:
    before = dns_lab.primary.serial()
    reply = dns_lab.update("laptop", "100.64.0.7", watch=(dns_lab.knot, dns_lab.bind2))
    assert reply["result"] == "NOERROR"
    # Both secondaries got it (the script waited up to 60 s for each); the delays are
    # printed for the record, not asserted.
    assert set(reply["delays"]) == {f"{KNOT}:53", f"{BIND2}:53"}, reply
    print(f"update -> secondary delays (s): {reply['delays']}")
    assert dns_lab.primary.serial() > before
    for server in dns_lab.servers:
        assert answers(dns_lab, server, "laptop", "100.64.0.7"), server.log()
    # incremental transfers (RFC 1995), signed, to each secondary
    transfers = [line for line in dns_lab.primary.log(tail=10**6).splitlines()
                 if "IXFR started: TSIG meshwg-transfer" in line and "AXFR-style" not in line]
    for secondary in (KNOT, BIND2):
        assert any(f"{secondary}#" in line for line in transfers), dns_lab.primary.log()


def test_unsigned_update_is_refused_and_wrong_secret_is_badsig(dns_lab) -> None:
    before = dns_lab.primary.serial()
    assert dns_lab.update("intruder", "100.64.0.66", mode="unsigned")["result"] == "REFUSED"
    assert dns_lab.update("forger", "100.64.0.67", mode="wrong")["result"] == "BADSIG"
    assert dns_lab.primary.serial() == before
    for name in ("intruder", "forger"):
        assert dig_status(dns_lab.dig("member", dns_lab.primary, f"{name}.{ZONE}", "A")) \
            == "NXDOMAIN"


def test_unsigned_query_and_transfer_from_outside_are_refused(dns_lab) -> None:
    lab = dns_lab
    # members (by address) may ask every server ...
    for server in lab.servers:
        assert dig_status(lab.dig("member", server)) == "NOERROR", server.log()
    # ... outsiders may not: BIND answers REFUSED, Knot NOTAUTH (mod-queryacl)
    assert dig_status(lab.dig("out", lab.primary)) == "REFUSED"
    assert dig_status(lab.dig("out", lab.bind2)) == "REFUSED"
    assert dig_status(lab.dig("out", lab.knot)) == "NOTAUTH"
    # BIND also answers queries signed with the read key, wherever they come from
    for server in (lab.primary, lab.bind2):
        signed = lab.dig("out", server, key_file=lab.keys.read)
        assert dig_status(signed) == "NOERROR", signed.stdout
    # transfers need the transfer key, even from a member's address
    for tag in ("out", "member"):
        for server in lab.servers:
            axfr = lab.dig(tag, server, rdtype="AXFR")
            assert "Transfer failed." in axfr.stdout and soa_records(axfr.stdout) == 0, \
                (tag, server, axfr.stdout)
    signed = lab.dig("out", lab.primary, rdtype="AXFR", key_file=lab.keys.transfer)
    assert soa_records(signed.stdout) == 2, signed.stdout     # the first and last record


def test_secondaries_outlive_the_primary_and_restart_replays_the_journal(dns_lab) -> None:
    lab = dns_lab
    reply = lab.update("before-crash", "100.64.0.8", watch=(lab.knot, lab.bind2))
    assert reply["result"] == "NOERROR" and len(reply["delays"]) == 2, reply
    serial = lab.primary.serial()
    assert lab.primary.journal.exists()
    lab.primary.kill()
    for server in (lab.knot, lab.bind2):
        assert answers(lab, server, "before-crash", "100.64.0.8"), server.log()
        assert server.serial() == serial
    lab.primary.start()
    # the journal was replayed: the updates are there, under the same serial
    assert answers(lab, lab.primary, "before-crash", "100.64.0.8"), lab.primary.log()
    assert lab.primary.serial() == serial
    reply = lab.update("after-restart", "100.64.0.9", watch=(lab.knot, lab.bind2))
    assert reply["result"] == "NOERROR" and len(reply["delays"]) == 2, reply
    print(f"after restart, update -> secondary delays (s): {reply['delays']}")
    poll(lambda: all(s.serial() == lab.primary.serial() for s in lab.servers), 30,
         "the secondaries to reach the primary's serial")
    serial = lab.primary.serial()
    lab.primary.restart()                       # SIGTERM and start: the same again
    assert lab.primary.serial() == serial
    assert answers(lab, lab.primary, "after-restart", "100.64.0.9"), lab.primary.log()
