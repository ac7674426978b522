"""The lab library: network-namespace labs for ``meshwg lab``, the tests and the benchmarks.

Bottom up, one job per module:

* ``netns``: the cleanup registry, namespaces, veths, bridges, processes, :func:`poll`;
* ``nat``: the fake internet and home NAT routers (mapping per NAT type);
* ``wg``: WireGuard interfaces read and configured through Debian's ``wg``;
* ``engines``: meshwg or wireguard-go in a namespace, tunnel pairs of them;
* ``traffic``: hashed TCP transfers and a UDP echo probe between namespaces;
* ``lan``, ``mdns_agent``, ``avahi``: a LAN with mDNS members and an avahi observer;
* ``mesh``: the NAT lab running a real rendezvous and members; ``demo``: ``meshwg lab``.
"""
