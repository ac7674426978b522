"""A minimal UPnP IGD client: SSDP discovery, then SOAP GetExternalIPAddress,
AddPortMapping and DeletePortMapping on the gateway's WANIPConnection (or
WANPPPConnection) service.

No PyPI UPnP client fits here (the maintained ones are asyncio media stacks; miniupnpc's
binding needs a C build), so this is the stdlib's http.client and xml.etree with bounds:
an SSDP reply is read up to :data:`MAX_SSDP` bytes and must come from the gateway, a
description or SOAP reply up to :data:`MAX_XML` bytes, documents with a DTD are refused
(no entity expansion), and every URL must point at the gateway. Sources: UPnP Device
Architecture 1.1 section 1.3 (M-SEARCH), WANIPConnection:1 service template section 2.4
(actions and error codes 718 ConflictInMappingEntry, 725 OnlyPermanentLeasesSupported).
"""

from __future__ import annotations

import http.client
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin, urlsplit

from meshwg.util.numbers import bounded_int

from discovery.portmap.errors import MalformedMessage, PortMapError

SSDP_ADDRESS = ("239.255.255.250", 1900)
SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
SERVICE_TYPES = ("urn:schemas-upnp-org:service:WANIPConnection:2",
                 "urn:schemas-upnp-org:service:WANIPConnection:1",
                 "urn:schemas-upnp-org:service:WANPPPConnection:1")
MAX_SSDP = 2048
MAX_XML = 65536
CONFLICT_IN_MAPPING_ENTRY = 718
ONLY_PERMANENT_LEASES = 725

Wait = Callable[[socket.socket, float], bool]


class UpnpError(PortMapError):
    """A SOAP action failed; ``code`` is the UPnP error code (0 when there was none)."""

    def __init__(self, action: str, code: int, text: str):
        self.code = code
        super().__init__(f"UPnP {action}: error {code} ({text})")


@dataclass(frozen=True)
class Gateway:
    """An IGD's connection service: its SOAP control URL and service type."""
    control_url: str
    service_type: str


def msearch(search_target: str = SEARCH_TARGET) -> bytes:
    """The SSDP M-SEARCH request (UDA 1.1 section 1.3.2), MX 1 second."""
    return ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
            'MAN: "ssdp:discover"\r\nMX: 1\r\n'
            f"ST: {search_target}\r\n\r\n").encode()


def parse_ssdp_location(data: bytes) -> str:
    """The LOCATION header of an SSDP reply ("HTTP/1.1 200 OK" and headers, at most
    MAX_SSDP bytes). Raises MalformedMessage."""
    if len(data) > MAX_SSDP:
        raise MalformedMessage(f"SSDP reply of {len(data)} bytes (max {MAX_SSDP})")
    lines = data.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.") or " 200" not in lines[0]:
        raise MalformedMessage(f"SSDP reply starts {lines[0][:40]!r}")
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "location":
            location = value.strip()
            if urlsplit(location).scheme != "http":
                raise MalformedMessage(f"SSDP LOCATION {location[:80]!r} is not http")
            return location
    raise MalformedMessage("SSDP reply without LOCATION")


def parse_xml(data: bytes) -> ET.Element:
    """Parse a bounded XML document without a DTD. Raises MalformedMessage."""
    if len(data) > MAX_XML:
        raise MalformedMessage(f"UPnP XML of {len(data)} bytes (max {MAX_XML})")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedMessage("UPnP XML with a DTD refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise MalformedMessage(f"UPnP XML does not parse: {exc}") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child_text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def parse_description(data: bytes, location: str) -> Gateway:
    """The first WANIPConnection/WANPPPConnection service of a device description
    (preferring SERVICE_TYPES' order), its control URL made absolute. MalformedMessage
    when there is none."""
    root = parse_xml(data)
    base = location
    for element in root.iter():
        if _local(element.tag) == "URLBase" and element.text:
            base = element.text.strip()
    found: dict[str, str] = {}
    for element in root.iter():
        if _local(element.tag) == "service":
            kind = _child_text(element, "serviceType")
            control = _child_text(element, "controlURL")
            if kind in SERVICE_TYPES and control and kind not in found:
                found[kind] = urljoin(base, control)
    for kind in SERVICE_TYPES:
        if kind in found:
            return Gateway(found[kind], kind)
    raise MalformedMessage("UPnP description has no WANIPConnection/WANPPPConnection service")


def soap_body(service_type: str, action: str, arguments: dict[str, str]) -> bytes:
    """A SOAP 1.1 envelope calling ``action`` with ``arguments`` (values XML-escaped)."""
    call = ET.Element(f"u:{action}", {"xmlns:u": service_type})
    for name, value in arguments.items():
        ET.SubElement(call, name).text = value
    inner = ET.tostring(call, encoding="unicode")
    return ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
            'envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
            f"<s:Body>{inner}</s:Body></s:Envelope>\r\n").encode()


