"""The fuzz harness's short run in CI: every target's corpus (seeds and every crash input
found so far) passes, then a fixed number of seeded mutations of it; no exception other
than the target's documented refusal may escape. The long run is `make fuzz` (see
fuzz/README.md)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from fuzz import engine

RUNS = 3000             # per target; all 18 take ~25 s on an idle core
SLOW_RUNS = 600         # the DNS targets parse whole messages with dnspython
SLOW = {"dnssd_answers", "dns_server", "zone_content"}
# C code under test: a crash there would kill pytest, so the target runs in a subprocess
SUBPROCESS = {"accel_open"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", engine.TARGETS)
def test_target_survives_corpus_and_mutations(name: str, tmp_path) -> None:
    assert engine.load_corpus(name), f"fuzz/corpus/{name}/ is empty: run python -m fuzz seed"
    if name in SUBPROCESS:
        run = subprocess.run([sys.executable, "-m", "fuzz", name, "--engine", "builtin",
                              "--runs", str(RUNS), "--seed", "1"], cwd=engine.ROOT.parent,
                             env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
                             capture_output=True, text=True, timeout=240)
        last = tmp_path / "meshwg-fuzz" / f"{name}-last-input"      # see the target
        raw = last.read_bytes() if last.exists() else bytes(8)
        assert run.returncode == 0, (f"exit {run.returncode}\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
                                     f"\nlast input: {raw[8:8 + int.from_bytes(raw[:8], 'little')]!r}")
        assert f"{name}: {RUNS} executions" in run.stdout and " 0 crash(es)" in run.stdout
        return
    result = engine.run_builtin(name, runs=SLOW_RUNS if name in SLOW else RUNS, seed=1,
                                crash_dir=tmp_path, stop_on_crash=False)
    assert not result.crashes, "\n\n".join(
        f"input {crash.data[:200]!r}\n{crash.error}" for crash in result.crashes)


@pytest.mark.parametrize("name", engine.TARGETS)
def test_every_seed_is_in_the_corpus(name: str) -> None:
    """Each seed the target makes is committed (a new seed kind that is never written would
    leave the fuzzer without it). Contents are not compared: handshake messages carry fresh
    ephemeral keys and DNS messages random ids."""
    folder = engine.corpus_dir(name)
    for label in engine.load_target(name).seeds():
        assert (folder / f"seed-{label}").is_file(), f"seed-{label} missing: python -m fuzz seed {name}"


@pytest.mark.parametrize("name", engine.TARGETS)
def test_seeds_are_accepted_by_the_parser(name: str) -> None:
    """Most seeds are real, valid examples: the parser must accept at least one of them, so
    the fuzzer starts from inputs that reach past the first check."""
    target = engine.load_target(name)
    accepted = 0
    for data in target.seeds().values():
        try:
            target.one_input(data)
        except target.ALLOWED:
            continue
        accepted += 1
    assert accepted


def test_a_crash_is_reported_with_its_input(tmp_path, monkeypatch) -> None:
    """The engine tells an allowed refusal from a crash and keeps the crashing input."""
    target = importlib.import_module("fuzz.targets.relay_wire")

    def fragile(data: bytes) -> None:
        if len(data) > 40:
            raise IndexError("planted")
        raise target.ALLOWED[0]("refused")

    monkeypatch.setattr(target, "one_input", fragile)
    result = engine.run_builtin("relay_wire", runs=200, seed=3, crash_dir=tmp_path)
    assert len(result.crashes) == 1 and "IndexError: planted" in result.crashes[0].error
    assert result.crashes[0].saved.read_bytes() == result.crashes[0].data
    assert len(result.crashes[0].data) > 40


def test_command_line_runs_a_target_and_replays_inputs(tmp_path) -> None:
    """`python -m fuzz TARGET` (built-in engine) and `python -m fuzz replay` as documented."""
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "fuzz", "netcheck_wire", "--engine", "builtin",
                          "--runs", "300"], cwd=engine.ROOT.parent, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "netcheck_wire: 300 executions" in run.stdout and "0 crash(es)" in run.stdout
    seed = sorted(engine.corpus_dir("uapi_set").iterdir())[0]
    replay = subprocess.run([sys.executable, "-m", "fuzz", "replay", "uapi_set", str(seed)],
                            cwd=engine.ROOT.parent, env=env, capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0 and replay.stdout.strip().endswith(": ok"), replay.stdout
