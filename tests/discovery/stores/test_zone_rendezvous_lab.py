"""`meshwg rendezvous init --directory` and the membership commands on a DNS directory
(discovery.stores.zone_rendezvous), run as the real CLI in a namespace against the lab's
BIND primary and Knot secondary (discovery.lab.dns_servers, configs/dns). One lab for the
module.

Covered: the first rendezvous writes the mesh into the zone, a second one (no --network)
joins the same mesh with its own address; --network that differs, a wrong TSIG secret and
a zone the server lacks are one-line errors leaving no state; two inits at once never share
an address; an invite made at one rendezvous is listed and revoked at the other, a member
is removed at either; with the primary killed (-9) `members` reads the Knot secondary and
says the primary is not writable, removal and invites are refused in one line; once the
primary is back, removal works.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from discovery.lab.dns_servers import BindPrimary, DnsKeys, KnotSecondary, unavailable_reason
from discovery.lab.netns import Bridge, Cleanup, Namespace, poll
from tests.conftest import require_netns

pytestmark = pytest.mark.netns

ZONE = "mesh.test"
PRIMARY, KNOT, RDV = "10.55.0.1", "10.55.0.2", "10.55.0.10"
NETWORK = "100.81.0.0/24"
DIRECTORY = f"dns://{PRIMARY},dns://{KNOT}"
MESHWG = "from meshwg.cli.app import main; import sys; sys.exit(main(sys.argv[1:]))"

# Runs in the rendezvous's namespace: enrolls a member by hand into the zone of STATE.
ADD_MEMBER = """
import sys
from meshwg.core import crypto
from discovery.stores import zone_rendezvous as zr
from discovery.stores.rendezvous import RendezvousState
state, name = sys.argv[1:]
with RendezvousState.open(state) as st:
    key = crypto.public_key(crypto.generate_private_key())
    print(zr.on_primary(zr.access(st), lambda store: store.add_member(name, key)).mesh_address)
"""
# Runs in the rendezvous's namespace: removes the members NAMES from the zone of STATE.
REMOVE = """
import sys
from discovery.stores import zone_rendezvous as zr
from discovery.stores.rendezvous import RendezvousState
with RendezvousState.open(sys.argv[1]) as st:
    store = zr.access(st).membership()
    for name in sys.argv[2:]:
        store.remove_member(name)
"""

# Runs in the rendezvous's namespace: the enrollment handler of rendezvous STATE answers
# requests made with TOKEN (a token of any rendezvous of the mesh) for NAMES (comma-
# separated), one after the other; prints one outcome a line ("enrolled ADDRESS" or the
# refusal code).
ENROLL = """
import sys, time
from meshwg.core import crypto
from discovery.enroll.messages import make_request
from discovery.enroll.service import RendezvousEnrollment
from discovery.enroll.tokens import decode_token
from discovery.stores.rendezvous import RendezvousState
state, token, names = sys.argv[1:]
with RendezvousState.open(state) as st:
    core = RendezvousEnrollment(st)
    for name in names.split(","):
        key = crypto.public_key(crypto.generate_private_key())
        request = make_request(decode_token(token), key, name, [], time.time())
        core.stats.clear()
        _, member = core.handle(request.to_wire(), time.time())
        print(f"enrolled {member.mesh_address}" if member else " ".join(core.stats), flush=True)
