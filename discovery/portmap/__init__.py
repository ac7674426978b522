"""Port mapping on the home gateway: PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP IGD.

``natpmp`` and ``pcp`` are I/O-free codecs, ``upnp`` a small SSDP + SOAP client, ``mapper``
the PortMapper thread that obtains, renews and deletes one UDP mapping for the WireGuard
listen port. A mapping is one more host candidate for peers to probe, never the only path.
"""
