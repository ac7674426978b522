"""A rendezvous on a DNS directory names the mesh's other rendezvous (issue 10): the token
of `meshwg invite` lists every other rendezvous registered in the zone (format 3), and the
enrollment response lists them all (signed with the invite). No DNS server: the zone's
registered rendezvous are given as the zone parser yields them (RendezvousEntry)."""

from __future__ import annotations

import time
from pathlib import Path

from discovery.enroll.messages import make_request, parse_response
from discovery.enroll.service import RendezvousEnrollment
from discovery.enroll.tokens import MAX_OTHERS, RendezvousRef, decode_token, encode_token
from discovery.stores import zone_rendezvous as zr
from discovery.stores.rendezvous import RendezvousState
from discovery.stores.zone_membership import RendezvousEntry, ZoneUnavailable
from tests.discovery.enroll.test_enrollment import new_key

PIN = bytes(range(32))


def entries(own: bytes) -> list[RendezvousEntry]:
    """The zone's rendezvous: this one (own), B and C (C registered first, B's address lower)."""
    return [RendezvousEntry(new_key(), "198.51.100.3:51820", "198.51.100.3:7003", "100.64.0.3"),
            RendezvousEntry(own, "127.0.0.1:51820", "127.0.0.1:7001", "100.64.0.1"),
            RendezvousEntry(new_key(), "[2001:db8::2]:51820", "[2001:db8::2]:7002", "100.64.0.2",
                            pin=PIN)]


class ZoneListing:
    """The membership of a real embedded state, plus the zone's list of rendezvous (or a
    zone that cannot be read now)."""

    def __init__(self, state: RendezvousState, listed: list[RendezvousEntry] | None):
        self.state, self.listed = state, listed

    def __getattr__(self, name: str):
        return getattr(self.state, name)

    def rendezvous(self) -> list[RendezvousEntry]:
        if self.listed is None:
            raise ZoneUnavailable("cannot reach 10.0.0.1:53")
        return list(self.listed)


def test_refs_carry_key_endpoint_enroll_port_address_and_pin() -> None:
    own = new_key()
    listed = entries(own)
    refs = zr.rendezvous_refs(listed, leave_out=own)
    assert refs == [RendezvousRef(listed[2].public_key, "[2001:db8::2]:51820", 7002, "100.64.0.2", PIN),
                    RendezvousRef(listed[0].public_key, "198.51.100.3:51820", 7003, "100.64.0.3")]
    assert [r.mesh_address for r in zr.rendezvous_refs(listed)] == ["100.64.0.1", "100.64.0.2",
                                                                    "100.64.0.3"]
    many = [RendezvousEntry(new_key(), f"10.0.0.{i}:51820", f"10.0.0.{i}:7000", f"100.64.0.{i}")
            for i in range(1, MAX_OTHERS + 4)]
    assert len(zr.rendezvous_refs(many)) == MAX_OTHERS


def test_invite_token_names_every_other_rendezvous_of_the_zone(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "a", "100.64.0.0/24", "127.0.0.1:51820") as st:
        invite = st.invite(st.create_invite().invite_id)
        listed = entries(st.public_key)
        token = zr.invite_token(st, invite, rendezvous=ZoneListing(st, listed).rendezvous())
        decoded = decode_token(encode_token(token))
        assert decoded.rendezvous_public_key == st.public_key
        assert [r.public_key for r in decoded.others] == [listed[2].public_key, listed[0].public_key]
        assert [(r.endpoint, r.enroll_port, r.mesh_address, r.pin) for r in decoded.others] == [
            ("[2001:db8::2]:51820", 7002, "100.64.0.2", PIN),
            ("198.51.100.3:51820", 7003, "100.64.0.3", b"")]
        alone = zr.invite_token(st, invite)   # the only rendezvous
        assert alone.others == ()


def _enroll(state: RendezvousState, listed: list[RendezvousEntry] | None):
    token = state.create_invite(reusable=True)
    core = RendezvousEnrollment(state, store=ZoneListing(state, listed))
    request = make_request(token, new_key(), f"m{len(state.members())}", [], time.time())
    line, member = core.handle(request.to_wire(), time.time())
    assert member is not None
    return parse_response(line, request, token)


def test_enrollment_response_lists_every_rendezvous_of_the_zone(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "a", "100.64.0.0/24", "127.0.0.1:51820") as st:
        listed = entries(st.public_key)
        result = _enroll(st, listed)
        assert [(r.public_key, r.enroll_port, r.mesh_address) for r in result.rendezvous] == [
            (st.public_key, 7001, "100.64.0.1"), (listed[2].public_key, 7002, "100.64.0.2"),
            (listed[0].public_key, 7003, "100.64.0.3")]
        assert _enroll(st, None).rendezvous == ()   # the zone unreadable now: enrolled, no list


def test_an_embedded_rendezvous_lists_none(tmp_path: Path) -> None:
    with RendezvousState.init(tmp_path / "a", "100.64.0.0/24", "127.0.0.1:51820") as st:
        token = st.create_invite()
        request = make_request(token, new_key(), "laptop", [], time.time())
        line, member = RendezvousEnrollment(st).handle(request.to_wire(), time.time())
        assert member is not None and parse_response(line, request, token).rendezvous == ()
