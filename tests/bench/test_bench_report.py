"""bench/report.py: medians, ranges, round-by-round ratios, targets and the table (no
namespaces; bench.py's measurements themselves run only under `make bench`)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402  (bench/ is scripts, not a package)


def test_spread_ignores_missing_and_non_finite_values():
    assert report.spread([3.0, None, 1.0, float("nan"), 2.0, math.inf]) == \
        {"median": 2.0, "min": 1.0, "max": 3.0}
    assert report.spread([]) is None and report.spread([float("nan")]) is None


def test_ratios_are_paired_round_by_round():
    # round 2's reference is missing, round 3's is zero: both left out
    assert report.paired_ratios([2.0, 4.0, 6.0, 9.0], [1.0, None, 0.0, 3.0]) == [2.0, 3.0]


def _per_round():
    keys = [m.key for m in report.METRICS]
    wg = {k: [100.0, 100.0, 100.0] for k in keys}
    mesh = {k: [330.0, 300.0, 270.0] for k in keys}             # 3.3x, 2.7x, 3.0x
    mesh["ping_rtt_idle_ms"] = [50.0, 50.0, 50.0]               # 0.5x each round
    return {"wireguard-go": wg, "meshwg": mesh}


def test_summary_targets_use_the_median_of_the_round_ratios():
    out = report.summarise(_per_round(), [4000.0, 5200.0, 5100.0])
    assert out["summary"]["meshwg"]["tcp_1_stream_mbit_per_s"] == \
        {"median": 300.0, "min": 270.0, "max": 330.0}
    ratio = out["ratios"]["meshwg"]["tcp_1_stream_mbit_per_s"]
    assert math.isclose(ratio["median"], 3.0) and math.isclose(ratio["min"], 2.7)
    targets = {t["metric"]: t for t in out["targets"]}
    assert targets["tcp_1_stream_mbit_per_s"]["met"] is True          # >= 3x
    assert targets["cpu_s_per_gb_1_stream"]["met"] is False           # 3x, not <= 0.35x
    assert targets["ping_rtt_idle_ms"]["met"] is True                 # 0.5x <= 1x
    assert targets["handshakes_per_second"] == {
        "configuration": "meshwg", "metric": "handshakes_per_second",
        "target": ">= 5000/s on one core", "median": 5100.0, "met": True}
    assert "wireguard-go" not in out["ratios"]


def test_render_shows_every_metric_configuration_and_target():
    per_round = _per_round()
    result = {"machine": {"cores": 2, "cpu_model": "CPU", "kernel": "6.1", "python": "3.11",
                          "openssl": "OpenSSL 3", "load_average_at_start": 0.5,
                          "load_average_at_end": 0.7},
              "rounds": 3, "iperf_seconds": 5.0, "per_round": per_round,
              "data_paths": {"meshwg": "compiled"}, "x25519_floor_per_second": 7000.0}
    result.update(report.summarise(per_round, [4000.0, 4100.0, 4200.0]))
    text = report.render(result)
    for metric in report.METRICS:
        assert metric.label in text
    assert "300 (270-330)" in text and "3.00x (2.70-3.30)" in text
    assert "0.50x (0.50-0.50)" in text and "100 (100-100)" in text
    assert "4100 (4000-4200)" in text and "alone allow 7000/s" in text
    assert ">= 5000: no" in text
    row = next(line for line in text.splitlines() if line.startswith("TCP 1 stream"))
    assert row.endswith(">= 3x     yes")
    assert "targets met: meshwg 3 of 7" in text         # TCP 1 and 4 streams, idle RTT
    assert "2 cores (CPU), Linux 6.1" in text


def test_busiest_thread_is_the_one_that_worked():
    import threading
    import time

    import bench  # noqa: E402

    worker: dict[str, int] = {}

    def burn() -> None:
        worker["tid"] = threading.get_native_id()
        data = bytes(4096)
        while time.thread_time() < 0.2:          # this thread's own CPU time
            hashlib_sha256(data)

    from hashlib import sha256 as hashlib_sha256
    before = bench.thread_cpu_seconds(os.getpid())
    thread = threading.Thread(target=burn)
    thread.start()
    after_running: dict[int, float] = {}
    while thread.is_alive():                      # read while the worker still exists
        after_running = bench.thread_cpu_seconds(os.getpid()) or after_running
        thread.join(0.05)
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after_running.items()}
    assert max(spent, key=spent.get) == worker["tid"]
    assert bench.busiest_thread(before, after_running) == spent[worker["tid"]] > 0
