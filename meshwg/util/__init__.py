"""Helpers both halves of meshwg share, each written once: endpoints (host:port), atomic
file writes, the error base class and the threaded service loop."""
