"""`rendezvous init --directory` without a DNS server: the --directory list, option
combinations, a bad key file (FILE:LINE) and an unreachable server are one-line errors
that leave no state (the lab test, test_zone_rendezvous_lab.py, runs it against BIND/Knot)."""

from __future__ import annotations

import socket

import pytest

from discovery.stores.errors import StateError
from discovery.stores.zone_rendezvous import (
    DirectoryError, format_directory, init_on_directory, parse_directory,
)
from tests.discovery.daemons.test_mesh_cli import one_line_error, run

KEY = 'key "meshwg-update" {\n\talgorithm hmac-sha256;\n\tsecret "%s";\n};\n' % ("A" * 43 + "=")


@pytest.mark.parametrize("text, servers", [
    ("dns://10.0.0.1", ["10.0.0.1:53"]),
    ("dns://10.0.0.1:5353, dns://ns2.example", ["10.0.0.1:5353", "ns2.example:53"]),
    ("DNS://[2001:db8::1]", ["[2001:db8::1]:53"]),
    ("dns://2001:db8::1", ["[2001:db8::1]:53"]),
    ("dns://[2001:db8::1]:54/", ["[2001:db8::1]:54"]),
])
def test_directory_lists_the_primary_first(text, servers) -> None:
    assert parse_directory(text) == servers
    assert parse_directory(format_directory(servers)) == servers


@pytest.mark.parametrize("text", ["10.0.0.1", "", "dns://", "dns://a:0", "dns://a b",
                                  "dns://a,http://b", ",".join(["dns://a"] * 9)])
def test_bad_directories_are_refused(text) -> None:
    with pytest.raises(DirectoryError, match="--directory"):
        parse_directory(text)


def free_tcp_port() -> int:
    with socket.socket() as s:          # nothing listens there once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_and_bad_key_leave_no_state(tmp_path) -> None:
    key = tmp_path / "update.key"
    key.write_text(KEY)
    state = tmp_path / "rdv"
    port = free_tcp_port()
    with pytest.raises(DirectoryError, match=f"cannot reach DNS server 127.0.0.1:{port}"):
        init_on_directory(state, "192.0.2.1:51820", "mesh.test", f"dns://127.0.0.1:{port}",
                          str(key), network="100.64.0.0/24", timeout=5)
    assert not state.exists()
    bad = tmp_path / "bad.key"
    bad.write_text('key "meshwg-update" {\n\talgorithm hmac-sha256;\n\tsecret "no!";\n};\n')
    with pytest.raises(StateError, match=f"{bad}:3"):
        init_on_directory(state, "192.0.2.1:51820", "mesh.test", f"dns://127.0.0.1:{port}",
                          str(bad), network="100.64.0.0/24")
    assert not state.exists()


def test_cli_options_of_init_on_a_directory(tmp_path) -> None:
    key = tmp_path / "update.key"
    key.write_text(KEY)
    state = str(tmp_path / "rdv")
    base = ["rendezvous", "init", "--state", state, "--endpoint", "192.0.2.1:51820"]
    cases = [
        ([], "--network CIDR is required"),
        (["--network", "100.64.0.0/24", "--tsig-key", str(key)], "--tsig-key needs --directory"),
        (["--directory", "dns://127.0.0.1:1", "--zone", "mesh.test"],
         "--directory needs --tsig-key FILE and --zone ZONE"),
        (["--directory", "127.0.0.1", "--zone", "mesh.test", "--tsig-key", str(key)],
         "expected dns://HOST[:PORT]"),
        (["--directory", f"dns://127.0.0.1:{free_tcp_port()}", "--zone", "mesh.test",
          "--tsig-key", str(key), "--network", "100.64.0.0/24"], "cannot reach DNS server"),
        (["--directory", "dns://no-such-host.invalid", "--zone", "mesh.test",
          "--tsig-key", str(key), "--network", "100.64.0.0/24"],
         "'no-such-host.invalid' does not resolve"),
        (["--directory", f"dns://127.0.0.1:{free_tcp_port()}", "--zone", "bad zone!",
          "--tsig-key", str(key), "--network", "100.64.0.0/24"],
         "--zone 'bad zone!': expected a DNS name"),
    ]
    for extra, expected in cases:
        err = one_line_error(run(*base, *extra))
        assert expected in err and err.startswith("meshwg: rendezvous init:"), err
        assert not (tmp_path / "rdv").exists()



def test_a_bad_zone_is_refused_before_any_server_is_asked(tmp_path, monkeypatch) -> None:
    key = tmp_path / "update.key"
    key.write_text(KEY)
    asked = []
    monkeypatch.setattr("discovery.stores.zone_rendezvous.ZoneAccess.membership",
                        lambda *a, **k: asked.append(a) or pytest.fail("a server was asked"))
    for zone in ("bad zone!", "a..b", ".", "-x.test", "x" * 64 + ".test"):
        with pytest.raises(StateError, match="--zone .*expected a DNS name"):
            init_on_directory(tmp_path / "rdv", "192.0.2.1:51820", zone, "dns://127.0.0.1",
                              str(key), network="100.64.0.0/24")
    assert not asked and not (tmp_path / "rdv").exists()


def test_a_read_key_copied_in_after_init_is_used(tmp_path) -> None:
    """The hint for a server that does not know the update key: a rendezvous made without
    --transfer-key takes tsig-transfer.key copied into its state directory."""
    from discovery.stores.rendezvous import RendezvousState
    from discovery.stores.zone_rendezvous import (KEY_FILE, META_DIRECTORY, META_TRANSFER_KEY,
                                                  TRANSFER_KEY_FILE, access)
    state = tmp_path / "rdv"
    RendezvousState.init(state, "100.80.0.0/24", "192.0.2.1:51820", "mesh.test.",
                         address="100.80.0.1",
                         extra_meta={META_DIRECTORY: "dns://127.0.0.1", META_TRANSFER_KEY: "0"}).close()
    (state / KEY_FILE).write_text(KEY)
    with RendezvousState.open(state) as st:
        assert access(st).read_key is None
        (state / TRANSFER_KEY_FILE).write_text(KEY.replace("meshwg-update", "meshwg-transfer"))
        assert access(st).read_key.name == "meshwg-transfer"
