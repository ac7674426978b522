"""A rendezvous on a DNS directory keeps the last zone it read (discovery.stores.zone_cache)
and serves it after a restart while no DNS server answers (zone_rendezvous.ZoneState), saying
where and when it was read; a corrupt, oversized or foreign copy is ignored with one log
line. Real state directory, real ZoneWriter against a port nothing listens on."""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import dns.name
import pytest

from discovery.stores import zone_cache
from discovery.stores.rendezvous import RendezvousState
from discovery.stores.zone_cache import cache_path, load_zone, save_zone
from discovery.stores.zone_membership import Layout, RendezvousEntry
from discovery.stores.zone_rendezvous import (
    KEY_FILE, META_DIRECTORY, META_TRANSFER_KEY, ZoneState,
)
from tests.discovery.stores.test_zone_membership import SETTINGS, content, good_member, key
from tests.discovery.stores.test_zone_rendezvous import KEY, free_tcp_port

ZONE = "mesh.test."
LAYOUT = Layout(dns.name.from_text(ZONE), bytes(32))
RDV = RendezvousEntry(key(9), "192.0.2.1:51820", "192.0.2.1:51820", "100.80.0.1", b"p" * 32)


def two_members(serial: int = 41):
    return content(SETTINGS, *good_member(LAYOUT, 1, "laptop", "100.80.0.2"),
                   *good_member(LAYOUT, 2, "phone", "100.80.0.3"),
                   LAYOUT.rendezvous_rrset(RDV), LAYOUT.claim_rrset("100.80.0.1", key(9)),
                   serial=serial)


def test_a_copy_round_trips_private_and_atomic(tmp_path) -> None:
    path = tmp_path / "zone-cache.json"
    zone = two_members()
    save_zone(path, ZONE, zone, "192.0.2.53:53", read_at=1_800_000_000.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = load_zone(path, "mesh.test")
    assert saved.content.serial == 41 and saved.server == "192.0.2.53:53"
    assert saved.read_at == 1_800_000_000.0
    assert saved.content.records == zone.records
    assert [p.name for p in tmp_path.iterdir()] == ["zone-cache.json"]     # no temporary left


def test_a_bad_copy_is_ignored_with_one_log_line(tmp_path, caplog, monkeypatch) -> None:
    path = tmp_path / "zone-cache.json"
    assert load_zone(path, ZONE) is None and not caplog.records            # none: silence
    save_zone(path, ZONE, two_members(), "192.0.2.53:53")
    good = json.loads(path.read_text())
    outside = dict(good, records=[["evil.example.", "A", ["192.0.2.66"]]])
    bad = [b"{not json", json.dumps(dict(good, version=99)).encode(),
           json.dumps(dict(good, zone="other.test.")).encode(), json.dumps(outside).encode(),
           json.dumps(dict(good, serial=-1)).encode(), json.dumps([1, 2]).encode(),
           json.dumps(dict(good, records=[["a.mesh.test.", "A", ["not an address"]]])).encode()]
    for data in bad:
        path.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="meshwg.zone"):
            assert load_zone(path, ZONE) is None
        assert len(caplog.records) == 1 and "ignoring the saved zone" in caplog.text, data
    monkeypatch.setattr(zone_cache, "MAX_CACHE_BYTES", 100)
    save_zone(path, ZONE, two_members(), "192.0.2.53:53")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshwg.zone"):
        assert load_zone(path, ZONE) is None
    assert "over 100" in caplog.text
    monkeypatch.setattr(zone_cache, "MAX_CACHE_BYTES", 64 << 20)
    monkeypatch.setattr(zone_cache, "MAX_CACHE_RECORDS", 3)
    assert load_zone(path, ZONE) is None


def zone_rendezvous(tmp_path, server: str | None = None) -> str:
    """A rendezvous state on a DNS directory whose only server is `server` (HOST:PORT;
    by default one that does not answer)."""
    state = tmp_path / "rdv"
    server = server or f"127.0.0.1:{free_tcp_port()}"
    meta = {META_DIRECTORY: f"dns://{server}", META_TRANSFER_KEY: "0"}
    RendezvousState.init(state, "100.80.0.0/24", "192.0.2.1:51820", ZONE, address="100.80.0.1",
                         extra_meta=meta).close()
    (state / KEY_FILE).write_text(KEY)
    os.chmod(state / KEY_FILE, 0o600)
    return str(state)


def test_a_restart_during_a_dns_outage_serves_the_last_membership(tmp_path) -> None:
    state_dir = zone_rendezvous(tmp_path)
    read_at = time.time() - 3600
    with RendezvousState.open(state_dir) as st:
        zone = ZoneState(st)
        assert zone.members() == [] and zone.saved_at is None           # nothing saved yet
        assert "cannot reach DNS server 127.0.0.1" in zone.problem
    save_zone(cache_path(state_dir), ZONE, two_members(), "192.0.2.53:53", read_at=read_at)
    with RendezvousState.open(state_dir) as st:
        zone = ZoneState(st)
        assert [m.name for m in zone.members()] == ["laptop", "phone"]
        assert zone.find_member("phone").mesh_address == "100.80.0.3"
        assert [e.endpoint for e in zone.rendezvous()] == ["192.0.2.1:51820"]
        assert zone.saved_at == pytest.approx(read_at)
        assert "saved in the state directory (read from 192.0.2.53:53 at" in zone.read_from
        assert zone.problem                                               # and no server answers
        assert zone.refresh(force=True) is False and len(zone.members()) == 2
