"""The rendezvous side of enrollment: apply one request line to the rendezvous state and
answer it. No sockets (the TCP transport is discovery.enroll.transport); thread-safe, as
the transport serves connections in parallel and the state serialises its transactions.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from discovery.enroll import membership
from discovery.enroll.messages import (
    EnrollmentRequest, EnrollmentResult, MalformedMessage, encode_response, verify_request,
)
from discovery.stores.invites import (
    REFUSAL_FORGED, REFUSAL_MALFORMED, REFUSAL_UNAVAILABLE, REFUSAL_UNKNOWN_INVITE, InviteRefusal,
)
from discovery.stores.errors import StateError
from meshwg.core.crypto import WeakKeyError
from discovery.stores.rendezvous import Member, RendezvousState
from discovery.stores.validate import screen_candidates

log = logging.getLogger("meshwg.enroll")
_UNAVAILABLE = ("the rendezvous cannot record enrollments now (its state cannot be written: "
                "disk full, or its DNS primary unreachable?); nothing was recorded: try again "
                "later")


class RendezvousEnrollment:
    """Applies enrollment requests to a RendezvousState and counts the outcomes. A
    rendezvous on a DNS directory (``state.directory``) checks invites and records members
    in the zone (discovery.stores.zone_rendezvous), so a token of any rendezvous of the
    mesh enrolls at this one; `store` overrides where the membership lives."""

    def __init__(self, state: RendezvousState, store=None):
        self.state = state
        if store is None and state.directory:
            from discovery.stores.zone_rendezvous import access
            store = access(state).membership()
        self.store = store if store is not None else state
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._questions = membership.QuestionLimit()

    def _listed_rendezvous(self) -> tuple:
        """Every rendezvous registered in the zone, for the response (none on an embedded
        state, or when the zone cannot be read now: the member keeps its token's list)."""
        listed = getattr(self.store, "rendezvous", None)
        if not callable(listed):
            return ()
        from discovery.stores.zone_rendezvous import rendezvous_refs
        try:
            return tuple(rendezvous_refs(listed()))
        except StateError as exc:
            log.info("enrollment response without the list of rendezvous: %s", exc)
            return ()

    def count(self, outcome: str) -> None:
        """Count one outcome: "enrolled", a refusal code, or a transport's dropped_*."""
        with self._stats_lock:
            self.stats[outcome] += 1

    def handle(self, line: bytes, now: float, peer: str = "") -> tuple[bytes, Member | None]:
        """Answer one request line (bytes, newline included) from IP `peer` ("" when
        unknown) at `now` (unix seconds): (response line, the new member or None). Never
        raises for hostile input: it is refused, counted and logged in one line. Host
        candidates that are neither LAN addresses nor `peer` are left out (logged)."""
        question = membership.parse_question(line)
        if question is not None:
            return self.answer_membership(question, now, peer), None
        try:
            request = EnrollmentRequest.from_wire(line)
        except MalformedMessage as exc:
            self.count(REFUSAL_MALFORMED)
            log.info("refused a malformed enrollment request from %s: %s", peer or "?", exc)
            return encode_response(b"", None, InviteRefusal(
                REFUSAL_MALFORMED, f"malformed enrollment request: {exc}"), None), None
        try:
            invite = self.store.invite(request.invite_id)
        except StateError as exc:     # the zone cannot be read now
            log.warning("cannot check the invite of %r: %s", request.name, exc)
            self.count(REFUSAL_UNAVAILABLE)
            return encode_response(request.nonce, None, InviteRefusal(
                REFUSAL_UNAVAILABLE, _UNAVAILABLE), None), None
        if invite is None:
            self.count(REFUSAL_UNKNOWN_INVITE)
            return encode_response(request.nonce, None, InviteRefusal(
                REFUSAL_UNKNOWN_INVITE, "the rendezvous does not know this invite "
                                        "(revoked, or a token for another mesh)"), None), None
        refusal = verify_request(request, invite.secret, now)
        if refusal is not None and refusal.code == REFUSAL_FORGED:
            self.count(refusal.code)
            log.info("refused a forged enrollment request from %s", peer or "?")
            return encode_response(request.nonce, None, refusal, None), None
        if refusal is None:
            candidates, dropped = screen_candidates(list(request.host_candidates),
                                                    [peer] if peer else [])
            for reason in dropped:
                log.info("enrollment of %r from %s: left out %s", request.name, peer or "?", reason)
            try:
                member = self.store.redeem_invite(request.invite_id, request.nonce, request.name,
                                                  request.public_key, candidates, now)
            except InviteRefusal as exc:
                refusal = exc
            except StateError as exc:   # a full disk: say so; the joiner may retry later
                log.warning("cannot record the enrollment of %r: %s", request.name, exc)
                refusal = InviteRefusal(REFUSAL_UNAVAILABLE, _UNAVAILABLE)
        if refusal is not None:
            self.count(refusal.code)
            log.info("refused the enrollment of %r from %s: %s", request.name, peer or "?",
                     refusal.message)
            return encode_response(request.nonce, invite.secret, refusal, None), None
        self.count("enrolled")
        st = self.state
        result = EnrollmentResult(
            address=member.mesh_address, network=st.network, zone=st.zone,
            rendezvous_public_key=st.public_key, rendezvous_endpoint=st.endpoint,
            mesh_id=st.mesh_id, dns_address=st.address, dns_port=st.dns_port,
            rendezvous=self._listed_rendezvous())
        return encode_response(request.nonce, invite.secret, None, result), member

    def answer_membership(self, question: membership.Question, now: float, peer: str) -> bytes:
        """The signed answer to "is this key a member?" (discovery.enroll.membership), or
        b"" (the connection is closed unanswered) past the per-source rate or for a
        low-order key; each outcome counted as membership_*."""
        with self._stats_lock:
            allowed = self._questions.allow(peer, now)
        if not allowed:
            self.count("membership_rate_limited")
            return b""
        try:
            status = (membership.MEMBER if self.store.find_member(question.member_key) is not None
                      else membership.NOT_MEMBER)
        except StateError as exc:       # the zone cannot be read now: proves nothing
            log.info("membership question from %s: store unreadable: %s", peer or "?", exc)
            status = membership.UNKNOWN
        try:
            line = membership.answer(question, self.state.private_key, status)
        except WeakKeyError:
            self.count("membership_weak_key")
            return b""
        self.count(f"membership_{status}")
        return line
