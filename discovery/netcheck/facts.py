"""The last netcheck report kept in the member state directory, for `meshwg status` reasons.

`meshwg netcheck --state DIR` writes NETCHECK_FILE there; the member daemon reads it at
start (:func:`own_facts`) and gives the path manager (discovery.traversal.paths
``set_own_facts``) the facts it may cite: which address families work and whether our NAT
maps per destination. A report older than MAX_AGE, or unreadable, is no fact at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from meshwg.util.files import atomic_write

NETCHECK_FILE = "netcheck.json"
MAX_AGE = 24 * 3600.0          # seconds: networks change; an old report is not cited


def save_report(state_dir: str | os.PathLike, report: dict, now: float) -> None:
    """Keep ``report`` (with its time, wall-clock seconds) in ``state_dir``. OSError when
    the directory is not writable."""
    atomic_write(Path(state_dir) / NETCHECK_FILE,
                 json.dumps({"checked_at": now, "report": report}, indent=2) + "\n")


def own_facts(state_dir: str | os.PathLike, now: float) -> tuple[set[int] | None, bool | None]:
    """(families, hard_nat) from the saved report: the IP versions the rendezvous answered
    on (None when the report could not tell) and whether the IPv4 mapping varied by
    destination (None: unknown). (None, None) without a usable, recent report."""
    try:
        doc = json.loads((Path(state_dir) / NETCHECK_FILE).read_text())
        checked_at, report = float(doc["checked_at"]), doc["report"]
        if not 0 <= now - checked_at <= MAX_AGE:
            return None, None
        return facts_of(report)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, None


def facts_of(report: dict) -> tuple[set[int] | None, bool | None]:
    """(families, hard_nat) a netcheck report gives, as :func:`own_facts` reads them;
    (None, None) when UDP got no answer. AttributeError when ``report`` is no dict."""
    if report.get("udp") is not True:
        return None, None
    families = {v for v, name in ((4, "ipv4"), (6, "ipv6")) if report.get(name) is True}
    hard = report.get("hard_nat")
    return (families or None), (hard if isinstance(hard, bool) else None)


def checked_at(state_dir: str | os.PathLike) -> float | None:
    """When the saved report was made (wall-clock seconds), None without a readable one."""
    try:
        return float(json.loads((Path(state_dir) / NETCHECK_FILE).read_text())["checked_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
