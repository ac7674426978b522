"""`meshwg netcheck`: what this machine's network lets a mesh member do.

``wire`` (the observation probe format), ``responder`` (the rendezvous's "what is my
address" server, on meshwg.util.service.Service), ``classify`` (I/O-free: observations ->
report), ``probe`` (the client that gathers the observations), ``command`` (the CLI).
"""
