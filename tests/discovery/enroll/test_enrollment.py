"""The enrollment protocol over real TCP on 127.0.0.1 (messages, service, transport)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from discovery.enroll.messages import CLOCK_SKEW, MAX_MESSAGE, EnrollmentError, EnrollmentRefused
from discovery.enroll.tokens import Token, decode_token, encode_token
from discovery.enroll.transport import EnrollmentServer, enroll
from discovery.stores.member import MemberState
from discovery.stores.rendezvous import Member, RendezvousState
from meshwg.core import crypto

T0 = 1_750_000_000.0


class Clock:
    """An injectable wall clock shared by the rendezvous and the joiner."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rendezvous:
    def __init__(self, state: RendezvousState, server: EnrollmentServer, clock: Clock):
        self.state, self.server, self.clock = state, server, clock
        self.added: list[Member] = []
        self.port = server.port

    def invite(self, **kw) -> Token:
        return self.state.create_invite(now=self.clock(), enroll_port=self.port, **kw)

    def enroll(self, token: Token, name: str, public_key: bytes | None = None,
               candidates: list[str] | None = None, port: int | None = None,
               clock: Callable[[], float] | None = None):
        return enroll(token, public_key or new_key(), name, candidates or [], timeout=5.0,
                      address=("127.0.0.1", port or self.port), clock=clock or self.clock)


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


def start_rendezvous(state_dir: Path, network: str = "100.64.0.0/24") -> Rendezvous:
    clock = Clock()
    state = RendezvousState.init(state_dir, network, "127.0.0.1:51820", dns_port=5353)
    added: list[Member] = []
    server = EnrollmentServer(state, "127.0.0.1", 0, added.append, clock=clock, timeout=2.0)
    server.start()
    rz = Rendezvous(state, server, clock)
    rz.added = added
    return rz


@pytest.fixture
def rz(tmp_path: Path) -> Iterator[Rendezvous]:
    r = start_rendezvous(tmp_path / "rz")
    try:
        yield r
    finally:
        r.server.stop()
        r.state.close()


class Relay:
    """A real TCP hop between joiner and rendezvous that records and may rewrite the exchange."""

    def __init__(self, upstream_port: int,
                 rewrite_response: Callable[[bytes], bytes] | None = None):
        self.upstream_port = upstream_port
        self.rewrite_response = rewrite_response
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = recv_line(conn)
                self.requests.append(request)
                response = exchange(self.upstream_port, request)
                self.responses.append(response)
                if self.rewrite_response:
                    response = self.rewrite_response(response)
                conn.sendall(response)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    try:
        yield made
    finally:
        for r in made:
            r.close()


def recv_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to the enrollment server and return its whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        return recv_line(s)


