"""UPnP IGD client parsing: SSDP replies, descriptions, SOAP bodies and faults (bounded,
no DTDs)."""

import pytest

from discovery.portmap import upnp
from discovery.portmap.errors import MalformedMessage

SSDP = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"Location: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n")

DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceList><device><deviceList>
<device><serviceList>
<service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<controlURL>/ctl/CmnIfCfg</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<controlURL>/ctl/IPConn</controlURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>"""


def test_msearch_names_the_search_target():
    text = upnp.msearch().decode()
    assert text.startswith("M-SEARCH * HTTP/1.1\r\n") and text.endswith("\r\n\r\n")
    assert f"ST: {upnp.SEARCH_TARGET}\r\n" in text and 'MAN: "ssdp:discover"' in text


def test_ssdp_location():
    assert upnp.parse_ssdp_location(SSDP) == "http://192.168.1.1:5000/rootDesc.xml"


@pytest.mark.parametrize("reply", [
    b"NOTIFY * HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found\r\nLocation: http://a/\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nLOCATION: ftp://a/\r\n\r\n",
    SSDP + b"X" * upnp.MAX_SSDP])
def test_bad_ssdp_replies_are_rejected(reply):
    with pytest.raises(MalformedMessage):
        upnp.parse_ssdp_location(reply)


def test_description_gives_the_absolute_control_url():
    gateway = upnp.parse_description(DESCRIPTION, "http://192.168.1.1:5000/rootDesc.xml")
    assert gateway == upnp.Gateway("http://192.168.1.1:5000/ctl/IPConn",
                                   "urn:schemas-upnp-org:service:WANIPConnection:1")


def test_description_without_a_connection_service_is_rejected():
    doc = DESCRIPTION.replace(b"WANIPConnection", b"Layer3Forwarding")
    with pytest.raises(MalformedMessage):
        upnp.parse_description(doc, "http://192.168.1.1:5000/")


@pytest.mark.parametrize("doc", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>',
    b"<r>" + b" " * upnp.MAX_XML + b"</r>", b"<r><unclosed></r>"])
def test_hostile_xml_is_refused(doc):
    with pytest.raises(MalformedMessage):
        upnp.parse_xml(doc)


def test_soap_body_escapes_values():
    body = upnp.soap_body("urn:x:service:WANIPConnection:1", "AddPortMapping",
                          {"NewPortMappingDescription": "a<b&c"})
    assert b'<u:AddPortMapping xmlns:u="urn:x:service:WANIPConnection:1">' in body
    assert b"<NewPortMappingDescription>a&lt;b&amp;c</NewPortMappingDescription>" in body
    upnp.parse_xml(body)


def test_soap_reply_arguments_and_faults():
    ok = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
          b'<u:GetExternalIPAddressResponse xmlns:u="urn:x"><NewExternalIPAddress>'
          b"198.18.0.2</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body>"
          b"</s:Envelope>")
    assert upnp.parse_soap_reply("GetExternalIPAddress", 200, ok) == {
        "NewExternalIPAddress": "198.18.0.2"}
    fault = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
             b"<s:Fault><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">"
             b"<errorCode>718</errorCode><errorDescription>ConflictInMappingEntry"
             b"</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>")
    with pytest.raises(upnp.UpnpError) as info:
        upnp.parse_soap_reply("AddPortMapping", 500, fault)
    assert info.value.code == upnp.CONFLICT_IN_MAPPING_ENTRY
    with pytest.raises(MalformedMessage):
        upnp.parse_soap_reply("GetExternalIPAddress", 200, fault)


def test_fault_error_codes_are_ascii_digits_bounded() -> None:
    # a gateway's errorCode of superscript or 5,000 digits is no number: code 0, no ValueError
    for code in ("\u00b2", "9" * 5000, "718"):
        body = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                'envelope/"><s:Body><s:Fault><detail><UPnPError><errorCode>' + code +
                '</errorCode><errorDescription>x</errorDescription></UPnPError></detail>'
                '</s:Fault></s:Body></s:Envelope>').encode()
        with pytest.raises(upnp.UpnpError) as raised:
            upnp.parse_soap_reply("AddPortMapping", 500, body)
        assert raised.value.code == (718 if code == "718" else 0)
