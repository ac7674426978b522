"""The one base class of meshwg's errors.

Every error a user or a peer can cause derives from MeshwgError, whose message is one line
naming what and where (FILE:LINE, key, value). The command line catches MeshwgError once
and prints it; anything else is a bug and keeps its traceback.
"""


class MeshwgError(Exception):
    """A failure with a one-line message meant for the user (what, where, which value)."""
