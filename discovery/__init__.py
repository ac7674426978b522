"""DNS-SD endpoint discovery, enrollment and the mesh daemons of meshwg."""
