"""`inspector baseline learn|show`, and `--baseline FILE|online` for analyze and proxy.

    inspector baseline learn CAPTURE... -o baseline.json [--policy FILE] [--interval S] [--warmup S]
    inspector baseline show baseline.json [--json]
    inspector analyze CAPTURE... --baseline baseline.json      # or --baseline online

`learn` runs the captures through the offline pipeline (no rules) and saves what the baseline
learned; `show` summarizes a file. `--baseline online` starts empty and learns as it goes,
reporting nothing during the warm-up. Exit status: 0 done, 1 a capture was damaged (the
baseline is still written from what was read), 2 usage errors (unreadable baseline ...).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inspector.anomaly.baseline import Baseline, BaselineError, BaselineParams
from inspector.anomaly.learn import learn_baseline
from inspector.console import Console, escape, new_table

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2
ONLINE = "online"


def load_baseline(value: str, params: BaselineParams | None = None) -> Baseline:
    """`--baseline FILE|online`: a loaded baseline, or an empty one that learns with a warm-up.
    Raises BaselineError."""
    if value == ONLINE and not Path(value).exists():
        return Baseline(params)
    return Baseline.load(value, params)


def cmd_learn(args: argparse.Namespace) -> int:
    from inspector.analyze import expand_paths

    console = Console(highlight=False, stderr=True)
    files = expand_paths(args.captures)
    missing = [p for p in args.captures if not Path(p).exists()]
    if missing or not files:
        console.print(f"[red]error:[/red] no capture files in {escape(', '.join(args.captures))}")
        return EXIT_USAGE
    overrides: dict[str, Any] = {}
    if args.interval is not None:
        overrides["interval"] = args.interval
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    policy = None
    if args.policy:
        from inspector.policy import PolicyLoadError, load_policy

        try:
            policy = load_policy(args.policy)
        except PolicyLoadError as exc:
            for error in exc.errors:
                console.print(f"[red]{escape(str(error))}[/red]")
            return EXIT_USAGE
    try:
        params = BaselineParams(**overrides)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    baseline, analyzer = learn_baseline(files, policy=policy, params=params)
    for captured in analyzer.stats.files:
        if captured.problem:
            console.print(f"[yellow]{escape(captured.problem)}[/yellow]")
    counters = baseline.counters()
    if not counters["records"]:
        console.print(f"[red]error:[/red] no transaction record learned from {len(files)} capture(s): "
                      f"{escape(args.output)} not written")
        return EXIT_DAMAGED
    baseline.save(args.output)
    console.print(f"{args.output}: {counters['records']} records learned from {len(files)} capture(s); "
                  f"{counters['rate_keys']} rate keys, {counters['sets']} sets")
    return EXIT_DAMAGED if analyzer.stats.damaged else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    try:
        baseline = Baseline.load(args.baseline)
    except BaselineError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    data = baseline.to_json()
    summary = {"learned": data["learned"], "params": data["params"], "counters": baseline.counters(),
               "sets": {key: {"n": known.observations, "values": len(known.values)} for key, known in baseline.sets}}
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_OK
    learned = data["learned"]
    console.print(f"{args.baseline}: {learned['records']} records, {learned['seconds']:.0f} s "
                  f"({learned['first']} .. {learned['last']})")
    table = new_table(title="sets (new_* anomalies)", title_justify="left")
    for column in ("set", "scope", "observations", "distinct"):
        table.add_column(column)
    for key, known in baseline.sets:
        kind, _, scope = key.partition("|")
        table.add_row(kind, escape(scope), str(known.observations), str(len(known.values)))
    console.print(table)
    rates = new_table(title="request rates (rate_spike) and sizes (payload_size)", title_justify="left")
    for column in ("client|server|subject", "intervals", "mean/interval", "usual bytes"):
        rates.add_column(column)
    for key, counter in baseline.rates:
        size = baseline.sizes.get(key)
        counts = counter.counts
        rates.add_row(escape(key), str(counter.history), f"{counts.mean:.2f}" if counts else "-",
                      f"{2 ** size.stats.mean - 1:.0f}" if size is not None and size.stats.n else "-")
    console.print(rates)
    return EXIT_OK


def add_baseline_commands(sub: Any) -> None:
    """Register `inspector baseline learn|show`."""
    baseline = sub.add_parser("baseline", help="learn or show a baseline of normal ML traffic (anomaly detection)",
                              description="Baselines of normal ML traffic for anomaly detection (docs/anomaly.md).")
    commands = baseline.add_subparsers(dest="baseline_command", required=True)
    learn = commands.add_parser("learn", help="learn a baseline from captures of normal traffic")
    learn.add_argument("captures", nargs="+", help="capture files or directories")
    learn.add_argument("-o", "--output", required=True, metavar="FILE", help="baseline JSON to write")
    learn.add_argument("--policy", metavar="FILE", help="segmentation policy (zones: learns protocols per zone pair)")
    learn.add_argument("--interval", type=float, help="seconds per rate interval (default 10)")
    learn.add_argument("--warmup", type=float, help="online warm-up in seconds, saved with the baseline (default 300)")
    learn.set_defaults(func=cmd_learn)
    show = commands.add_parser("show", help="summarize a baseline file")
    show.add_argument("baseline", help="baseline JSON")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)
