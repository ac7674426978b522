"""Invites as the rendezvous stores them, and the reasons an enrollment is refused.

The refusal codes travel in enrollment responses (discovery.enroll.messages), so they are
part of the wire protocol: add codes, never rename them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from discovery.stores.errors import StateError

REFUSAL_MALFORMED = "malformed"
REFUSAL_UNKNOWN_INVITE = "unknown_invite"
REFUSAL_FORGED = "forged"
REFUSAL_EXPIRED = "expired"
REFUSAL_USED_UP = "used_up"
REFUSAL_REPLAYED = "replayed"
REFUSAL_NAME_TAKEN = "name_taken"
REFUSAL_KEY_TAKEN = "key_taken"
REFUSAL_MESH_FULL = "mesh_full"
REFUSAL_UNAVAILABLE = "unavailable"     # the rendezvous cannot write its state now (disk full)
REFUSAL_CODES = frozenset({
    REFUSAL_MALFORMED, REFUSAL_UNKNOWN_INVITE, REFUSAL_FORGED, REFUSAL_EXPIRED,
    REFUSAL_USED_UP, REFUSAL_REPLAYED, REFUSAL_NAME_TAKEN, REFUSAL_KEY_TAKEN,
    REFUSAL_MESH_FULL, REFUSAL_UNAVAILABLE,
})


class InviteRefusal(StateError):
    """An enrollment was refused; ``code`` is one of the REFUSAL_* constants, ``message``
    the one-line explanation sent to the joiner."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Invite:
    """An invite as stored at the rendezvous (the secret never leaves this machine except
    in the token). Times are unix seconds; ``expires_at`` None means never."""

    invite_id: str
    secret: bytes
    reusable: bool
    expires_at: int | None
    created_at: float
    uses: int

    def refusal(self, now: float) -> InviteRefusal | None:
        """Why this invite cannot be used at `now` (unix seconds), or None when it can."""
        if self.expires_at is not None and now >= self.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires_at))
            return InviteRefusal(REFUSAL_EXPIRED, f"the invite expired at {when}")
        if not self.reusable and self.uses >= 1:
            return InviteRefusal(REFUSAL_USED_UP,
                                 "the invite was already used (it is single-use); ask for a new one")
        return None

    def __repr__(self) -> str:
        return (f"Invite(invite_id={self.invite_id!r}, reusable={self.reusable}, "
                f"expires_at={self.expires_at}, uses={self.uses})")
