"""Errors of the state stores. Each message is one line naming the file, key or value at
fault; all derive from meshwg's MeshwgError so the command line reports them once."""

from __future__ import annotations

from meshwg.util.errors import MeshwgError


class StateError(MeshwgError):
    """A state directory problem; the message is one line naming the file and the cause."""


class StateExistsError(StateError):
    """init() found a state that it must not overwrite."""


class UnknownMemberError(StateError):
    """No member matches the given name, key or address."""


class DuplicateMemberError(StateError):
    """The name, key or address is already taken; ``what`` is "name", "public_key" or
    "address"."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


class MeshFullError(StateError):
    """No free address is left in the mesh network."""


class UnknownInviteError(StateError):
    """No invite, or more than one, matches the given id or id prefix."""


class StorageError(StateError):
    """The state cannot be written now (a full disk, an I/O error); a later try may work."""