def parse_soap_reply(action: str, status: int, data: bytes) -> dict[str, str]:
    """The output arguments of a SOAP reply (status 200), or UpnpError with the UPnP
    errorCode of a fault (status 500)."""
    root = parse_xml(data)
    if status != 200:
        code = text = ""
        for element in root.iter():
            if _local(element.tag) == "errorCode":
                code = (element.text or "").strip()
            elif _local(element.tag) == "errorDescription":
                text = (element.text or "").strip()
        raise UpnpError(action, bounded_int(code, 65535) or 0, text or f"HTTP {status}")
    for element in root.iter():
        if _local(element.tag) == f"{action}Response":
            return {_local(child.tag): (child.text or "").strip() for child in element}
    raise MalformedMessage(f"UPnP {action} reply without {action}Response")


class UpnpClient:
    """Talks to the IGD on ``gateway`` (its LAN address) from ``local_address``; every
    network step is bounded by ``timeout`` seconds."""

    def __init__(self, gateway: str, local_address: str, timeout: float = 1.0):
        self.gateway_address = gateway
        self.local_address = local_address
        self.timeout = timeout
        self.gateway: Gateway | None = None

    def discover(self, wait: Wait) -> Gateway:
        """M-SEARCH (multicast and unicast to the gateway), take the first reply from the
        gateway, fetch its description. ``wait(sock, seconds)`` blocks until readable."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.local_address, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            for target in (SSDP_ADDRESS, (self.gateway_address, SSDP_ADDRESS[1])):
                try:
                    sock.sendto(msearch(), target)
                except OSError:
                    pass
            deadline = time.monotonic() + self.timeout
            location = None
            while location is None:
                left = deadline - time.monotonic()
                if left <= 0 or not wait(sock, left):
                    raise PortMapError(f"UPnP: no SSDP reply from {self.gateway_address}")
                try:
                    data, source = sock.recvfrom(MAX_SSDP + 1)
                except (BlockingIOError, InterruptedError):
                    continue
                if source[0] != self.gateway_address:
                    continue
                try:
                    location = parse_ssdp_location(data)
                except MalformedMessage:
                    continue
        finally:
            sock.close()
        self._check_host(location)
        status, body = self._http("GET", location, None, {})
        if status != 200:
            raise PortMapError(f"UPnP: description {location} answered HTTP {status}")
        gateway = parse_description(body, location)
        self._check_host(gateway.control_url)
        self.gateway = gateway
        return gateway

    def _check_host(self, url: str) -> None:
        if urlsplit(url).hostname != self.gateway_address:
            raise MalformedMessage(f"UPnP URL {url[:80]!r} is not on the gateway "
                                   f"{self.gateway_address}")

    def _http(self, method: str, url: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes]:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                          timeout=self.timeout,
                                          source_address=(self.local_address, 0))
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read(MAX_XML + 1)
            return reply.status, data
        except (OSError, http.client.HTTPException) as exc:
            raise PortMapError(f"UPnP: {method} {url[:80]}: {exc}") from None
        finally:
            conn.close()

    def call(self, action: str, arguments: dict[str, str]) -> dict[str, str]:
        """Run one SOAP action on the discovered service; its output arguments."""
        if self.gateway is None:
            raise PortMapError("UPnP: no gateway discovered")
        kind = self.gateway.service_type
        status, data = self._http("POST", self.gateway.control_url,
                                  soap_body(kind, action, arguments),
                                  {"Content-Type": 'text/xml; charset="utf-8"',
                                   "SOAPAction": f'"{kind}#{action}"'})
        return parse_soap_reply(action, status, data)

    def external_address(self) -> str:
        return self.call("GetExternalIPAddress", {}).get("NewExternalIPAddress", "")

    def add_mapping(self, external_port: int, internal_port: int, lifetime: int) -> None:
        self.call("AddPortMapping", {
            "NewRemoteHost": "", "NewExternalPort": str(external_port),
            "NewProtocol": "UDP", "NewInternalPort": str(internal_port),
            "NewInternalClient": self.local_address, "NewEnabled": "1",
            "NewPortMappingDescription": "meshwg", "NewLeaseDuration": str(lifetime)})

    def delete_mapping(self, external_port: int) -> None:
        self.call("DeletePortMapping", {"NewRemoteHost": "",
                                        "NewExternalPort": str(external_port),
                                        "NewProtocol": "UDP"})
