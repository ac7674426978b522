"""Figures of bench.py: per-round values -> median and range, per-round ratios to
wireguard-go, issue 11's targets and whether they are met, the machine, and the table.

No I/O but reading /proc and the kernel name (machine()); bench.py measures.
"""

from __future__ import annotations

import os
import platform
import ssl
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

REFERENCE = "wireguard-go"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    target: tuple[str, float] | None = None   # (">=" or "<=", ratio to wireguard-go)
    digits: int = 1


METRICS = [
    Metric("tcp_1_stream_mbit_per_s", "TCP 1 stream", "Mbit/s", (">=", 3.0), 0),
    Metric("tcp_4_streams_mbit_per_s", "TCP 4 streams", "Mbit/s", (">=", 3.0), 0),
    Metric("cpu_s_per_gb_1_stream", "CPU s/GB, 1 stream", "s", ("<=", 0.35), 2),
    Metric("cpu_s_per_gb_4_streams", "CPU s/GB, 4 streams", "s", ("<=", 0.35), 2),
    Metric("ping_rtt_idle_ms", "ping RTT median, idle", "ms", ("<=", 1.0), 3),
    Metric("ping_rtt_loaded_ms", "ping RTT median, 1 stream", "ms", ("<=", 1.0), 3),
    # scaling: cores each daemon kept busy (CPU seconds / wall seconds) while it moved data
    Metric("sender_cores_1_stream", "sender busy, 1 stream", "cores", None, 2),
    Metric("receiver_cores_1_stream", "receiver busy, 1 stream", "cores", None, 2),
    Metric("sender_cores_4_streams", "sender busy, 4 streams", "cores", None, 2),
    Metric("receiver_cores_4_streams", "receiver busy, 4 streams", "cores", None, 2),
    Metric("sender_busiest_thread_cores_4_streams", "  sender's busiest thread", "cores",
           None, 2),
    Metric("receiver_busiest_thread_cores_4_streams", "  receiver's busiest thread", "cores",
           None, 2),
]
HANDSHAKE_TARGET = 5000.0      # handshakes/s on one core (issue 11)


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """{"median", "min", "max"} of the finite values, None when there are none."""
    finite = [v for v in values if v is not None and v == v and v not in (float("inf"), float("-inf"))]
    if not finite:
        return None
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


def paired_ratios(values: Sequence[float | None], reference: Sequence[float | None]) -> list[float]:
    """Round-by-round value / reference (rounds where either is missing or zero are left out):
    alternated rounds pair each figure with wireguard-go's measured just before or after."""
    return [v / r for v, r in zip(values, reference)
            if v is not None and r and v == v and r == r]


def meets(ratio: float, target: tuple[str, float]) -> bool:
    op, bound = target
    return ratio >= bound if op == ">=" else ratio <= bound


def summarise(per_round: dict[str, dict[str, list[float | None]]],
              handshakes: Sequence[float]) -> dict[str, Any]:
    """Medians and ranges per configuration, ratios to wireguard-go per configuration,
    and each target with the median ratio it is judged on."""
    summary = {cfg: {m.key: spread(values.get(m.key, [])) for m in METRICS}
               for cfg, values in per_round.items()}
    ratios: dict[str, dict[str, dict[str, float] | None]] = {}
    targets: list[dict[str, Any]] = []
    reference = per_round.get(REFERENCE)
    for cfg, values in per_round.items():
        if cfg == REFERENCE or reference is None:
            continue
        ratios[cfg] = {}
        for m in METRICS:
            r = spread(paired_ratios(values.get(m.key, []), reference.get(m.key, [])))
            ratios[cfg][m.key] = r
            if m.target is not None:
                targets.append({"configuration": cfg, "metric": m.key,
                                "target": f"{m.target[0]} {m.target[1]:g}x {REFERENCE}",
                                "median_ratio": r["median"] if r else None,
                                "met": meets(r["median"], m.target) if r else None})
    hs = spread(list(handshakes))
    if hs is not None:
        targets.append({"configuration": "meshwg", "metric": "handshakes_per_second",
                        "target": f">= {HANDSHAKE_TARGET:.0f}/s on one core",
                        "median": hs["median"], "met": hs["median"] >= HANDSHAKE_TARGET})
    return {"summary": summary, "ratios": ratios, "handshakes_per_second": hs,
            "targets": targets}


def machine() -> dict[str, Any]:
    """Cores, CPU model, kernel, load and library versions of this machine."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
            "load_average_at_start": os.getloadavg()[0]}


def _fmt(s: dict[str, float] | None, digits: int, suffix: str = "") -> str:
    if s is None:
        return "n/a"
    f: Callable[[float], str] = lambda v: f"{v:.{digits}f}"
    return f"{f(s['median'])}{suffix} ({f(s['min'])}-{f(s['max'])})"


def render(result: dict[str, Any]) -> str:
    """The human table: one row per metric, each configuration's median (range), then each
    meshwg configuration's ratio to wireguard-go and the target."""
    m = result["machine"]
    configs = list(result["per_round"])
    others = [c for c in configs if c != REFERENCE]
    lines = [f"machine: {m['cores']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
             f"Python {m['python']}, {m['openssl']}; load {m['load_average_at_start']:.2f} "
             f"at start, {m.get('load_average_at_end', float('nan')):.2f} at end",
             f"{result['rounds']} alternated rounds, every tunnel pair up through the run, "
             f"iperf3 runs of {result['iperf_seconds']:g} s; median (min-max)"]
    for cfg, text in result.get("data_paths", {}).items():
        lines.append(f"  {cfg}: {text}")
    header = f"{'metric':<34}" + "".join(f"{c:>24}" for c in configs)
    header += "".join(f"{'ratio ' + c:>24}" for c in others) + f"  {'target':<9}"
    if others:
        header += " met (" + ", ".join(others) + ")"
    lines += [header, "-" * len(header)]
    summary, ratios = result["summary"], result["ratios"]
    met = {(t["configuration"], t["metric"]): t["met"] for t in result["targets"]}
    for metric in METRICS:
        row = f"{metric.label + ' (' + metric.unit + ')':<34}"
        row += "".join(f" {_fmt(summary[c][metric.key], metric.digits):>23}" for c in configs)
        row += "".join(f" {_fmt(ratios.get(c, {}).get(metric.key), 2, 'x'):>23}" for c in others)
        if metric.target:
            row += f"  {metric.target[0] + ' ' + format(metric.target[1], 'g') + 'x':<9} "
            row += ", ".join(_yes_no(met.get((c, metric.key))) for c in others)
        lines.append(row.rstrip())
    hs = result["handshakes_per_second"]
    floor = result.get("x25519_floor_per_second")
    lines.append(f"{'meshwg handshakes/s, 1 core':<34} {_fmt(hs, 0):>23}  "
                 f">= {HANDSHAKE_TARGET:.0f}: {_yes_no(met.get(('meshwg', 'handshakes_per_second')))}"
                 + (f" (its 4 X25519 operations alone allow {floor:.0f}/s)" if floor else ""))
    counts = {}
    for t in result["targets"]:
        done, total = counts.get(t["configuration"], (0, 0))
        counts[t["configuration"]] = (done + bool(t["met"]), total + 1)
    lines.append("targets met: " + ", ".join(f"{c} {d} of {n}" for c, (d, n) in counts.items()))
    return "\n".join(lines)


def _yes_no(met: bool | None) -> str:
    return "n/a" if met is None else "yes" if met else "no"
