"""What a fresh user/attacker pass over the scale-out setup found in the CLI's messages
(issue 10): an invite's --expires beyond what the zone reader accepts is refused in one
line naming the value (it was accepted, then invisible and unrevocable), and in the zone
store too; `meshwg members` lists the mesh's other rendezvous under the header with their
endpoint in its own note, not in the JOINED column."""

from __future__ import annotations

import time

import pytest

from discovery import cli
from discovery.stores.errors import StateError
from discovery.stores.zone_membership import TIME_BOUND, ZoneMembership

from tests.discovery.daemons.test_mesh_cli import one_line_error, run


def test_an_expiry_the_directory_cannot_read_back_is_refused(tmp_path) -> None:
    state = str(tmp_path / "rdv")
    assert run("rendezvous", "init", "--state", state, "--network", "10.42.0.0/24",
               "--endpoint", "127.0.0.1:51820").returncode == 0
    for value in ("99999999999h", "3000000w"):
        err = one_line_error(run("invite", "--state", state, "--expires", value))
        assert f"--expires {value!r}: too far" in err and "5138" in err, err
    assert cli.parse_duration("52w") == 52 * 7 * 86400      # a year stays fine
    assert cli.parse_duration("2000w") > 0                   # so do ~38 years


def test_the_zone_store_refuses_an_expiry_past_its_reader(monkeypatch) -> None:
    store = ZoneMembership.__new__(ZoneMembership)           # no server: refused before any I/O
    with pytest.raises(StateError, match="ends after the directory's last time"):
        store.create_invite(expires_in=TIME_BOUND, now=time.time())


def test_other_rendezvous_are_rows_under_the_header() -> None:
    me = {"name": "(rendezvous)", "address": "100.64.0.1", "public_key": "A" * 44}
    directory = {"zone": "mesh.test.", "read_from": "192.0.2.53:53", "primary": None,
                 "rendezvous": [{"self": True, "address": "100.64.0.1", "public_key": "A" * 44,
                                 "endpoint": "192.0.2.1:51820"},
                                {"self": False, "address": "100.64.0.2", "public_key": "B" * 44,
                                 "endpoint": "192.0.2.2:51820"}]}
    rows = [{"name": "laptop", "mesh_address": "100.64.0.3", "public_key": "C" * 44,
             "joined_at": 0, "unpublishable": []}]
    lines = cli.members_text(me, rows, directory)
    assert lines[0].startswith("directory: zone mesh.test. read from 192.0.2.53:53")
    assert lines[1].split() == ["NAME", "ADDRESS", "PUBLIC", "KEY", "JOINED"]
    assert lines[2].split()[:4] == ["(rendezvous)", "100.64.0.1", "A" * 44, "-"]
    assert lines[3].split() == ["(rendezvous)", "100.64.0.2", "B" * 44, "-", "(endpoint",
                                "192.0.2.2:51820)"]
    assert lines[4].split()[:3] == ["laptop", "100.64.0.3", "C" * 44]
    plain = cli.members_text(me, rows, None)                 # the embedded directory: unchanged
    assert plain[0].startswith("NAME") and plain[1].split() == ["(rendezvous)", "100.64.0.1",
                                                                "A" * 44, "-"]
