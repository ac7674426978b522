"""The netcheck classifier and wire format (discovery.netcheck.classify, wire): no I/O."""

import pytest

from discovery.netcheck import wire
from discovery.netcheck.classify import FamilyObservations, Observations, classify, summary_lines
from discovery.netcheck.command import NetcheckError, check_resolved

PORTS = (51822, 51823)
LOCAL = ("10.1.0.10", 40123)


def observations(v4: FamilyObservations, v6: FamilyObservations | None = None,
                 hairpin=None) -> Observations:
    v6 = v6 or FamilyObservations(route=False)
    return Observations("198.18.0.10:51820", PORTS, v4, v6, hairpin)


def v4(answers: dict, rtts=(0.004, 0.006), route=True, error=None) -> FamilyObservations:
    return FamilyObservations(route=route, target="198.18.0.10", local=LOCAL,
                              answers=dict(answers), rtts=list(rtts), send_error=error)


def test_same_mapping_to_both_ports_is_not_hard_nat():
    seen = ("198.18.1.1", 40007)
    report = classify(observations(v4({51822: seen, 51823: seen}), hairpin=False))
    assert report["udp"] is True and report["ipv4"] is True
    assert report["hard_nat"] is False and report["hairpin"] is False
    assert report["reflexive_ipv4"] == "198.18.1.1:40007"
    assert report["families"]["ipv4"]["behind_nat"] is True
    assert report["latency_ms"] == 4.0
    assert report["portmap"] is None
    assert "hard NAT: no" in summary_lines(report)


def test_mapping_per_destination_is_hard_nat():
    report = classify(observations(v4({51822: ("198.18.3.1", 1024), 51823: ("198.18.3.1", 2871)})))
    assert report["hard_nat"] is True
    assert any(line.startswith("hard NAT: yes") for line in summary_lines(report))


def test_one_answer_cannot_tell_the_nat_type():
    report = classify(observations(v4({51822: ("198.18.3.1", 1024)})))
    assert report["udp"] is True and report["hard_nat"] is None
    assert "hard NAT: unknown" in summary_lines(report)


def test_no_answer_is_udp_blocked():
    report = classify(observations(v4({}, rtts=())))
    assert report["udp"] is False and report["ipv4"] is False and report["hard_nat"] is None
    assert report["reflexive_ipv4"] is None and report["latency_ms"] is None
    assert "UDP: blocked (no answer from the rendezvous)" in summary_lines(report)


def test_observed_equal_to_local_means_no_nat():
    report = classify(observations(v4({51822: LOCAL, 51823: LOCAL})))
    assert report["families"]["ipv4"]["behind_nat"] is False and report["hard_nat"] is False
    assert any("(no NAT)" in line for line in summary_lines(report))


def test_families_without_route_or_target_are_told_apart():
    no_target = FamilyObservations(route=True, target=None)
    report = classify(observations(v4({51822: LOCAL, 51823: LOCAL}), no_target))
    assert report["ipv6"] is None and report["families"]["ipv6"]["udp"] is None
    report = classify(observations(v4({51822: LOCAL, 51823: LOCAL}), FamilyObservations(route=False)))
    assert report["ipv6"] is False
    assert "IPv6: no route" in summary_lines(report)


def test_nothing_probed_is_unknown_not_blocked():
    report = classify(observations(FamilyObservations(route=False, target="198.18.0.10")))
    assert report["udp"] is None


def test_json_shape():
    report = classify(observations(v4({51822: ("198.18.1.1", 40007), 51823: ("198.18.1.1", 40007)}),
                                   hairpin=True))
    assert set(report) == {"rendezvous", "ports", "udp", "ipv4", "ipv6", "hard_nat", "hairpin",
                           "reflexive_ipv4", "reflexive_ipv6", "latency_ms", "portmap", "families"}
    assert set(report["families"]["ipv4"]) == {"route", "udp", "reflexive", "reflexive_by_port",
                                               "behind_nat", "mapping_varies_by_destination",
                                               "latency_ms", "error"}
    assert report["ports"] == list(PORTS)


def test_wire_round_trip_and_answer_never_larger_than_request():
    txid = wire.new_txid()
    request = wire.encode_request(txid)
    assert len(request) == wire.REQUEST_SIZE and wire.parse_request(request) == txid
    for observed in (("198.18.1.1", 40007), ("2001:db8::1", 65535), ("::ffff:10.0.0.1", 1)):
        answer = wire.encode_answer(txid, observed)
        assert len(answer) <= wire.MIN_REQUEST
        got = wire.parse_answer(answer)
        assert got is not None and got[0] == txid
    assert wire.parse_answer(wire.encode_answer(txid, ("::ffff:10.0.0.1", 1)))[1] == ("10.0.0.1", 1)


@pytest.mark.parametrize("data", [b"", b"MWNC", bytes(64), wire.encode_request(bytes(12))[:63],
                                  wire.encode_request(bytes(12)) + bytes(wire.MAX_REQUEST),
                                  wire.encode_answer(bytes(12), ("10.0.0.1", 1)) + bytes(40)])
def test_malformed_requests_are_refused(data):
    assert wire.parse_request(data) is None


def test_malformed_answers_are_refused():
    good = wire.encode_answer(bytes(12), ("10.0.0.1", 1))
    assert wire.parse_answer(good[:-1]) is None
    assert wire.parse_answer(wire.encode_request(bytes(12))) is None
    assert wire.parse_answer(good[:18] + bytes([6]) + good[19:]) is None     # family/length mismatch


def test_a_rendezvous_host_without_addresses_is_an_error_not_a_report():
    nowhere = observations(FamilyObservations(route=True, target=None),
                           FamilyObservations(route=True, target=None))
    with pytest.raises(NetcheckError, match="does not resolve"):
        check_resolved(nowhere)
    resolved = observations(v4({}))
    assert check_resolved(resolved) is resolved
