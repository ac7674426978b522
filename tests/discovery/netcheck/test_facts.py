"""The saved netcheck report and the facts a member may cite (discovery.netcheck.facts)."""

from discovery.netcheck.facts import MAX_AGE, NETCHECK_FILE, own_facts, save_report


def report(**changes) -> dict:
    base = {"udp": True, "ipv4": True, "ipv6": None, "hard_nat": True}
    return {**base, **changes}


def test_recent_report_gives_families_and_nat(tmp_path):
    save_report(tmp_path, report(), now=1000.0)
    assert own_facts(tmp_path, now=1010.0) == ({4}, True)
    save_report(tmp_path, report(ipv6=True, hard_nat=False), now=1000.0)
    assert own_facts(tmp_path, now=1010.0) == ({4, 6}, False)


def test_old_missing_or_broken_reports_are_no_facts(tmp_path):
    assert own_facts(tmp_path, now=0) == (None, None)
    save_report(tmp_path, report(), now=1000.0)
    assert own_facts(tmp_path, now=1000.0 + MAX_AGE + 1) == (None, None)
    assert own_facts(tmp_path, now=900.0) == (None, None)          # from the future
    (tmp_path / NETCHECK_FILE).write_text("{not json")
    assert own_facts(tmp_path, now=1000.0) == (None, None)
    (tmp_path / NETCHECK_FILE).write_text('{"checked_at": 1000, "report": []}')
    assert own_facts(tmp_path, now=1000.0) == (None, None)


def test_blocked_udp_report_claims_nothing(tmp_path):
    save_report(tmp_path, report(udp=False, ipv4=False, hard_nat=None), now=1000.0)
    assert own_facts(tmp_path, now=1000.0) == (None, None)


def test_unknown_nat_type_is_none(tmp_path):
    save_report(tmp_path, report(hard_nat=None), now=1000.0)
    assert own_facts(tmp_path, now=1000.0) == ({4}, None)
