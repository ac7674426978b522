"""The error every port-mapping failure raises (a gateway said no, answered garbage or
nothing at all)."""

from meshwg.util.errors import MeshwgError


class PortMapError(MeshwgError):
    """A port-mapping exchange failed; the message names the protocol, the gateway and why."""


class MalformedMessage(PortMapError, ValueError):
    """A gateway's reply does not parse (wrong size, version, opcode or field)."""
