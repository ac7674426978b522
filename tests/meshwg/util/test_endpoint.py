"""meshwg.util.endpoint and meshwg.util.resolve: the one host:port parser, and resolution."""

from __future__ import annotations

import socket

import pytest

from meshwg.util.endpoint import (EndpointError, address_bytes, format_endpoint, host_prefix,
                                  normalize_endpoint, parse_endpoint, parse_port, split_hostport)
from meshwg.util.errors import MeshwgError
from meshwg.util.prefix import has_host_bits, parse_network
from meshwg.util.resolve import family_of, resolve, resolve_endpoint


@pytest.mark.parametrize("text, expected", [
    ("1.2.3.4:51820", ("1.2.3.4", 51820)),
    ("[2001:db8::1]:1", ("2001:db8::1", 1)),
    ("rdv.example.org:443", ("rdv.example.org", 443)),
    (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
])
def test_parse_endpoint_accepts(text, expected) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("1.2.3.4", "expected HOST:PORT"),
    ("fd00::1:51820", "IPv6 addresses must be written [ADDRESS]:PORT"),
    ("[fd00::1]51820", "no port after ']'"),
    ("[fd00::1:51820", "no closing ']'"),
    ("1.2.3.4:0", "port '0' is not in 1..65535"),
    ("1.2.3.4:65536", "not in 1..65535"),
    ("1.2.3.4:5x", "not in 1..65535"),
    ("[1.2.3.4]:5", "brackets hold an IPv6 address"),
    ("a b:5", "not a valid name or address"),
    ("", "expected HOST:PORT"),
])
def test_parse_endpoint_refuses_with_a_reason(text, reason) -> None:
    with pytest.raises(EndpointError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_endpoint(text)


def test_endpoint_error_is_a_user_facing_value_error() -> None:
    assert issubclass(EndpointError, MeshwgError) and issubclass(EndpointError, ValueError)


def test_ip_only_returns_canonical_addresses() -> None:
    assert parse_endpoint("[2001:DB8:0::1]:7", ip_only=True) == ("2001:db8::1", 7)
    assert parse_endpoint("[fe80::1%eth0]:7", ip_only=True) == ("fe80::1%eth0", 7)
    with pytest.raises(EndpointError, match="not an IP address"):
        parse_endpoint("host.example:7", ip_only=True)


def test_format_is_the_inverse_of_parse() -> None:
    for endpoint in (("1.2.3.4", 5), ("2001:db8::1", 51820)):
        assert parse_endpoint(format_endpoint(endpoint)) == endpoint
    assert format_endpoint(None) == "(none)"


def test_normalize_unmaps_ipv4_and_compresses_ipv6() -> None:
    assert normalize_endpoint(("::ffff:198.18.0.1", 9, 0, 0)) == ("198.18.0.1", 9)
    assert normalize_endpoint(("[2001:db8:0:0::1]", "9")) == ("2001:db8::1", 9)
    with pytest.raises(EndpointError):
        normalize_endpoint(("nonsense", 9))
    with pytest.raises(EndpointError):
        normalize_endpoint(("1.2.3.4", 70000))


def test_split_port_prefix_and_address_bytes() -> None:
    assert split_hostport("[::1]:53") == ("::1", "53")
    assert parse_port("0", lowest=0) == 0
    assert host_prefix("10.0.0.1") == "10.0.0.1/32" and host_prefix("fd00::1") == "fd00::1/128"
    ip, source = address_bytes(("10.0.0.1", 258))
    assert ip == bytes([10, 0, 0, 1]) and source == ip + b"\x01\x02"
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8" and has_host_bits("10.1.2.3/8")
    with pytest.raises(ValueError):
        parse_network("10.0.0.0/0008")


@pytest.mark.parametrize("text", ["\u00b2", "\uff15\uff11\uff18\uff12\uff10", "\u0665"])
def test_port_is_ascii_digits_only(text) -> None:
    """Superscript, full-width and Arabic-Indic digits pass str.isdigit; each is one
    EndpointError (a superscript two used to escape as a bare ValueError from int())."""
    with pytest.raises(EndpointError):
        parse_port(text)
    with pytest.raises(EndpointError):
        parse_endpoint(f"192.0.2.1:{text}")


def test_resolve_literals_without_dns_and_every_family_of_a_name() -> None:
    def no_dns(*args):
        raise AssertionError("an IP literal must not be looked up")
    assert resolve("198.18.0.1", 5, getaddrinfo=no_dns) == [(socket.AF_INET, ("198.18.0.1", 5))]
    assert resolve_endpoint("2001:db8::1", 5, getaddrinfo=no_dns) == ("2001:db8::1", 5)

    def both(host, port, family, kind):
        assert (host, port, kind) == ("rdv.test", 51820, socket.SOCK_DGRAM)
        return [(socket.AF_INET6, kind, 17, "", ("2001:db8::9", port, 0, 0)),
                (socket.AF_INET, kind, 17, "", ("198.18.0.9", port)),
                (socket.AF_INET, kind, 17, "", ("198.18.0.9", port))]
    assert [f for f, _ in resolve("rdv.test", 51820, getaddrinfo=both)] == [socket.AF_INET6, socket.AF_INET]
    assert resolve_endpoint("rdv.test", 51820, getaddrinfo=both) == ("2001:db8::9", 51820)


def test_resolve_failure_is_one_line_naming_the_host() -> None:
    def fails(*args):
        raise socket.gaierror(-2, "Name or service not known")
    with pytest.raises(EndpointError, match=r"cannot resolve host 'nowhere.invalid': Name or service not known"):
        resolve("nowhere.invalid", 1, getaddrinfo=fails)
    assert family_of("fd00::1") == socket.AF_INET6 and family_of("10.0.0.1") == socket.AF_INET
