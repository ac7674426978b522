"""python -m fuzz TARGET|all [--seconds N] [--runs N] [--engine auto|atheris|builtin]

  python -m fuzz list                   the targets and what each may raise
  python -m fuzz seed [--force] [T...]  write missing fuzz/corpus/*/seed-* (all: --force)
  python -m fuzz replay TARGET FILE...  run inputs once each (a crash prints its traceback)
  python -m fuzz receive --seconds 60   fuzz one target; `all` runs each in turn

The atheris engine (coverage-guided) is used when atheris is installed (pip install -e
'.[fuzz]'); new interesting inputs go to a work folder ($TMPDIR/meshwg-fuzz/TARGET), never
into the repository's corpus, and a crashing input to $TMPDIR/meshwg-fuzz/crashes/ (fix the
parser, then add the input to fuzz/corpus/TARGET/). Exit status 1 when a target crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import traceback
from pathlib import Path

from fuzz import engine


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _run_atheris(name: str, seconds: float | None, runs: int | None, extra: list[str]) -> int:
    import atheris

    # dnspython is left uninstrumented: instrumented, it parses ~30 times slower
    with atheris.instrument_imports(include=["meshwg", "discovery", "fuzz.targets"]):
        target = engine.load_target(name)

    def one_input(data: bytes) -> None:
        try:
            target.one_input(data)
        except target.ALLOWED:
            pass

    work = engine.default_workdir(name)
    work.mkdir(parents=True, exist_ok=True)
    crashes = engine.default_workdir("crashes")
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(work), str(engine.corpus_dir(name)), f"-max_len={engine.max_len(target)}",
            "-timeout=10", f"-artifact_prefix={crashes}/{name}-", "-print_final_stats=1"]
    if seconds is not None:
        argv.append(f"-max_total_time={int(seconds)}")
    if runs is not None:
        argv.append(f"-runs={runs}")
    atheris.Setup(argv + extra, one_input)
    atheris.Fuzz()
    return 0


def _run_builtin(name: str, seconds: float | None, runs: int | None, seed: int) -> int:
    result = engine.run_builtin(name, runs=runs, seconds=seconds, seed=seed,
                                crash_dir=engine.default_workdir("crashes"))
    rate = result.executions / result.seconds if result.seconds else 0.0
    print(f"{name}: {result.executions} executions in {result.seconds:.1f} s "
          f"({rate:.0f}/s), {len(result.crashes)} crash(es); slowest input "
          f"{result.slowest * 1000:.1f} ms ({result.slowest_size} bytes)")
    for crash in result.crashes:
        print(f"--- crash input {crash.saved} ({len(crash.data)} bytes)\n{crash.error}")
    return 1 if result.crashes else 0


def _replay(name: str, files: list[str]) -> int:
    target = engine.load_target(name)
    status = 0
    for file in files:
        data = Path(file).read_bytes()
        exc = engine.is_crash(target, data)
        if exc is None:
            print(f"{file}: ok")
        else:
            status = 1
            print(f"{file}: CRASH")
            traceback.print_exception(exc)
    return status


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["list"]:
        for name in engine.TARGETS:
            allowed = ", ".join(c.__name__ for c in engine.load_target(name).ALLOWED) or "nothing"
            print(f"{name:16} may raise: {allowed}")
        return 0
    if args_in[:1] == ["seed"]:
        force = "--force" in args_in
        for name in [a for a in args_in[1:] if a != "--force"] or engine.TARGETS:
            print(f"{name}: {engine.write_seeds(name, force)} seed(s) written")
        return 0
    if args_in[:1] == ["replay"]:
        if len(args_in) < 3:
            raise SystemExit("usage: python -m fuzz replay TARGET FILE...")
        return _replay(args_in[1], args_in[2:])
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a target name (python -m fuzz list) or all")
    parser.add_argument("--seconds", type=float, help="stop after this long (per target)")
    parser.add_argument("--runs", type=int, help="stop after this many executions (per target)")
    parser.add_argument("--engine", choices=("auto", "atheris", "builtin"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="built-in engine's random seed")
    args, extra = parser.parse_known_args(args_in)
    if args.seconds is None and args.runs is None:
        args.seconds = 60.0
    use_atheris = args.engine == "atheris" or (args.engine == "auto" and _have_atheris())
    if args.target == "all":
        status = 0
        for name in engine.TARGETS:     # atheris never returns: one process per target
            command = [sys.executable, "-m", "fuzz", name, "--engine",
                       "atheris" if use_atheris else "builtin", "--seed", str(args.seed)]
            if args.seconds is not None:
                command += ["--seconds", str(args.seconds)]
            if args.runs is not None:
                command += ["--runs", str(args.runs)]
            print(f"== {name}", flush=True)
            status |= subprocess.call(command + extra) != 0
        return status
    if use_atheris:
        return _run_atheris(args.target, args.seconds, args.runs, extra)
    return _run_builtin(args.target, args.seconds, args.runs, args.seed)


if __name__ == "__main__":
    sys.exit(main())
