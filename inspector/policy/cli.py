"""`inspector policy check|lint`: segmentation checks for people and for CI.

`check` runs captures through the offline pipeline with a policy and prints the segmentation
report (inspector.policy.report). Exit status: 0 no violation; 1 violations found; 2 usage
errors (the policy does not load, no captures); 3 no violation seen but a capture was damaged
or unreadable (the check may be incomplete).

`lint` loads a policy and reports what is wrong with it (inspector.policy.lint). Exit status:
0 nothing wrong (warnings printed); 1 errors (including a policy that does not load), or
warnings with `--strict`; 2 usage errors (no such file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from inspector.console import Console, escape

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def cmd_check(args: argparse.Namespace) -> int:
    from inspector.analyze import Analyzer, expand_paths
    from inspector.policy import PolicyLoadError, PolicyMonitor, load_policy
    from inspector.policy.report import CaptureStatus, build_report, render_json, render_markdown, render_table

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    missing = [p for p in [*args.paths, args.policy] if not Path(p).exists()]
    if missing:
        err.print(f"[red]error:[/red] no such file or directory: {escape(', '.join(map(str, missing)))}")
        return EXIT_USAGE
    try:
        policy = load_policy(args.policy)
    except PolicyLoadError as exc:
        for error in exc.errors:
            err.print(f"[red]{escape(str(error))}[/red]")
        return EXIT_USAGE
    files = expand_paths(args.paths)
    if not files:
        err.print("[red]error:[/red] no capture files found in the given paths")
        return EXIT_USAGE
    monitor = PolicyMonitor(policy)
    writer = None
    if args.eve:
        from inspector.sinks.eve import EveWriter

        writer = EveWriter(args.eve)
    analyzer = Analyzer(writer.write if writer is not None else _discard, policy=monitor)
    try:
        for path in files:
            analyzer.analyze_file(path)
    finally:
        if writer is not None:
            writer.close()
    captures = [CaptureStatus(f.path, f.packets, f.error) for f in analyzer.stats.files]
    report = build_report(monitor, captures, top=args.top)
    if args.format == "json":
        sys.stdout.write(render_json(report))
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(report))
    else:
        render_table(report, Console(highlight=False, soft_wrap=True))
    if report["flows_violating"]:
        return EXIT_FOUND
    return EXIT_INCOMPLETE if analyzer.stats.damaged else EXIT_OK


def _discard(record: dict[str, Any]) -> None:
    return None


def cmd_lint(args: argparse.Namespace) -> int:
    from inspector.policy import PolicyLoadError, load_policy
    from inspector.policy.lint import ERROR, Finding, lint_policy

    console = Console(highlight=False, soft_wrap=True)
    if not Path(args.file).is_file():
        Console(stderr=True).print(f"[red]error:[/red] no such file: {escape(args.file)}")
        return EXIT_USAGE
    try:
        policy = load_policy(args.file)
        findings = lint_policy(policy)
    except PolicyLoadError as exc:
        policy = None
        findings = [Finding(ERROR, "invalid", e.file, e.line, e.message) for e in exc.errors]
    errors = sum(1 for f in findings if f.level == ERROR)
    warnings = len(findings) - errors
    if args.format == "json":
        print(json.dumps({"file": args.file, "loaded": policy is not None, "errors": errors, "warnings": warnings,
                          "findings": [{"level": f.level, "code": f.code, "file": f.file, "line": f.line,
                                        "message": f.message} for f in findings]}, indent=2))
    else:
        for finding in findings:
            colour = "red" if finding.level == ERROR else "yellow"
            console.print(f"[{colour}]{escape(str(finding))}[/{colour}]")
        if policy is not None:
            console.print(f"{args.file}: policy {policy.name!r}, {len(policy.zones)} zone(s), "
                          f"{len(policy.rules)} rule(s), default {policy.default}: "
                          f"{errors} error(s), {warnings} warning(s)")
        else:
            console.print(f"{args.file}: does not load: {errors} error(s)")
    if errors or (args.strict and warnings):
        return EXIT_FOUND
    return EXIT_OK


def add_policy_commands(sub: Any) -> None:
    """Register `policy check|lint` on the top-level subparsers."""
    policy = sub.add_parser("policy", help="check captures against a segmentation policy, lint a policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)

    check = policy_sub.add_parser(
        "check", help="segmentation report of captures against a policy (exit 1 on violations)")
    check.add_argument("paths", nargs="+", metavar="CAPTURE", help="capture files or directories")
    check.add_argument("--policy", required=True, metavar="FILE", help="the policy file (YAML)")
    check.add_argument("--format", choices=("table", "markdown", "json"), default="table",
                       help="report format (default: table)")
    check.add_argument("--top", type=int, default=20, metavar="N", help="violating flows listed (default 20)")
    check.add_argument("--eve", metavar="FILE|-", help="also write the EVE records (with zones and policy "
                       "records) here")
    check.set_defaults(func=cmd_check)

    lint = policy_sub.add_parser("lint", help="find unreachable rules, overlapping zones and other mistakes")
    lint.add_argument("file", help="the policy file (YAML)")
    lint.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    lint.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    lint.set_defaults(func=cmd_lint)
