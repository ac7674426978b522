"""The fuzz driver: targets, their corpus, and two engines.

A target is a module in fuzz.targets with
  * ``ALLOWED``: the exception classes the parser documents for hostile input (its refusal);
    anything else escaping ``one_input`` is a crash;
  * ``one_input(data: bytes) -> None``: feed one input to the parser;
  * ``seeds() -> dict[str, bytes]``: real, small examples (the corpus in fuzz/corpus/NAME/
    is written from them by ``python -m fuzz seed``, plus every crash found, kept there);
  * optionally ``TOKENS``: byte strings the built-in mutator splices in (keys, separators),
    and ``MAX_LEN``: the longest input to try (default MAX_LEN; text formats go longer, past
    limits such as int()'s 4,300 digits).

Engines: atheris (coverage-guided libFuzzer, ``pip install -e '.[fuzz]'``) when it is
installed, else the built-in mutational loop (random but seeded: bit flips, byte edits,
insertions, deletions, duplication, splices between corpus inputs and target tokens). The
CI test runs the built-in loop for a fixed number of executions per target.

This module imports nothing from meshwg or discovery, so atheris can instrument them when
a target is imported (fuzz.__main__ imports targets inside atheris.instrument_imports).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
TARGETS = ("wg_messages", "receive", "uapi_set", "uapi_get", "wgquick", "enroll_request",
           "enroll_response", "token", "dnssd_answers", "dns_server", "mdns", "relay_wire",
           "netcheck_wire", "candidate_report", "tsig_file", "zone_content", "lan_verify",
           "accel_open")
MAX_LEN = 4096
_INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                b"\x01\x00\x00\x00", b"\x04\x00\x00\x00", b"0", b"-1", b"=", b"\n", b":", b"[",
                b"]", b"/", b",", b".", b"\"", b"{", b"}", b"%", b"\\", b"\xc3\xa9", b"\xed\xa0\x80")


def load_target(name: str) -> ModuleType:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; targets: {', '.join(TARGETS)}")
    return importlib.import_module(f"fuzz.targets.{name}")


def corpus_dir(name: str) -> Path:
    return CORPUS / name


def load_corpus(name: str) -> list[bytes]:
    folder = corpus_dir(name)
    if not folder.is_dir():
        return []
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]


def write_seeds(name: str, force: bool = False) -> int:
    """Write the target's seeds missing from its corpus folder (all of them when `force`:
    handshake messages and DNS ids differ each time, so unchanged seeds are left alone).
    Crash inputs there are kept. Returns how many were written."""
    folder = corpus_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for label, data in load_target(name).seeds().items():
        path = folder / f"seed-{label}"
        if force or not path.exists():
            path.write_bytes(data)
            written += 1
    return written


def is_crash(target: ModuleType, data: bytes) -> BaseException | None:
    """The exception that escaped for `data` and is not allowed, or None."""
    try:
        target.one_input(data)
    except target.ALLOWED:
        return None
    except Exception as exc:  # noqa: BLE001 -- the harness's job: anything else is a crash
        return exc
    return None


def max_len(target: ModuleType) -> int:
    return getattr(target, "MAX_LEN", MAX_LEN)


def mutate(data: bytes, rng: random.Random, pool: list[bytes], tokens: tuple[bytes, ...],
           limit: int = MAX_LEN) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        op = rng.randrange(11)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:                                   # flip one bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:                                 # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:                                         # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.choice((1, 2, 4, 16)))
        elif op == 3 and buf:                                 # delete a range
            buf[pos:pos + rng.choice((1, 2, 4, 16, 64))] = b""
        elif op == 4 and buf:                                 # duplicate a range
            start = rng.randrange(len(buf))
            chunk = buf[start:start + rng.choice((1, 4, 16, 64, 256))]
            buf[pos:pos] = chunk * rng.choice((1, 2, 8, 64))
        elif op == 5 and pool:                                # splice another input
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[pos:] = other[start:]
        elif op == 6:                                         # interesting value over bytes
            value = rng.choice(_INTERESTING)
            buf[pos:pos + len(value)] = value
        elif op == 7 and tokens:                              # a target token
            buf[pos:pos] = rng.choice(tokens)
        elif op == 8 and buf:                                 # truncate
            del buf[rng.randrange(len(buf)):]
        elif op == 9 and buf:                                 # small arithmetic on a byte
            i = rng.randrange(len(buf))
            buf[i] = (buf[i] + rng.choice((-2, -1, 1, 2))) & 0xFF
        elif op == 10 and buf:                                # a long run of one of its bytes
            i = rng.randrange(len(buf))
            buf[i:i] = bytes([buf[i]]) * rng.choice((64, 300, 1100, 5000))
    return bytes(buf[:limit])


@dataclass
class Crash:
    data: bytes
    error: str
    saved: Path | None = None


@dataclass
class Result:
    target: str
    executions: int = 0
    seconds: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    slowest: float = 0.0           # seconds of the slowest execution (a hang shows here)
    slowest_size: int = 0          # and its input's length


def save_crash(name: str, data: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{name}-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def run_builtin(name: str, *, runs: int | None = None, seconds: float | None = None,
                seed: int = 0, crash_dir: Path | None = None, stop_on_crash: bool = True) -> Result:
    """Every corpus input once, then mutations of them until `runs` executions or
    `seconds` have passed (whichever comes first; at least one of them must be given)."""
    if runs is None and seconds is None:
        raise ValueError("give runs or seconds")
    target = load_target(name)
    rng = random.Random(seed)
    pool = load_corpus(name) or [b""]
    tokens = tuple(getattr(target, "TOKENS", ()))
    limit = max_len(target)
    result = Result(name)
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    seen_errors: set[str] = set()
    queue = list(pool)
    while True:
        if runs is not None and result.executions >= runs:
            break
        if deadline is not None and result.executions % 64 == 0 and time.monotonic() >= deadline:
            break
        data = queue.pop() if queue else mutate(rng.choice(pool), rng, pool, tokens, limit)
        result.executions += 1
        began = time.perf_counter()
        exc = is_crash(target, data)
        took = time.perf_counter() - began
        if took > result.slowest:
            result.slowest, result.slowest_size = took, len(data)
        if exc is None:
            if len(pool) < 4096 and rng.random() < 0.01:
                pool.append(data)          # keep a few mutants: deeper chains of edits
            continue
        text = "".join(traceback.format_exception(exc)).strip()
        where = text.splitlines()[-3:] if text else [repr(exc)]
        key = "\n".join(where)
        if key in seen_errors:
            continue
        seen_errors.add(key)
        saved = save_crash(name, data, crash_dir) if crash_dir is not None else None
        result.crashes.append(Crash(data, text, saved))
        if stop_on_crash:
            break
    result.seconds = time.monotonic() - start
    return result


def default_workdir(name: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / "meshwg-fuzz" / name
