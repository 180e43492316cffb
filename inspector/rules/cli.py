"""`inspector rules validate|list|test`: the rule commands of the command line.

`validate` loads every rule against the field catalogue and the site config and prints each
problem as `file:line: reason`; `list` prints the set as a table (or JSON); `test` runs the
suricata-verify style fixtures under a folder through the offline pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inspector.console import Console, escape, new_table
from inspector.rules.config import load_config
from inspector.rules.errors import RuleLoadError
from inspector.rules.fixtures import run_rule_tests
from inspector.rules.loader import load_rules, validate_paths
from inspector.rules.model import RuleSet
from inspector.rules.tables import rules_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_rules_path() -> Path:
    """$INSPECTOR_SIGNATURES, else the signatures/ folder of the source tree."""
    configured = os.environ.get("INSPECTOR_SIGNATURES")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "signatures"


def rule_paths(paths: Iterable[str]) -> list[str]:
    """The rule files or directories given, or the default set (:func:`default_rules_path`)."""
    return list(paths) or [str(default_rules_path())]


def analyze_captures(paths: Iterable[Path], ruleset: RuleSet, policy: Path | None = None,
                     baseline: Path | None = None, egress: bool = False) -> list[dict[str, Any]]:
    """Run captures through the offline pipeline with `ruleset` (and a segmentation policy file,
    an anomaly baseline file, the config's egress allowlists); every EVE record, in order."""
    from inspector.analyze import Analyzer
    from inspector.anomaly import Baseline
    from inspector.engine import Engine
    from inspector.policy import PolicyMonitor, load_policy

    records: list[dict[str, Any]] = []
    monitor = PolicyMonitor(load_policy(policy)) if policy is not None else None
    learned = Baseline.load(baseline) if baseline is not None else None
    allowlists = None
    if egress:
        from inspector.egress import egress_policy_from_config

        allowlists = egress_policy_from_config(ruleset.config)
    analyzer = Analyzer(records.append, engine=Engine(ruleset), policy=monitor, baseline=learned, egress=allowlists)
    for path in paths:
        analyzer.analyze_file(path)
    return records


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _paths(args: argparse.Namespace) -> list[str]:
    return rule_paths(args.paths or [])


def cmd_validate(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        config = load_config(args.config)
    except RuleLoadError as exc:
        for error in exc.errors:
            console.print(f"[red]{escape(str(error))}[/red]")
        return EXIT_USAGE
    errors = validate_paths(_paths(args), args.config)
    for error in errors:
        console.print(f"[red]{escape(str(error))}[/red]")
    if errors:
        console.print(f"{len(errors)} problem(s); nothing was loaded")
        return EXIT_FAILED
    ruleset = load_rules(_paths(args), config)
    print_warnings(console, ruleset)
    console.print(f"{len(ruleset)} rule(s) valid")
    return EXIT_OK


def print_warnings(console: Console, ruleset: RuleSet) -> None:
    """The set's warnings (RuleSet.warnings), one a line: `file:line: warning: ...`."""
    for warning in ruleset.warnings:
        console.print(f"[yellow]{escape(warning.where)}: warning: {escape(warning.message)}[/yellow]")


def _load(args: argparse.Namespace, console: Console) -> RuleSet | None:
    try:
        ruleset = load_rules(_paths(args), load_config(args.config))
    except RuleLoadError as exc:
        for error in exc.errors:
            console.print(f"[red]{escape(str(error))}[/red]")
        return None
    print_warnings(Console(stderr=True, highlight=False, soft_wrap=True), ruleset)
    return ruleset


def cmd_list(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    ruleset = _load(args, console)
    if ruleset is None:
        return EXIT_FAILED
    rows = rules_table(ruleset)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = new_table(title=f"{len(rows)} rule(s)", title_justify="left")
    for column in ("sid", "title", "level", "event", "action", "rate", "file"):
        table.add_column(column, justify="right" if column == "sid" else "left")
    for row in rows:
        row["file"] = _relative(str(row["file"]))
        table.add_row(*(escape(str(row[c])) for c in ("sid", "title", "level", "event", "action", "rate", "file")))
    console.print(table)
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    ruleset = None
    if args.rules:
        try:
            ruleset = load_rules(args.rules, load_config(args.config))
        except RuleLoadError as exc:
            for error in exc.errors:
                console.print(f"[red]{escape(str(error))}[/red]")
            return EXIT_FAILED
        print_warnings(console, ruleset)
    root = Path(args.fixtures)
    if not root.exists():
        console.print(f"[red]error:[/red] {escape(str(root))} does not exist")
        return EXIT_USAGE
    results = run_rule_tests(root, analyze_captures, ruleset)
    if not results:
        console.print(f"[red]error:[/red] no test.yaml found under {escape(str(root))}")
        return EXIT_FAILED
    failed = [r for r in results if not r.ok]
    for result in results:
        mark = "[green]ok[/green]  " if result.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(str(result.path))} ({result.checks} check(s))")
        for failure in result.failures:
            console.print(f"       {escape(str(failure))}")
    console.print(f"{len(results) - len(failed)} of {len(results)} fixture(s) passed")
    return EXIT_FAILED if failed else EXIT_OK


def add_rules_commands(sub: Any) -> None:
    """Register `rules validate|list|test` on the top-level subparsers."""
    rules = sub.add_parser("rules", help="validate, list and test rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)

    validate = rules_sub.add_parser("validate", help="check rule files: every problem with file and line")
    validate.add_argument("paths", nargs="*", help="rule files or directories (default: signatures/)")
    validate.add_argument("--config", help="site config (default: the shipped default config)")
    validate.set_defaults(func=cmd_validate)

    listing = rules_sub.add_parser("list", help="list rules as a table")
    listing.add_argument("paths", nargs="*", help="rule files or directories (default: signatures/)")
    listing.add_argument("--config", help="site config")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)

    test = rules_sub.add_parser("test", help="run rule fixtures (folders with test.yaml) offline")
    test.add_argument("fixtures", help="folder holding fixture folders (e.g. tests/signatures)")
    test.add_argument("--rules", action="append", help="rules to test with when a fixture names none "
                      "(repeatable)")
    test.add_argument("--config", help="site config for --rules")
    test.set_defaults(func=cmd_test)
