"""The dedicated fuzz run: `python -m fuzz.run --budget 100000 [TARGET...]`.

For each target: every seed once, then mutated inputs (and some random ones) until the budget
is spent. Inputs that reach something new (a record type, an anomaly, an error class the target
reports) join the pool, a crude coverage feedback. Every exception is a crash: the input is
saved once per distinct crash site to `fuzz/corpus/regressions/<target>/<sha1>.bin` with the
traceback beside it (`.txt`), and replayed by tests/robustness/test_fuzz_regressions.py. Inputs
slower than `--slow` seconds are saved under `fuzz/corpus/slow/<target>/`.

Prints, per target: inputs run, inputs/s, crashes (and distinct sites), slow inputs, the
slowest input's time, and how far the inputs reached.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.mutate import mutate
from fuzz.targets import TARGETS, Target

CORPUS = Path(__file__).resolve().parent / "corpus"
REGRESSIONS = CORPUS / "regressions"
SLOW = CORPUS / "slow"
POOL_MAX = 400


class InputTimeout(Exception):
    """An input ran longer than --hang seconds: a hang is a crash too (a parser loop that never ends)."""


def _alarm(signum: int, frame: object) -> None:
    raise InputTimeout("input still running after the --hang limit")


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    crash_sites: list[str] = field(default_factory=list)
    slow: int = 0
    slowest: float = 0.0
    reached: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def regression_inputs(target: str) -> list[Path]:
    directory = REGRESSIONS / target
    return sorted(directory.glob("*.bin")) if directory.is_dir() else []


def crash_site(exc: BaseException) -> str:
    """`Type at file:line` of the innermost frame outside the standard library and installed
    packages (where our code raised, or called what raised)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/lib/python3" not in f.filename and "site-packages" not in f.filename] or frames
    last = ours[-1] if ours else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__} at {where}"


def _save(directory: Path, data: bytes, note: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha1(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(note)
    return path


def fuzz_target(target: Target, budget: int, seed: int, slow_after: float, save: bool = True,
                progress: bool = False, hang_after: float = 0.0) -> Result:
    """Run one target; `hang_after` > 0 (main thread only) turns an input that runs longer into
    an InputTimeout crash."""
    result = Result(target.name)
    rng = random.Random(seed)
    seeds = list(target.seeds()) + [path.read_bytes() for path in regression_inputs(target.name)]
    pool = list(seeds)
    seen: set[str] = set()
    sites: set[str] = set()
    reached: Counter[str] = Counter()
    started = time.perf_counter()
    for n in range(budget):
        if n < len(seeds):
            data = seeds[n]
        elif rng.random() < 0.03:
            data = rng.randbytes(rng.choice((1, 8, 64, 512, 4096)))
        else:
            data = mutate(rng.choice(pool), rng, seeds)
        t0 = time.perf_counter()
        if hang_after:
            signal.setitimer(signal.ITIMER_REAL, hang_after)
        try:
            got = target.run(data)
            if hang_after:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Exception as exc:
            result.crashes += 1
            site = crash_site(exc)
            if site not in sites:
                sites.add(site)
                if save:
                    _save(REGRESSIONS / target.name, data, f"{site}\n\n{traceback.format_exc()}")
            continue
        finally:
            if hang_after:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - t0
            result.slowest = max(result.slowest, elapsed)
            if elapsed > slow_after:
                result.slow += 1
                if save:
                    _save(SLOW / target.name, data, f"{elapsed:.3f} s\n")
        reached.update(got)
        new = {key for key in got if key not in seen}
        if new:
            seen |= new
            if len(pool) < POOL_MAX:
                pool.append(data)
        if progress and n and not n % 10_000:
            print(f"  {target.name}: {n} inputs, {result.crashes} crashes", file=sys.stderr, flush=True)
    result.inputs = budget
    result.seconds = time.perf_counter() - started
    result.crash_sites = sorted(sites)
    result.reached = dict(reached.most_common(12))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default all): {', '.join(TARGETS)}")
    parser.add_argument("--budget", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds after which an input is slow (default 1)")
    parser.add_argument("--hang", type=float, default=20.0,
                        help="seconds after which an input counts as a hang, a crash (default 20; 0: off)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-save", action="store_true", help="do not write crashing or slow inputs")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:15} {target.parser}")
        return 0
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    results = []
    if args.hang:
        signal.signal(signal.SIGALRM, _alarm)
    print(f"{'target':15} {'inputs':>8} {'inputs/s':>9} {'crashes':>8} {'sites':>6} {'slow':>5} "
          f"{'slowest':>8}  reached")
    for name in args.targets or list(TARGETS):
        result = fuzz_target(TARGETS[name], args.budget, args.seed, args.slow, save=not args.no_save,
                             progress=True, hang_after=args.hang)
        results.append(result)
        reached = ", ".join(f"{k}={v}" for k, v in list(result.reached.items())[:6])
        print(f"{result.target:15} {result.inputs:>8} {result.rate:>9.0f} {result.crashes:>8} "
              f"{len(result.crash_sites):>6} {result.slow:>5} {result.slowest:>7.3f}s  {reached}", flush=True)
        for site in result.crash_sites:
            print(f"{'':15} crash: {site}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total: {sum(r.inputs for r in results)} inputs, {sum(r.crashes for r in results)} crashes, "
          f"peak RSS {peak:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) | {"rate": r.rate} for r in results], indent=2) + "\n")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