def refusal_of(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.reason


# ---------------------------------------------------------------- successful enrollment


def test_enrollment_assigns_first_free_address_and_returns_authenticated_data(
        rz: Rendezvous) -> None:
    tok = decode_token(encode_token(rz.invite(expires_in=600)))  # as pasted by the joiner
    private = crypto.generate_private_key()
    public = crypto.public_key(private)
    result = rz.enroll(tok, "laptop", public, ["192.168.1.20:51820"])
    st = rz.state
    assert result.address == "100.64.0.2"
    assert (result.network, result.zone, result.mesh_id) == (st.network, st.zone, st.mesh_id)
    assert result.rendezvous_public_key == st.public_key
    assert result.rendezvous_endpoint == "127.0.0.1:51820"
    assert (result.dns_address, result.dns_port) == ("100.64.0.1", 5353)
    [member] = st.members()
    assert (member.name, member.public_key, member.mesh_address, member.host_candidates) == \
        ("laptop", public, "100.64.0.2", ["192.168.1.20:51820"])
    assert [m.name for m in rz.added] == ["laptop"]  # callback ran before the answer
    assert rz.server.stats["enrolled"] == 1
    # the joiner can persist what it learned
    ms = MemberState.from_enrollment(private, "laptop", result)
    assert (ms.address, ms.rendezvous_public_key, ms.public_key) == \
        ("100.64.0.2", st.public_key, public)


def test_request_carries_neither_private_key_nor_secret(rz: Rendezvous,
                                                      relays: list[Relay]) -> None:
    relay = Relay(rz.port)
    relays.append(relay)
    tok = rz.invite()
    private = crypto.generate_private_key()
    public = crypto.public_key(private)
    rz.enroll(tok, "laptop", public, port=relay.port)
    [sent] = relay.requests
    for secret in (private, tok.secret):
        for form in (secret, secret.hex().encode(), base64.b64encode(secret),
                     base64.urlsafe_b64encode(secret).rstrip(b"=")):
            assert form not in sent
    assert base64.b64encode(public) in sent  # sanity: we did capture the request


# ---------------------------------------------------------------- refusals


def test_replayed_request_is_refused(rz: Rendezvous, relays: list[Relay]) -> None:
    relay = Relay(rz.port)
    relays.append(relay)
    rz.enroll(rz.invite(reusable=True), "laptop", port=relay.port)
    [sent] = relay.requests
    answer = json.loads(exchange(rz.port, sent))
    assert (answer["status"], answer["reason"]) == ("refused", "replayed")
    assert "replayed" in answer["message"]
    assert [m.name for m in rz.state.members()] == ["laptop"]


@pytest.mark.parametrize("offset", [CLOCK_SKEW + 30, -(CLOCK_SKEW + 30)])
def test_request_outside_clock_window_is_refused(rz: Rendezvous, offset: float) -> None:
    tok = rz.invite()
    with pytest.raises(EnrollmentRefused, match="rendezvous clock") as info:
        rz.enroll(tok, "laptop", clock=Clock(T0 + offset))
    assert refusal_of(info) == "replayed" and info.value.authenticated
    assert rz.state.members() == []
    assert rz.enroll(tok, "laptop", clock=Clock(T0 + CLOCK_SKEW - 1)).address == "100.64.0.2"


def test_expired_invite_is_refused(rz: Rendezvous) -> None:
    tok = rz.invite(expires_in=300)
    rz.clock.now = T0 + 301
    with pytest.raises(EnrollmentRefused, match="expired") as info:
        rz.enroll(tok, "laptop")
    assert refusal_of(info) == "expired"
    assert rz.state.members() == []


def test_single_use_invite_cannot_be_used_twice(rz: Rendezvous) -> None:
    tok = rz.invite()
    rz.enroll(tok, "first")
    with pytest.raises(EnrollmentRefused, match="already used") as info:
        rz.enroll(tok, "second")
    assert refusal_of(info) == "used_up"
    assert [m.name for m in rz.state.members()] == ["first"]


def test_reusable_invite_works_twice(rz: Rendezvous) -> None:
    tok = rz.invite(reusable=True)
    assert rz.enroll(tok, "first").address == "100.64.0.2"
    assert rz.enroll(tok, "second").address == "100.64.0.3"


def test_forged_proof_is_refused(rz: Rendezvous) -> None:
    tok = rz.invite()
    forged = dataclasses.replace(tok, secret=os.urandom(32))
    with pytest.raises(EnrollmentRefused, match="proof does not match") as info:
        rz.enroll(forged, "mallory")
    assert refusal_of(info) == "forged" and not info.value.authenticated
    assert rz.state.members() == []
    assert rz.enroll(tok, "honest").address == "100.64.0.2"  # the forgery did not burn it


def test_unknown_invite_is_refused(rz: Rendezvous) -> None:
    tok = dataclasses.replace(rz.invite(), invite_id=os.urandom(16).hex())
    with pytest.raises(EnrollmentRefused, match="does not know this invite") as info:
        rz.enroll(tok, "laptop")
    assert refusal_of(info) == "unknown_invite"


def test_name_and_key_already_enrolled_are_refused(rz: Rendezvous) -> None:
    tok = rz.invite(reusable=True)
    key = new_key()
    rz.enroll(tok, "laptop", key)
    with pytest.raises(EnrollmentRefused, match="'laptop' is already enrolled") as info:
        rz.enroll(tok, "laptop")
    assert refusal_of(info) == "name_taken"
    with pytest.raises(EnrollmentRefused, match="already enrolled as 'laptop'") as info:
        rz.enroll(tok, "other", key)
    assert refusal_of(info) == "key_taken"


def test_full_mesh_is_refused(tmp_path: Path) -> None:
    r = start_rendezvous(tmp_path / "rz", "10.8.0.0/30")  # rendezvous .1, one member .2
    try:
        tok = r.invite(reusable=True)
        assert r.enroll(tok, "one").address == "10.8.0.2"
        with pytest.raises(EnrollmentRefused, match="no free address") as info:
            r.enroll(tok, "two")
        assert refusal_of(info) == "mesh_full"
    finally:
        r.server.stop()
        r.state.close()


# ---------------------------------------------------------------- hostile responses / input


def _tamper_address(line: bytes) -> bytes:
    doc = json.loads(line)
    doc["address"] = "100.64.0.99"
    return json.dumps(doc).encode() + b"\n"


def _strip_mac(line: bytes) -> bytes:
    doc = json.loads(line)
    del doc["mac"]
    return json.dumps(doc).encode() + b"\n"


def _fake_refusal(line: bytes) -> bytes:
    doc = json.loads(line)
    fake = {"v": 1, "status": "refused", "reason": "expired", "message": "go away",
            "mac": doc["mac"]}
    return json.dumps(fake).encode() + b"\n"


@pytest.mark.parametrize("rewrite, match", [
    (_tamper_address, "failed authentication"),
    (_strip_mac, "not authenticated"),
    (_fake_refusal, "failed authentication"),
    (lambda line: b"garbage\n", "invalid response"),
])
def test_joiner_rejects_tampered_response(rz: Rendezvous, relays: list[Relay], rewrite,
                                          match: str) -> None:
    relay = Relay(rz.port, rewrite_response=rewrite)
    relays.append(relay)
    with pytest.raises(EnrollmentError, match=match) as info:
        rz.enroll(rz.invite(), "laptop", port=relay.port)
    assert not isinstance(info.value, EnrollmentRefused)
    assert json.loads(relay.responses[0])["status"] == "ok"  # the real answer was fine


def test_malformed_requests_are_refused_and_counted(rz: Rendezvous) -> None:
    answer = json.loads(exchange(rz.port, b'{"v":1,"invite":"zz"}\n'))
    assert (answer["status"], answer["reason"]) == ("refused", "malformed")
    assert "invite id" in answer["message"]
    answer = json.loads(exchange(rz.port, b"\xff\xfe not json\n"))
    assert answer["reason"] == "malformed"
    assert rz.server.stats["malformed"] == 2


def test_oversized_request_is_dropped(rz: Rendezvous) -> None:
    try:
        answer = exchange(rz.port, b"x" * (MAX_MESSAGE + 100))  # no newline within the limit
    except ConnectionResetError:  # closed with our excess bytes unread
        answer = b""
    assert answer == b""
    assert rz.server.stats["dropped_unreadable"] == 1


def test_unreachable_rendezvous_is_a_clear_error(rz: Rendezvous) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(EnrollmentError, match=f"127.0.0.1:{closed_port}: Connection refused") \
                as info:
            rz.enroll(rz.invite(), "laptop", port=closed_port)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- durability / concurrency


def test_enrolled_members_survive_restart_and_removal(tmp_path: Path) -> None:
    r = start_rendezvous(tmp_path / "rz")
    tok = r.invite(reusable=True)
    r.enroll(tok, "alpha")
    r.enroll(tok, "beta")
    r.server.stop()
    r.state.close()
    state = RendezvousState.open(tmp_path / "rz")
    server = EnrollmentServer(state, "127.0.0.1", 0, clock=r.clock).start()
    try:
        assert [(m.name, m.mesh_address) for m in state.members()] == \
            [("alpha", "100.64.0.2"), ("beta", "100.64.0.3")]
        assert state.remove_member("alpha").mesh_address == "100.64.0.2"
        again = enroll(tok, new_key(), "gamma", [], address=("127.0.0.1", server.port),
                       clock=r.clock)
        assert again.address == "100.64.0.2"  # the freed address is reused
    finally:
        server.stop()
        state.close()


def test_concurrent_enrollments_get_distinct_addresses(rz: Rendezvous) -> None:
    tok = rz.invite(reusable=True)
    results: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def join(i: int) -> None:
        try:
            start.wait(5)
            results[f"m{i}"] = rz.enroll(tok, f"m{i}").address
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(results.values(), key=lambda a: int(a.rsplit(".", 1)[1])) == \
        [f"100.64.0.{i}" for i in range(2, 10)]
    assert {m.name: m.mesh_address for m in rz.state.members()} == results
    assert len(rz.added) == 8


def test_server_stop_is_prompt(tmp_path: Path) -> None:
    r = start_rendezvous(tmp_path / "rz")
    began = time.monotonic()
    r.server.stop()
    r.state.close()
    assert time.monotonic() - began < 1.0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", r.port), timeout=1).close()


def test_server_stop_is_prompt_with_an_idle_connection(rz: Rendezvous) -> None:
    rz.server.timeout = 30.0     # a joiner that says nothing must not hold up stop()
    with socket.create_connection(("127.0.0.1", rz.port), timeout=5) as idle:
        idle.sendall(b'{"v":1')                 # a request begun, never finished
        began = time.monotonic()
        rz.server.stop()
        assert time.monotonic() - began < 1.0
        try:
            assert idle.recv(1) == b""          # closed...
        except ConnectionResetError:            # ...or reset, our bytes unread
            pass
    assert rz.server.stats["dropped_unreadable"] == 0 and rz.state.members() == []
