"""`inspector eval`: score rules against lab captures' ground truth, write the detection-tuning report.

    inspector eval CAPTURE... [--truth FILE]... [--rules PATH]... [--config FILE] [--policy FILE]
                   [--compare-rules PATH]... [--compare-config FILE] [--compare-policy FILE] -o REPORT_DIR

Without a `--compare-*` option one rule set is evaluated; with any of them a second one is
("after": `--compare-rules`, else the same rules; `--compare-config`, else `--config`;
`--compare-policy`, else `--policy`) and the report shows the change. Exit status: 0 report
written; 2 usage errors (missing captures or truth files, a truth file whose packet count is not
the capture's, rules, configs or policies that do not load). A truth file naming another capture
file with the same packet count (a renamed copy) is used, with a warning.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from inspector.console import Console, escape, new_table

EXIT_OK, EXIT_USAGE = 0, 2


def cmd_eval(args: argparse.Namespace) -> int:
    from inspector.anomaly.baseline import BaselineError
    from inspector.eval.report import write_report
    from inspector.eval.run import RuleSetSpec, evaluate, pair_truths, renamed_captures
    from inspector.lab.truth import TruthFormatError
    from inspector.policy import PolicyLoadError
    from inspector.rules import RuleLoadError
    from inspector.rules.cli import rule_paths

    console = Console(highlight=False, soft_wrap=True)
    captures = [Path(p) for p in args.captures]
    missing = [str(p) for p in captures if not p.is_file()]
    if missing:
        console.print(f"[red]error:[/red] no such capture file: {escape(', '.join(missing))}")
        return EXIT_USAGE
    try:
        pairs = pair_truths(captures, [Path(t) for t in args.truth or []])
    except TruthFormatError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    for warning in renamed_captures(pairs):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    rules = tuple(rule_paths(args.rules or []))
    specs = [RuleSetSpec(name=args.name or ("before" if _comparing(args) else "rules"), rules=rules,
                         config=args.config, policy=args.policy, baseline=args.baseline)]
    if _comparing(args):
        specs.append(RuleSetSpec(name=args.compare_name or "after", rules=tuple(args.compare_rules or rules),
                                 config=args.compare_config or args.config,
                                 policy=args.compare_policy or args.policy,
                                 baseline=args.compare_baseline or args.baseline))
    evaluations = []
    for spec in specs:
        try:
            evaluations.append(evaluate(pairs, spec))
        except (RuleLoadError, PolicyLoadError) as exc:
            console.print(f"[red]error:[/red] rule set {spec.name} ({escape(spec.describe())}) does not load:")
            for error in exc.errors:
                console.print(f"[red]{escape(str(error))}[/red]")
            return EXIT_USAGE
        except BaselineError as exc:
            console.print(f"[red]error:[/red] rule set {spec.name}: baseline {escape(str(exc))}")
            return EXIT_USAGE
    command = _command(args)
    write_report(args.output, evaluations, command, [s.describe() for s in specs])
    _print_summary(console, evaluations)
    out = Path(args.output)
    console.print(f"report: {out / 'report.md'}, {out / 'report.html'} (self-contained), {out / 'report.json'}")
    return EXIT_OK


def _command(args: argparse.Namespace) -> str:
    """The command line, rebuilt from the parsed arguments (what the report says was run)."""
    words = ["inspector", "eval", *args.captures]
    for truth in args.truth or []:
        words += ["--truth", truth]
    for option in ("rules", "compare_rules"):
        for value in getattr(args, option) or []:
            words += ["--" + option.replace("_", "-"), value]
    for option in ("config", "policy", "baseline", "compare_config", "compare_policy", "compare_baseline", "name",
                   "compare_name"):
        value = getattr(args, option)
        if value:
            words += ["--" + option.replace("_", "-"), value]
    words += ["-o", args.output]
    return " ".join(shlex.quote(w) for w in words)


def _comparing(args: argparse.Namespace) -> bool:
    return bool(args.compare_rules or args.compare_config or args.compare_policy or args.compare_baseline)


def _print_summary(console: Console, evaluations: list[Any]) -> None:
    table = new_table(title="Evaluation", title_justify="left")
    table.add_column("")
    for evaluation in evaluations:
        table.add_column(evaluation.name, justify="right")
    rows = (("alerts", lambda o: str(o.alerts)),
            ("true positives", lambda o: str(o.tp)),
            ("false positives", lambda o: str(o.fp)),
            ("precision", lambda o: "-" if o.precision is None else f"{o.precision:.2f}"),
            ("expected detections fired", lambda o: f"{o.fired_pairs}/{o.expected_pairs}"),
            ("attack steps detected", lambda o: f"{o.steps_detected}/{o.steps}"),
            ("benign transactions alerted", lambda o: f"{o.benign_alerted}/{o.benign_transactions}"))
    for name, getter in rows:
        table.add_row(name, *(getter(e.overall) for e in evaluations))
    console.print(table)


def add_eval_command(sub: Any) -> None:
    """Register `eval` on the top-level subparsers."""
    parser = sub.add_parser("eval", help="score rules against lab captures' ground truth; write the tuning report",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="+", help="capture files made by `inspector lab generate`")
    parser.add_argument("--truth", action="append", metavar="FILE",
                        help="truth file of each capture, in order (default: <capture name>.truth.json beside it)")
    parser.add_argument("--rules", action="append", metavar="PATH",
                        help="rule files or directories (repeatable; default: the shipped signatures/)")
    parser.add_argument("--config", metavar="FILE", help="site config (e.g. the lab's site.yaml)")
    parser.add_argument("--policy", metavar="FILE", help="segmentation policy (e.g. the lab's policy.yaml)")
    parser.add_argument("--compare-rules", action="append", metavar="PATH",
                        help="a second rule set to compare with (repeatable; default: the same rules)")
    parser.add_argument("--compare-config", metavar="FILE", help="site config of the second rule set")
    parser.add_argument("--compare-policy", metavar="FILE", help="segmentation policy of the second rule set")
    parser.add_argument("--baseline", metavar="FILE", help="anomaly baseline (`inspector baseline learn`) for the "
                        "anomaly rules (e.g. the lab's baseline.json)")
    parser.add_argument("--compare-baseline", metavar="FILE", help="anomaly baseline of the second rule set")
    parser.add_argument("--name", help="name of the (first) rule set in the report")
    parser.add_argument("--compare-name", help="name of the second rule set in the report")
    parser.add_argument("-o", "--output", required=True, metavar="REPORT_DIR",
                        help="folder for report.md, report.html, report.json and charts/")
    parser.set_defaults(func=cmd_eval)