"""


class Lab:
    def __init__(self, cleanup: Cleanup, folder: Path):
        switch = Namespace(cleanup, "zrsw")
        bridge = Bridge(switch)
        self.ns = {}
        for tag, address in (("pri", PRIMARY), ("knot", KNOT), ("rdv", RDV)):
            self.ns[tag] = Namespace(cleanup, f"zr{tag}")
            bridge.attach(self.ns[tag], f"{address}/24")
        self.keys = DnsKeys.generate(cleanup)
        self.primary = BindPrimary(self.ns["pri"], PRIMARY, ZONE, self.keys,
                                   secondaries=[(KNOT, 53)], members=[f"{RDV}/32"])
        self.knot = KnotSecondary(self.ns["knot"], KNOT, self.primary)
        self.folder = folder

    def meshwg(self, *args: str, check: bool = True):
        out = self.ns["rdv"].run_python(MESHWG, *args, timeout=120, check=False)
        if check:
            assert out.returncode == 0, out.stderr
        return out

    def init(self, name: str, *extra: str, check: bool = True, **options: str):
        opts = {"--zone": ZONE, "--directory": DIRECTORY, "--tsig-key": str(self.keys.update),
                "--transfer-key": str(self.keys.transfer), **options}
        argv = ["rendezvous", "init", "--state", str(self.folder / name),
                "--endpoint", f"{RDV}:{51820 + len(name)}", "--json", *extra]
        for option, value in opts.items():
            if value:
                argv += [option, value]
        return self.meshwg(*argv, check=check)

    def enroll(self, state: str, token: str, name: str) -> str:
        return self.ns["rdv"].run_python(ENROLL, self.folder / state, token, name,
                                         timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_netns()
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        lab = Lab(cleanup, tmp_path_factory.mktemp("zone-rdv"))
        first = json.loads(lab.init("a", "--network", NETWORK).stdout)
        second = json.loads(lab.init("b").stdout)
        lab.created = (first, second)
        yield lab


def one_line(out) -> str:
    assert out.returncode != 0
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def members(lab: Lab, state: str) -> dict:
    return json.loads(lab.meshwg("members", "--state", str(lab.folder / state), "--json").stdout)


def test_a_second_rendezvous_joins_the_mesh_the_first_wrote_into_the_zone(lab) -> None:
    first, second = lab.created
    assert first["network"] == second["network"] == NETWORK
    assert first["mesh_id"] == second["mesh_id"]
    assert first["address"] != second["address"]
    assert first["directory"] == f"dns://{PRIMARY}:53,dns://{KNOT}:53"
    for state in ("a", "b"):
        key = lab.folder / state / "tsig.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_bytes() == lab.keys.update.read_bytes()
    listed = members(lab, "a")["directory"]
    assert sorted(r["address"] for r in listed["rendezvous"]) == \
        sorted([first["address"], second["address"]])
    assert listed["primary"] is None and listed["read_from"] == f"{PRIMARY}:53"


def test_bad_inputs_are_one_line_and_leave_nothing(lab, tmp_path) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text('key "meshwg-update" {\n\talgorithm hmac-sha256;\n'
                     '\tsecret "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";\n};\n')
    cases = [
        ({}, ("--network", "10.9.0.0/24"), "differs from the mesh 100.81.0.0/24"),
        ({"--tsig-key": str(wrong), "--transfer-key": ""}, (),
         f"DNS server {PRIMARY}:53 refused key meshwg-update (BADSIG"),
        ({"--zone": "other.test"}, (), f"DNS server {PRIMARY}:53 refused zone other.test"),
        # README's example had no --transfer-key: the Knot secondary does not know the
        # update key, so the rendezvous could not read there with the primary down
        ({"--transfer-key": ""}, (), f"DNS server {KNOT}:53 refused key meshwg-update (BADKEY: "
                                     f"it does not know this key) to SOA query for {ZONE}.; it "
                                     f"does not know key meshwg-update: sign reads with a key "
                                     f"every server of --directory knows, --transfer-key FILE"),
        ({"--transfer-key": str(lab.keys.read)}, (), "key meshwg-read may not use it"),
        ({"--directory": f"dns://{PRIMARY}:5353"}, (), f"cannot reach DNS server {PRIMARY}:5353"),
    ]
    for options, extra, expected in cases:
        err = one_line(lab.init("bad", *extra, check=False, **options))
        assert expected in err, err
        assert not (lab.folder / "bad").exists()


def test_two_rendezvous_created_at_once_never_share_an_address(lab) -> None:
    opts = ["--zone", ZONE, "--directory", DIRECTORY, "--tsig-key", str(lab.keys.update),
            "--transfer-key", str(lab.keys.transfer), "--json"]
    daemons = [lab.ns["rdv"].popen_python(MESHWG, "rendezvous", "init", "--state",
                                          str(lab.folder / name), "--endpoint",
                                          f"{RDV}:{52000 + n}", *opts, name=f"init-{name}")
               for n, name in enumerate(("c", "d"))]
    for daemon in daemons:
        poll(lambda: not daemon.alive, 120, f"{daemon.name} to finish\n{daemon.output()}")
        assert daemon.returncode == 0, daemon.output()
    made = [json.loads(d.stdout()) for d in daemons]
    addresses = {m["address"] for m in made} | {c["address"] for c in lab.created}
    assert len(addresses) == 4
    assert len(members(lab, "c")["directory"]["rendezvous"]) == 4


def test_two_rendezvous_enrolling_at_once_never_share_an_address(lab) -> None:
    token = json.loads(lab.meshwg("invite", "--reusable", "--state", str(lab.folder / "a"),
                                  "--json").stdout)["token"]
    daemons = [lab.ns["rdv"].popen_python(ENROLL, lab.folder / state, token,
                                          ",".join(f"{state}r{i}" for i in range(10)),
                                          name=f"enroll-{state}")
               for state in ("a", "b")]
    for daemon in daemons:
        poll(lambda: not daemon.alive, 180, f"{daemon.name} to finish\n{daemon.output()}")
        assert daemon.returncode == 0, daemon.output()
    outcomes = [line for d in daemons for line in d.stdout().split("\n") if line.strip()]
    assert len(outcomes) == 20 and all(o.startswith("enrolled ") for o in outcomes), outcomes
    listed = members(lab, "b")
    addresses = [m["mesh_address"] for m in listed["members"]]
    rendezvous = [r["address"] for r in listed["directory"]["rendezvous"]]
    assert len(addresses) == 20 and len(set(addresses) | set(rendezvous)) == 20 + len(rendezvous)
    assert sorted(o.split()[1] for o in outcomes) == sorted(addresses)
    lab.ns["rdv"].run_python(REMOVE, lab.folder / "a", *[m["name"] for m in listed["members"]],
                             timeout=120)


def test_invites_and_removal_at_either_rendezvous_and_without_the_primary(lab) -> None:
    invite = json.loads(lab.meshwg("invite", "--state", str(lab.folder / "a"), "--json").stdout)
    listed = json.loads(lab.meshwg("invites", "--state", str(lab.folder / "b"), "--json").stdout)
    assert invite["invite_id"] in [i["invite_id"] for i in listed["invites"]]
    reusable = json.loads(lab.meshwg("invite", "--reusable", "--state", str(lab.folder / "a"),
                                     "--json").stdout)["token"]
    # a token of rendezvous a enrolls at b (and at a)
    assert lab.enroll("b", reusable, "j1").startswith("enrolled ")
    assert lab.enroll("a", reusable, "j2").startswith("enrolled ")
    assert lab.enroll("b", invite["token"], "j3").startswith("enrolled ")
    assert lab.enroll("a", invite["token"], "j4") == "used_up"
    lab.meshwg("invites", "revoke", invite["invite_id"][:10], "--state", str(lab.folder / "b"))
    assert lab.enroll("a", invite["token"], "j5") == "unknown_invite"
    for name in ("j1", "j2", "j3"):
        lab.meshwg("remove", name, "--state", str(lab.folder / "a"))
    add = lambda name: lab.ns["rdv"].run_python(ADD_MEMBER, lab.folder / "a", name,
                                               timeout=60).stdout.strip()
    first, second = add("m1"), add("m2")
    assert [m["name"] for m in members(lab, "b")["members"]] == ["m1", "m2"]
    lab.meshwg("remove", "m1", "--state", str(lab.folder / "b"))
    assert [m["mesh_address"] for m in members(lab, "a")["members"]] == [second]
    assert first != second

    serial = lab.primary.serial()
    poll(lambda: lab.knot.serial() == serial, 60, "the secondary to have the last change")
    lab.primary.kill()
    try:
        shown = members(lab, "a")
        assert shown["directory"]["read_from"] == f"{KNOT}:53"
        assert "primary is not writable" in shown["directory"]["primary"]
        assert [m["name"] for m in shown["members"]] == ["m2"]
        text = lab.meshwg("members", "--state", str(lab.folder / "a")).stdout
        assert "primary is not writable" in text
        for argv in (["remove", "m2"], ["invite"]):
            err = one_line(lab.meshwg(*argv, "--state", str(lab.folder / "b"), check=False))
            assert f"primary DNS server {PRIMARY}:53 is not writable" in err, err
        assert lab.enroll("b", reusable, "j6") == "unavailable"
    finally:
        lab.primary.restart()
    lab.meshwg("remove", "m2", "--state", str(lab.folder / "b"))
    assert members(lab, "a")["members"] == []
