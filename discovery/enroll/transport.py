"""Enrollment over TCP: the rendezvous's server and the joiner's client `enroll()`.

One newline-terminated message each way per connection (discovery.enroll.messages). The
server runs on meshwg.util.service.Service: its threads block on their sockets without
polling, so an idle server costs no CPU, and stop() ends them at once. Each connection
has `timeout` seconds to deliver its whole request (a deadline, not an idle timeout: a
client that drips a byte at a time is cut as one that sends nothing); at most
`max_connections` are served at a time, at most `max_per_source` from one address, so
slow (slowloris) connections from a few hosts cannot keep joiners out (more are closed
and counted as dropped_busy).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from typing import Callable

from meshwg.util.endpoint import format_endpoint
from meshwg.util.service import Service, StreamReader
from meshwg.util.resolve import family_of

from meshwg.core.crypto import public_key
from discovery.enroll import membership
from discovery.enroll.messages import (
    MAX_MESSAGE, EnrollmentError, EnrollmentRefused, EnrollmentResult, make_request, parse_response,
)
from discovery.enroll.service import RendezvousEnrollment
from discovery.enroll.tokens import Token
from discovery.stores.rendezvous import Member, RendezvousState

log = logging.getLogger(__name__)

class EnrollmentServer:
    """Threaded TCP enrollment service (default port: the rendezvous's enroll port).

    `on_member_added(member)` runs in the connection's thread before the joiner gets its
    answer; `clock()` gives unix seconds (injectable for tests). Raises EnrollmentError
    from start() when the port cannot be bound."""

    def __init__(self, state: RendezvousState, address: str = "0.0.0.0", port: int | None = None,
                 on_member_added: Callable[[Member], None] | None = None, *,
                 clock: Callable[[], float] = time.time, timeout: float = 5.0,
                 max_connections: int = 32, max_per_source: int = 4):
        self.core = RendezvousEnrollment(state)
        self.address = address
        self._requested_port = state.enroll_port if port is None else port
        self.on_member_added = on_member_added
        self.clock = clock
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self._listener: socket.socket | None = None
        self._service: Service | None = None

    @property
    def stats(self) -> Counter[str]:
        """Counts per outcome: enrolled, each refusal code, dropped_* for unanswered input."""
        return self.core.stats

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("enrollment server is not started")
        return self._listener.getsockname()[1]

    def start(self) -> "EnrollmentServer":
        family = family_of(self.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
            sock.bind((self.address, self._requested_port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise EnrollmentError(f"cannot listen for enrollments on tcp "
                                  f"{format_endpoint((self.address, self._requested_port))}: "
                                  f"{exc.strerror}") from None
        sock.setblocking(False)
        self._listener = sock
        self._service = Service("enroll")
        self._service.on_close(sock.close)
        svc = self._service
        svc.spawn(lambda: svc.serve_connections(
            sock, lambda conn, peer: self._serve(svc, conn, peer), limit=self.max_connections,
            name="enroll-conn", on_reject=lambda: self.core.count("dropped_busy"),
            per_source=self.max_per_source),
            name="enroll-accept")
        return self

    def stop(self) -> None:
        """Stop accepting and end every connection (a request being answered finishes)."""
        if self._service is None:
            return
        self._service.stop(timeout=self.timeout + 1.0)
        self._service = None

    def __enter__(self) -> "EnrollmentServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, svc: Service, conn: socket.socket, peer: tuple) -> None:
        conn.settimeout(self.timeout)      # bounds sendall; reads wait on the service
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = StreamReader(conn, svc, deadline=time.monotonic() + self.timeout).read_line(MAX_MESSAGE)
        if line is None:
            if not svc.stopping:
                self.core.count("dropped_unreadable")
            return
        response, member = self.core.handle(line, self.clock(), peer[0])
        if member is not None:
            log.info("enrolled %s (%s) from %s", member.name, member.mesh_address, peer[0])
            if self.on_member_added is not None:
                try:
                    self.on_member_added(member)
                except Exception:
                    log.exception("on_member_added failed for %s", member.name)
        try:
            conn.sendall(response)
        except OSError:
            self.core.count("dropped_send_failed")


def enroll_any(token: Token, public_key: bytes, name: str, host_candidates: list[str],
               timeout: float = 5.0, *, clock: Callable[[], float] = time.time,
               on_attempt: Callable[[str, EnrollmentError], None] | None = None) -> EnrollmentResult:
    """enroll() at the rendezvous the token names, in turn, until one answers: the next is
    tried when one cannot be reached, answers badly, or refuses without proof of the
    invite (it may not know the invite yet); a refusal signed with the invite is final.
    `on_attempt(where, error)` hears of each failed attempt that another one follows.
    Raises the first error when none enrolled."""
    first: EnrollmentError | None = None
    listed = token.rendezvous
    for i, ref in enumerate(listed):
        try:
            return enroll(token, public_key, name, host_candidates, timeout,
                          address=ref.enroll_address, clock=clock, rendezvous_key=ref.public_key)
        except EnrollmentRefused as exc:
            if exc.authenticated:
                raise
            failure: EnrollmentError = exc
        except EnrollmentError as exc:
            failure = exc
        first = first or failure
        if on_attempt is not None and i + 1 < len(listed):
            on_attempt(ref.endpoint, failure)
    assert first is not None
    raise first


def enroll(token: Token, public_key: bytes, name: str, host_candidates: list[str],
           timeout: float = 5.0, *, address: tuple[str, int] | None = None,
           clock: Callable[[], float] = time.time,
           rendezvous_key: bytes | None = None) -> EnrollmentResult:
    """Ask the rendezvous named in `token` to admit `public_key` (32 bytes) as `name`,
    announcing `host_candidates` ("HOST:PORT"); `timeout` seconds bound the exchange.

    `address` overrides (host, port) of the enrollment service (default: the token's
    endpoint host and enroll port), `rendezvous_key` the key the response must name
    (default: the token's first rendezvous). Raises ValueError for bad arguments,
    EnrollmentRefused with the rendezvous's reason, EnrollmentError for network or
    response problems.
    """
    request = make_request(token, public_key, name, host_candidates, clock())
    host, port = address or token.enroll_address
    where = f"tcp {format_endpoint((host, port))}"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request.to_wire())
            line = StreamReader(sock, deadline=deadline).read_line(MAX_MESSAGE)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EnrollmentError(f"cannot reach the rendezvous enrollment service at {where}: "
                              f"{reason}") from None
    if line is None:
        raise EnrollmentError(f"no complete response from the rendezvous at {where} "
                              f"within {timeout:g} s")
    return parse_response(line, request, token, where, rendezvous_key)


def ask_membership(member_private: bytes, rendezvous_key: bytes, address: tuple[str, int],
                   timeout: float = 3.0) -> str:
    """Ask the rendezvous (`rendezvous_key`, enrollment service at `address`) whether this
    member's key is enrolled: membership.MEMBER, NOT_MEMBER or UNKNOWN, verified
    (discovery.enroll.membership). Raises EnrollmentError when it cannot be reached or
    does not answer within `timeout` seconds, membership.BadAnswer for an answer that does
    not verify (count it: it was not the rendezvous)."""
    question = membership.new_question(public_key(member_private))
    where = f"tcp {format_endpoint(address)}"
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(question.to_wire())
            line = StreamReader(sock, deadline=time.monotonic() + timeout).read_line(
                membership.MAX_LINE)
    except OSError as exc:
        raise EnrollmentError(f"cannot reach the rendezvous at {where}: "
                              f"{exc.strerror or exc or type(exc).__name__}") from None
    if line is None:
        raise EnrollmentError(f"no membership answer from the rendezvous at {where} "
                              f"within {timeout:g} s")
    return membership.verify_answer(line, question, member_private, rendezvous_key)
