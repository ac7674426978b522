"""Member-offered relays in the NAT lab (discovery/lab/mesh.py), with the real daemons
through the CLI: the rendezvous runs with --no-relay, two public members P1 and P2 join
with --relay, B sits behind a port-rewriting NAT and C behind the symmetric NAT3.

B and C have no direct path; they learn P1's and P2's relays from the directory, agree on
one (discovery.relay.choice), ping each other through it, and `meshwg status` names the
relaying member. Killing that member (SIGKILL) moves the pair to the other relay within
seconds (the relays stop answering binds: PROBE_INTERVAL + DEAD_AFTER); with the
rendezvous relaying too, the pair falls back to the rendezvous's relay."""

from __future__ import annotations

import json
import signal
import time

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.netns import poll, unavailable_reason
from discovery.relay.choice import DEAD_AFTER, PROBE_INTERVAL

pytestmark = pytest.mark.netns

RELAYS = {"p1": ("198.18.0.21", 51831), "p2": ("198.18.0.22", 51835)}


def _relay_rows(b, c) -> tuple[dict, dict] | None:
    """C's row for B and B's row for C when both are relayed through the same member."""
    cb, bc = c.peers_by_name().get("b"), b.peers_by_name().get("c")
    if not cb or not bc or cb["path"] != "relay" or bc["path"] != "relay":
        return None
    return (cb, bc) if cb.get("relay") == bc.get("relay") and cb.get("relay") else None


def _start(lab, rendezvous_args: tuple[str, ...], relay_labels: tuple[str, ...]):
    """The rendezvous (with `rendezvous_args`), the public members `relay_labels` with
    --relay, then B and C; returns (relay nodes by label, B, C)."""
    mesh_lab.init_rendezvous(lab, run_args=rendezvous_args)
    relays = {label: lab.add_public_node(label, *RELAYS[label]) for label in relay_labels}
    b, c = lab.members["b"], lab.members["c"]
    for node in (*relays.values(), b, c):
        node.state_dir.parent.mkdir(parents=True, exist_ok=True)
        lab.join(node, lab.invite(), wait=False, extra=("--relay",) if node.label in RELAYS else ())
    for node in (*relays.values(), b, c):
        lab.wait_joined(node)
    return relays, b, c


def _describe(b, c) -> str:
    try:
        return f"C->B {c.peers_by_name().get('b')}; B->C {b.peers_by_name().get('c')}"
    except Exception as exc:  # noqa: BLE001 - only for the message
        return str(exc)


def _wait_relayed(b, c, via: tuple[str, ...], timeout: float, interval: float = 0.5) -> tuple[dict, dict]:
    """Both ends' rows once B and C are relayed through one of `via`."""
    def relayed():
        rows = _relay_rows(b, c)
        return rows if rows and rows[0]["relay"] in via else None
    return poll(relayed, timeout, lambda: f"B and C relayed via {via}: {_describe(b, c)}", interval=interval)


def _pings(b, c, where: str) -> None:
    assert c.ping(b.mesh_address, count=3) is not None, f"C cannot ping B through {where}"
    assert b.ping(c.mesh_address, count=3) is not None, f"B cannot ping C through {where}"


def _kill(node) -> float:
    node.daemon.signal(signal.SIGKILL)
    node.daemon.wait(10)
    return time.monotonic()


def _skip_unless_lab() -> None:
    reason = unavailable_reason(("ip", "iptables", "conntrack", "ping", "wg"))
    if reason:
        pytest.skip(reason)


def test_symmetric_member_is_relayed_by_a_member_and_fails_over_to_another(tmp_path) -> None:
    _skip_unless_lab()
    with mesh_lab.build_lab(symmetric=True, start=False, workdir=str(tmp_path / "lab")) as lab:
        relays, b, c = _start(lab, ("--no-relay",), ("p1", "p2"))
        cb, bc = _wait_relayed(b, c, tuple(RELAYS), 90)
        name = cb["relay"]
        assert cb["reason"].startswith(f"relay via {name}") and bc["reason"].startswith(f"relay via {name}")
        _pings(b, c, name)
        row = c.peers_by_name()["b"]
        assert row["relay_rx_bytes"] > 0 and row["relay_tx_bytes"] > 0, row
        text = c.meshwg("status", "--interface", c.interface).stdout
        assert f"relay via {name}" in text, text
        # the relaying member's own counters (as of its last status write): what it
        # forwarded for B and for C
        def served():
            doc = relays[name].status()["relay_server"]
            per = doc["members"]
            return doc if all(per.get(n, {}).get("forwarded_datagrams", 0) > 0 for n in "bc") else None
        doc = poll(served, 30, lambda: f"{name}'s relay counters for B and C: {relays[name].status()}")
        # dropped by reason (a member's first binds may come before the relay read it in
        # the directory: unknown_member)
        assert {"dropped_unknown_member", "dropped_bad_mac", "dropped_malformed"} <= set(doc["counters"])
        # the rendezvous runs no relay: no relay counters
        members = json.loads(lab.rendezvous_cli("members", "--state", lab.rendezvous_state(), "--json").stdout)
        assert members["relay"] is None

        # kill the relaying member: the pair moves to the other member's relay
        other = next(label for label in RELAYS if label != name)
        killed = _kill(relays[name])
        _wait_relayed(b, c, (other,), 60, interval=0.2)
        moved = time.monotonic() - killed
        _pings(b, c, other)
        print(f"\nrelay failover {name} -> {other}: {moved:.1f} s after SIGKILL (probe {PROBE_INTERVAL} s "
              f"+ dead after {DEAD_AFTER} s; a loaded machine: an upper bound of the time)")


def test_member_relay_first_then_the_rendezvous_relay_with_its_counters(tmp_path) -> None:
    """With the rendezvous relaying too, the pair prefers the member's relay (offered to
    take that load) and falls back to the rendezvous's when the member dies; the
    rendezvous's counters (per member, dropped by reason) are in `meshwg members --json`."""
    _skip_unless_lab()
    with mesh_lab.build_lab(symmetric=True, start=False, workdir=str(tmp_path / "lab")) as lab:
        relays, b, c = _start(lab, (), ("p1",))
        _wait_relayed(b, c, ("p1",), 90)
        killed = _kill(relays["p1"])
        cb, _ = _wait_relayed(b, c, ("rendezvous",), 60, interval=0.2)
        moved = time.monotonic() - killed
        assert cb["reason"].startswith("relay via rendezvous"), cb
        _pings(b, c, "the rendezvous")

        def counted():
            doc = json.loads(lab.rendezvous_cli("members", "--state", lab.rendezvous_state(), "--json").stdout)
            relay = doc["relay"] or {}
            per = relay.get("members", {})
            return relay if all(per.get(n, {}).get("forwarded_datagrams", 0) > 0 for n in ("b", "c")) else None
        relay = poll(counted, 30, "the rendezvous's relay counters for B and C in `meshwg members --json`")
        assert relay["counters"]["forwarded_datagrams"] >= sum(
            m["forwarded_datagrams"] for m in relay["members"].values())
        assert "dropped_unknown_member" in relay["counters"]
        print(f"\nrelay failover p1 -> rendezvous: {moved:.1f} s after SIGKILL")
