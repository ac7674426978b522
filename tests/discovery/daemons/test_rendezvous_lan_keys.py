"""The rendezvous publishes members' LAN keys (TXT lk=, discovery/lan/lankey.py) and keeps
publishing them across a restart: it takes them from the directory it published last
(its directory cache), so members' LAN peers do not distrust them until they report
again. No engine: the daemon is built, not started, and publishes into its Directory."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.daemons.rendezvous import RendezvousDaemon
from discovery.lan.lankey import LAN_KEY_TXT, lan_key_txt, public_lan_key
from discovery.stores.rendezvous import RendezvousState

WG = b"\x42" * 32


def _published(daemon: RendezvousDaemon) -> dict:
    daemon._members = daemon.state.members()
    daemon._publish()
    return {record.public_key: record for record in daemon._published or []}


def test_lan_keys_are_published_and_survive_a_restart(tmp_path) -> None:
    state_dir = tmp_path / "rz"
    RendezvousState.init(state_dir, "100.64.0.0/24", "198.51.100.7:51820").close()
    lk = public_lan_key(Ed25519PrivateKey.generate())
    daemon = RendezvousDaemon(str(state_dir))
    try:
        member = daemon.state.add_member("a2", WG)
        daemon._lan_key_reported(member.mesh_address, lk)
        assert _published(daemon)[WG].extra[LAN_KEY_TXT] == lan_key_txt(lk)
    finally:
        daemon.state.close()
    # the restarted rendezvous: nothing reported yet, the key still published
    restarted = RendezvousDaemon(str(state_dir))
    try:
        assert _published(restarted)[WG].extra[LAN_KEY_TXT] == lan_key_txt(lk)
    finally:
        restarted.state.close()
