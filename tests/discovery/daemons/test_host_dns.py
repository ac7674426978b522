"""Member names on the host (discovery/daemons/host_dns.py) against real files: the managed
block in a hosts file, and the resolvectl calls the resolved mode makes (recorded by a
stand-in resolvectl script, failures included; against a live systemd-resolved:
test_host_dns_resolved_lab.py)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from meshwg.core import crypto

from discovery.daemons.host_dns import HostDns, resolved_running
from discovery.enroll.tokens import encode_token
from discovery.enroll.transport import EnrollmentServer
from discovery.stores.rendezvous import RendezvousState
from tests.discovery.daemons.test_mesh_cli import MESHWG, ROOT, one_line_error

ZONE = "mesh.internal."
ORIGINAL = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# keep me\n"
RECORDER = """#!/bin/sh
echo "$*" >> {log}
case "$1" in {fail}) echo "Failed to set DNS configuration: Link meshwg0 not known" >&2; exit 1;; esac
"""


def hosts_dns(tmp_path, mode="hosts", interface="meshwg0", **kw) -> HostDns:
    kw.setdefault("hostname", "thishost")
    return HostDns(mode, interface, ZONE, ["10.99.0.1"], 53, hosts_path=str(tmp_path / "hosts"),
                   lock_dir=str(tmp_path / "run"), **kw)


def test_hosts_block_follows_the_names_and_goes_at_stop(tmp_path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    os.chmod(hosts, 0o644)
    dns = hosts_dns(tmp_path)
    dns.start()
    dns.update([("a1", "10.99.0.2"), ("a2", "10.99.0.3")])
    text = hosts.read_text()
    assert text.startswith(ORIGINAL)
    assert "10.99.0.2\ta1.mesh.internal a1\n10.99.0.3\ta2.mesh.internal a2\n" \
           "10.99.0.1\trendezvous.mesh.internal rendezvous\n" in text
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o644          # readable by every user
    assert dns.status() == {"mode": "hosts", "requested": "hosts", "error": None,
                            "hosts_file": str(hosts), "names": 3, "short_names_left_out": {}}
    inode = hosts.stat().st_ino
    dns.update([("a1", "10.99.0.2"), ("a2", "10.99.0.3")])      # unchanged: not rewritten
    assert hosts.stat().st_ino == inode
    # someone edits the file meanwhile; a2 leaves the mesh
    with open(hosts, "a") as f:
        f.write("10.0.0.9 printer\n")
    dns.update([("a1", "10.99.0.2")])
    text = hosts.read_text()
    assert "a2.mesh.internal" not in text and "a1.mesh.internal" in text
    assert text.startswith(ORIGINAL) and text.endswith("10.0.0.9 printer\n")
    dns.stop()
    assert hosts.read_text() == ORIGINAL + "10.0.0.9 printer\n"


def test_a_block_left_by_a_killed_member_is_replaced(tmp_path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    killed = hosts_dns(tmp_path)
    killed.update([("old", "10.99.0.7")])        # then kill -9: no stop()
    other = hosts_dns(tmp_path, interface="meshwg1")
    other.update([("x", "10.99.0.8")])
    again = hosts_dns(tmp_path)
    again.update([("new", "10.99.0.2")])
    text = hosts.read_text()
    assert "old.mesh.internal" not in text and "new.mesh.internal" in text
    assert text.count("# BEGIN meshwg meshwg0") == 1 and "x.mesh.internal" in text
    again.stop()
    other.stop()
    assert hosts.read_text() == ORIGINAL


def test_a_hosts_file_that_cannot_be_written_is_an_error_in_status(tmp_path) -> None:
    dns = HostDns("hosts", "meshwg0", ZONE, ["10.99.0.1"], 53,
                  hosts_path=str(tmp_path / "no" / "such" / "hosts"), lock_dir=str(tmp_path))
    dns.update([("a1", "10.99.0.2")])            # no exception: the member keeps running
    assert "No such file or directory" in dns.status()["error"]
    assert dns.status()["names"] == 0


def test_off_touches_nothing(tmp_path) -> None:
    dns = hosts_dns(tmp_path, mode="off")
    dns.start()
    dns.update([("a1", "10.99.0.2")])
    dns.stop()
    assert not (tmp_path / "hosts").exists()
    assert dns.status() == {"mode": "off", "requested": "off", "error": None}


def recorder(tmp_path, fail: str = "never") -> tuple[str, str]:
    log = tmp_path / "calls"
    tool = tmp_path / "resolvectl"
    tool.write_text(RECORDER.format(log=log, fail=fail))
    tool.chmod(0o755)
    return str(tool), str(log)


def test_resolved_mode_calls_and_reverts(tmp_path) -> None:
    tool, log = recorder(tmp_path)
    dns = HostDns("auto", "meshwg0", ZONE, ["10.99.0.1"], 5353, resolvectl=tool,
                  hosts_path=str(tmp_path / "hosts"), lock_dir=str(tmp_path / "run"))
    assert dns.mode == "resolved"
    dns.start()
    dns.update([("a1", "10.99.0.2")])            # resolved asks the rendezvous: no file
    assert dns.status() == {"mode": "resolved", "requested": "auto", "error": None,
                            "servers": ["10.99.0.1:5353"], "domain": "mesh.internal",
                            "search": True}
    dns.stop()
    dns.stop()                                   # once only
    with open(log) as f:
        assert f.read().splitlines() == ["dns meshwg0 10.99.0.1:5353",
                                         "domain meshwg0 mesh.internal",   # searched too
                                         "default-route meshwg0 false",
                                         "revert meshwg0"]
    assert not (tmp_path / "hosts").exists()


def test_resolved_failure_is_reported(tmp_path) -> None:
    tool, log = recorder(tmp_path, fail="dns")
    dns = HostDns("resolved", "meshwg0", ZONE, ["10.99.0.1"], 53, resolvectl=tool)
    dns.start()
    assert dns.status()["error"] == ("resolvectl dns meshwg0 10.99.0.1: Failed to set DNS "
                                     "configuration: Link meshwg0 not known")
    dns.stop()
    with open(log) as f:
        assert f.read().splitlines() == ["dns meshwg0 10.99.0.1", "revert meshwg0"]


def test_resolved_is_running_only_with_its_runtime_folder(tmp_path) -> None:
    assert resolved_running(str(tmp_path / "absent")) is None


def test_join_with_a_taken_name_says_why_and_what_to_do(tmp_path) -> None:
    """A name clash is refused at enrollment with the reason; the machine's key stays
    unused and the token unspent."""
    if os.geteuid() != 0:
        pytest.skip("join checks for root before it enrolls")
    st = RendezvousState.init(tmp_path / "rdv", "10.42.0.0/24", "127.0.0.1:51820")
    st.add_member("laptop", crypto.public_key(crypto.generate_private_key()))
    server = EnrollmentServer(st, "127.0.0.1", 0).start()
    try:
        invite = st.create_invite(enroll_port=server.port)
        out = subprocess.run(MESHWG + ["join", encode_token(invite), "--state", str(tmp_path / "m"),
                                       "--name", "laptop"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        err = one_line_error(out)
        assert "member name 'laptop' is already enrolled" in err and "--name" in err, err
        assert [m.name for m in st.members()] == ["laptop"]
        assert st.invite(invite.invite_id).uses == 0
    finally:
        server.stop()
        st.close()


def test_a_failed_write_is_pending_until_it_succeeds(tmp_path) -> None:
    hosts = tmp_path / "etc" / "hosts"
    dns = HostDns("hosts", "meshwg0", ZONE, ["10.99.0.1"], 53, hosts_path=str(hosts),
                  lock_dir=str(tmp_path / "run"))
    names = [("a1", "10.99.0.2")]
    dns.update(names)                            # no such folder yet: fails
    assert dns.pending and dns.status()["error"]
    hosts.parent.mkdir()
    hosts.write_text(ORIGINAL)
    dns.update(names)                            # the same names: tried again
    assert not dns.pending and dns.status()["error"] is None
    assert "a1.mesh.internal" in hosts.read_text()


def test_a_short_name_that_would_shadow_the_host_is_left_out_and_said(tmp_path) -> None:
    """`ping a2` works unless a2 means something here already: another line of the file
    (the administrator's, another mesh's block) or this machine's host name."""
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL + "192.168.1.5\ta2 a2.lan\n")
    dns = hosts_dns(tmp_path, hostname="a3.example.com")
    dns.update([("a1", "10.99.0.2"), ("a2", "10.99.0.3"), ("a3", "10.99.0.4")])
    text = hosts.read_text()
    assert text.startswith(ORIGINAL + "192.168.1.5\ta2 a2.lan\n")
    assert "10.99.0.2\ta1.mesh.internal a1\n" in text
    assert "10.99.0.3\ta2.mesh.internal\n" in text and "10.99.0.4\ta3.mesh.internal\n" in text
    assert dns.status()["short_names_left_out"] == {
        "a2": f"{hosts} gives it 192.168.1.5", "a3": "the machine's own host name"}
    assert dns.status()["names"] == 4
    # another mesh on this host with an a1 of its own: the first block keeps the short name
    other = hosts_dns(tmp_path, interface="meshwg1", hostname="a3.example.com")
    other.update([("a1", "10.98.0.9")])
    assert "10.98.0.9\ta1.mesh.internal\n" in hosts.read_text()
    assert other.status()["short_names_left_out"] == {"a1": f"{hosts} gives it 10.99.0.2"}
    dns.update([("a1", "10.99.0.2"), ("a2", "10.99.0.3")])        # a3 leaves: no flapping
    assert "10.99.0.2\ta1.mesh.internal a1\n" in hosts.read_text()
    assert "a3.mesh.internal" not in hosts.read_text()
    assert dns.status()["short_names_left_out"] == {"a2": f"{hosts} gives it 192.168.1.5"}
    dns.stop()
    other.stop()
    assert hosts.read_text() == ORIGINAL + "192.168.1.5\ta2 a2.lan\n"
    assert dns.status()["short_names_left_out"] == {}
