"""The connectivity matrix (discovery.lab.matrix): every cell reaches its expected path.

The netns tests build the matrix lab once (one rendezvous, one internet, every member
situation behind real Linux NAT, all members joining at once) and assert, cell by cell, that
ping between the two mesh addresses works and that both ends' ``wg show`` endpoints are
the expected path. The other tests check the cell table and the path judge without
namespaces.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from discovery.lab import matrix
from discovery.lab.mesh import Node
from discovery.lab.nat import Internet
from discovery.lab.nat_types import SegmentedRouter
from discovery.lab.netns import LabError, poll
from tests.conftest import require_netns


@pytest.fixture(scope="module")
def report():
    require_netns()
    result = matrix.run_matrix()
    print(matrix.format_table(result))       # in the log (pytest -rP): paths and times
    return result


@pytest.mark.netns
@pytest.mark.parametrize("pair", list(matrix.CELLS), ids=[f"{a}-{b}" for a, b in matrix.CELLS])
def test_cell_pings_over_its_expected_path(report, pair) -> None:
    key = f"{pair[0]}-{pair[1]}"
    cell = next(c for c in report["cells"] if c["cell"] == key)
    detail = f"{cell}; notes: {report['notes']}"
    assert cell["ping_ok"], f"no ping reply over the mesh: {detail}"
    assert cell["path"] == matrix.CELLS[pair], f"wrong path: {detail}"
    assert cell["first_packet_s"] is not None, f"no first packet measured: {detail}"


# ---------------------------------------------------------------------------- no namespaces

def _kind(label: str) -> str:
    return label.rstrip("2")


def test_each_situation_meets_open_cone_and_symmetric() -> None:
    partners: dict[str, set[str]] = {}
    for a, b in matrix.CELLS:
        partners.setdefault(a, set()).add(_kind(b))
        partners.setdefault(b, set()).add(_kind(a))
    for label in matrix.SITUATIONS:
        if label.endswith("2") or label == "v6":
            continue                     # the second of a kind, there to pair with the first
        assert {"open", "cone", "sym"} <= partners[label], label
    for pair in (("sym", "sym2"), ("double", "double2"), ("lan", "cone"), ("hp", "hp2"),
                 ("nh", "nh2"), ("v6", "open")):
        assert pair in matrix.CELLS
    assert set(matrix.CELLS.values()) <= {"direct", "lan", "relay"}


def _situation(label: str, public: str, lan_address: str | None = None,
               lan: str | None = None) -> matrix.Situation:
    node = Node(label=label, ns=None, interface="mwx0", listen_port=1, state_dir=Path("/"),
                log_dir=Path("/"), lan_address=lan_address)
    return matrix.Situation(node, (public,), lan)


def test_judge_reads_the_endpoint_against_the_lab_addresses() -> None:
    lab = matrix.Matrix(mesh=None, cells={}, situations={
        "a": _situation("a", "198.18.8.1", "10.8.0.10", "10.8.0.0/24"),
        "b": _situation("b", "198.18.8.1", "10.8.1.10", "10.8.1.0/24"),
        "c": _situation("c", "198.18.1.1", "10.1.0.10", "10.1.0.0/24"),
        "d": _situation("d", "198.18.1.1", "10.1.0.11", "10.1.0.0/24"),
        "o": _situation("o", "198.18.0.20"),
        "v6": _situation("v6", "fd5e:1ab::30")})
    lab.situations["o"].public_addresses += ("fd5e:1ab::20",)
    assert lab.judge("c", "10.1.0.11:51830", "d") == "lan"
    assert lab.judge("a", "10.8.1.10:51830", "b") == "other 10.8.1.10"   # not its segment
    assert lab.judge("a", "198.18.8.1:51831", "b") == "direct"           # hairpinned
    assert lab.judge("o", "198.18.1.1:40007", "c") == "direct"
    assert lab.judge("c", "198.18.0.20:51830", "o") == "direct"
    assert lab.judge("c", "127.0.0.1:40123", "o") == "relay"
    assert lab.judge("c", "(none)", "o") == "none"
    assert lab.judge("v6", "[fd5e:1ab::20]:51830", "o") == "direct"
    assert lab.judge("o", "[fd5e:1ab::30]:51846", "v6") == "direct"


def test_judge_tells_a_birthday_proxy_from_a_relay_proxy() -> None:
    lab = matrix.Matrix(mesh=None, cells={}, situations={
        "sym": _situation("sym", "198.18.4.1", "10.4.0.10", "10.4.0.0/24"),
        "c": _situation("c", "198.18.1.1", "10.1.0.10", "10.1.0.0/24"),
        "k": _situation("k", "198.18.3.1", "10.3.0.10", "10.3.0.0/24")})
    lab.situations["c"].node.public_key = "C" * 43 + "="
    lab.situations["k"].node.public_key = "K" * 43 + "="
    found = {"C" * 43 + "=": "127.0.0.1:40123"}       # sym's birthday proxy for c only
    assert lab.judge("sym", "127.0.0.1:40123", "c", found) == "direct"
    assert lab.judge("sym", "127.0.0.1:40124", "c", found) == "relay"   # another proxy
    assert lab.judge("sym", "127.0.0.1:40123", "k", found) == "relay"   # not k's proxy
    assert lab.judge("sym", "127.0.0.1:40123", "c") == "relay"          # no status read
    assert lab.judge("c", "198.18.4.1:61234", "sym") == "direct"        # the other end


def test_birthday_proxies_come_from_the_members_status_file(tmp_path, monkeypatch) -> None:
    lab = matrix.Matrix(mesh=None, cells={}, situations={
        "sym": _situation("sym", "198.18.4.1", "10.4.0.10", "10.4.0.0/24")})
    monkeypatch.setattr(matrix, "status_path", lambda interface: str(tmp_path / f"{interface}.json"))
    assert lab.birthday_proxies("sym") == {}                           # no file yet
    (tmp_path / "mwx0.json").write_text('{"hard_nat": null}')
    assert lab.birthday_proxies("sym") == {}
    (tmp_path / "mwx0.json").write_text('{"hard_nat": {"proxies": {"K=": "127.0.0.1:1"}}}')
    assert lab.birthday_proxies("sym") == {"K=": "127.0.0.1:1"}
    (tmp_path / "mwx0.json").write_text('{"hard_n')                    # mid-write: none
    assert lab.birthday_proxies("sym") == {}


def test_select_and_problems() -> None:
    assert matrix.select(["cone-sym"]) == {("cone", "sym"): "direct"}
    with pytest.raises(LabError, match="unknown cell sym-cone"):
        matrix.select(["sym-cone"])
    good = matrix.Cell("cone", "sym", "relay", path_ab="relay", path_ba="relay", ping_ok=True,
                       first_packet_s=2.0, status_ab="relay", status_ba="relay")
    split = matrix.Cell("open", "cone", "direct", path_ab="direct", path_ba="relay",
                        ping_ok=True)
    dead = matrix.Cell("lan", "cone", "lan", path_ab="lan", path_ba="lan")
    assert (good.ok, split.path, split.ok, dead.ok) == (True, "direct/relay", False, False)
    report = {"cells": [c.as_dict() for c in (good, split, dead)], "situations": {
        label: {"what": matrix.SITUATIONS[label]} for label in ("cone", "sym", "open", "lan")}}
    assert matrix.problems(report) == [
        "open-cone: path direct/relay, expected direct (endpoints (none) / (none))",
        "lan-cone: no ping reply"]
    table = matrix.format_table(report)
    assert re.search(r"^cone-sym +relay +relay +2\.00 s +- +- +ok +relay$", table, re.MULTILINE)
    assert re.search(r"^lan-cone +lan +lan +- +- +- +FAIL +\?$", table, re.MULTILINE)
    assert "sym      symmetric NAT" in table


# ---------------------------------------------------------------------------- the segments

RECEIVE = ("import socket, sys\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
           "print('ready', flush=True)\n"
           "while True:\n"
           "    data, source = s.recvfrom(100)\n"
           "    print(data.decode(), source[0], flush=True)\n")
SEND = ("import socket, sys\n"      # each target: 'sent' or the error sending/receiving met
        "for target in sys.argv[1:]:\n"
        "    host, port = target.rsplit(':', 1)\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.settimeout(5)\n"
        "    s.connect((host, int(port)))\n"
        "    s.send(target.encode())\n"
        "    try:\n"
        "        s.recv(100)\n"
        "    except OSError as exc:\n"
        "        print(target, type(exc).__name__, flush=True)\n")


def _forward_drops(router: SegmentedRouter) -> int:
    """Packets the router's between-segment DROP rules have dropped."""
    out = router.ns.run(["iptables", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()
               if "DROP" in line and "ctstate" in line)


@pytest.mark.netns
@pytest.mark.parametrize("hairpin", [True, False], ids=["hairpin", "no-hairpin"])
def test_segments_meet_only_through_a_hairpinning_public_address(lab, hairpin) -> None:
    internet = Internet(lab)
    router = SegmentedRouter(lab, internet, "198.18.8.1", "10.8.0.0/24", "10.8.1.0/24", hairpin)
    (one, one_address), (two, _) = router.add_host("one"), router.add_second_host("two")
    if hairpin:
        router.hairpin_port(47000, one_address)
    receiver = one.popen_python(RECEIVE, 47000, name="receiver")
    poll(lambda: receiver.check_alive() or "ready" in receiver.stdout(), 10, "the receiver")
    dropped = _forward_drops(router)
    private, public = f"{one_address}:47000", f"{router.public_address}:47000"
    sent = two.run_python(SEND, private, public, timeout=30).stdout
    assert f"{private} TimeoutError" in sent          # the segments do not route
    assert _forward_drops(router) > dropped
    if hairpin:       # reached through the public address, seen from the public address
        poll(lambda: public in receiver.stdout(), 10, lambda: receiver.output())
        assert receiver.stdout().split("\n")[1:] == [f"{public} {router.public_address}", ""]
    else:             # the router itself answers: port unreachable
        assert f"{public} ConnectionRefusedError" in sent
        assert receiver.stdout().strip() == "ready"
