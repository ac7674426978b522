"""What the daemons keep on disk and watch, without root: the member's status file (written
on change only) and directory cache, the rendezvous's store watch."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from discovery.daemons.directory_cache import load_directory, save_directory
from discovery.daemons.member_status import StatusFile, status_path
from discovery.daemons.storewatch import StoreWatch
from discovery.dnssd.member import MemberRecord


def test_status_file_is_written_on_change_only(tmp_path):
    path = status_path("mw0", directory=str(tmp_path / "run"))
    status = StatusFile(path)
    doc = {"interface": "mw0", "peers": [{"name": "b", "path": "direct"}]}
    assert status.write(doc)
    first = os.stat(path)
    assert oct(first.st_mode & 0o777) == "0o600"        # it names peers and endpoints
    written = json.loads(open(path).read())
    assert written["peers"] == doc["peers"] and written["updated_at"] > 0
    assert not status.write(json.loads(json.dumps(doc)))      # equal content: no write
    assert status.writes == 1 and os.stat(path).st_ino == first.st_ino
    doc["peers"][0]["path"] = "none"
    assert status.write(doc) and status.writes == 2
    assert json.loads(open(path).read())["peers"][0]["path"] == "none"
    status.remove()
    assert not os.path.exists(path)
    status.remove()                                            # twice is fine


def test_directory_cache_round_trip_and_damage(tmp_path):
    path = tmp_path / "directory.json"
    records = {
        b"a" * 32: MemberRecord(public_key=b"a" * 32, endpoint=("198.18.1.1", 40001),
                                allowed_ips=["10.99.0.2/32"], name="a", mesh_address="10.99.0.2",
                                host_candidates=[("10.1.0.10", 51821), ("fd00::5", 51821)],
                                extra={"relay": "51832"}),     # a relay offer survives a restart
        b"b" * 32: MemberRecord(public_key=b"b" * 32, endpoint=None, allowed_ips=["10.99.0.3/32"],
                                name="b", mesh_address="10.99.0.3"),
    }
    save_directory(path, records)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert load_directory(path) == records
    assert load_directory(tmp_path / "missing.json") == {}
    path.write_text('[{"public_key": "zz"}]')
    assert load_directory(path) == {}
    path.write_text("{not json")
    assert load_directory(path) == {}


def test_store_watch_sees_commits_of_other_processes(tmp_path):
    path = tmp_path / "store.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE members (name TEXT)")
    watch = StoreWatch(path)
    try:
        assert not watch.changed()
        db.execute("INSERT INTO members VALUES ('a')")             # this process
        assert watch.changed() and not watch.changed()
        subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
                        "sqlite3.connect(sys.argv[1], isolation_level=None)"
                        ".execute(\"DELETE FROM members\")", str(path)], check=True, timeout=30)
        assert watch.changed()                                     # `meshwg remove`'s way
        db.execute("SELECT * FROM members").fetchall()
        assert not watch.changed()                                 # reads change nothing
    finally:
        watch.close()
        db.close()
