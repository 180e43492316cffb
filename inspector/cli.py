"""`inspector` command line: analyze captures, list the field catalogue, manage rules, run the attack lab.

Exit status: 0 when every input was analyzed whole; 1 when an input was damaged or unreadable
(everything readable was still analyzed and written); 2 for usage errors (bad arguments, rules
that fail validation).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from inspector import __version__
from inspector.console import Console, escape, new_table
from inspector.cpus import process_count

if TYPE_CHECKING:
    from rich.table import Table

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2


def _console(eve_to_stdout: bool) -> Console:
    return Console(stderr=eve_to_stdout, highlight=False, soft_wrap=True)


# -- analyze -------------------------------------------------------------------------------


def cmd_analyze(args: argparse.Namespace) -> int:
    from inspector.analyze import Analyzer, expand_paths
    from inspector.runstats import stats_record
    from inspector.sinks.eve import EveWriter

    eve_to_stdout = args.eve == "-"
    console = _console(eve_to_stdout)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    skipped: list[Path] = []
    files = expand_paths(args.paths, skipped)
    for path in skipped:
        errors.print(f"[yellow]note:[/yellow] {escape(str(path))} skipped: not a regular file (a dangling link, a "
                     "FIFO or a device inside a directory)")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        errors.print(f"[red]error:[/red] no such file or directory: {escape(', '.join(map(str, missing)))}")
        return EXIT_USAGE
    if not files:
        errors.print("[red]error:[/red] no capture files found in the given paths")
        return EXIT_USAGE
    problem = _output_problem(args, files)
    if problem:
        errors.print(f"[red]error:[/red] {escape(problem)}")
        return EXIT_USAGE
    engine = None
    if not args.no_rules:
        engine = _load_engine(args, errors)
        if engine is False:
            return EXIT_USAGE
    monitor = _load_policy_monitor(args.policy, errors) if args.policy else None
    if monitor is False:
        return EXIT_USAGE
    keylog = _load_keylog(args.keylog, errors) if args.keylog else None
    if keylog is False:
        return EXIT_USAGE
    baseline = None
    if args.baseline:
        from inspector.anomaly.baseline import BaselineError
        from inspector.anomaly.cli import load_baseline

        try:
            baseline = load_baseline(args.baseline)
        except BaselineError as exc:
            errors.print(f"[red]error:[/red] --baseline: {escape(str(exc))}")
            return EXIT_USAGE
    allowlists = None
    if args.egress:
        from inspector.egress import egress_policy_from_config
        from inspector.rules import RuleLoadError, load_config

        try:
            allowlists = egress_policy_from_config(engine.config if engine else load_config(args.config))
        except RuleLoadError as exc:
            for error in exc.errors:
                errors.print(f"[red]{escape(str(error))}[/red]")
            return EXIT_USAGE
    try:
        writer = EveWriter(args.eve)
    except OSError as exc:
        errors.print(f"[red]error:[/red] cannot write EVE to {escape(args.eve)}: {escape(exc.strerror or str(exc))}")
        return EXIT_USAGE
    workers = args.workers  # with several, each capture is still read once (a pipe can be sharded)
    analyzer = Analyzer(writer.write, engine=engine or None, flow_records=not args.no_flow_records,
                        policy=monitor or None, keylog=keylog, baseline=baseline, egress=allowlists)
    if workers > 1:
        from inspector.parallel import ParallelAnalyzer

        if baseline is not None:
            errors.print("[red]error:[/red] --baseline learns across flows and runs in one process: drop --workers")
            writer.close()
            return EXIT_USAGE

        analyzer = ParallelAnalyzer(writer.write, workers, write_encoded=writer.write_encoded,
                                    shard=args.shard, placement=args.placement, engine=engine or None,
                                    flow_records=not args.no_flow_records,
                                    policy=monitor or None, keylog=keylog, egress=allowlists)
    started = time.perf_counter()
    # What is loaded by now (modules, rules, key logs) lives as long as the run: frozen out of the
    # cyclic collector, its full collections do not walk it (210 MB capture: 0.58 -> 0.42 s of GC).
    gc.freeze()
    terminated = signal.signal(signal.SIGTERM, _terminate)  # workers stopped, spools removed, on the way out
    failed = ""
    try:
        _run_files(analyzer, files, console, show_progress=not args.quiet and console.is_terminal)
        writer.write(stats_record(analyzer.stats))  # last: what the run counted, losses included
    except RuntimeError as exc:  # --workers: a worker died (killed, out of memory) or raised
        from inspector.parallel import WorkerFailed

        if not isinstance(exc, WorkerFailed):
            raise
        errors.print(f"[red]error:[/red] {escape(str(exc))}\n(the records before the failure were written)")
        return EXIT_DAMAGED
    except OSError as exc:  # the EVE output failed (disk full, device gone): the captures were read fine
        failed = f"writing EVE to {args.eve} failed: {exc.strerror or exc}"
    finally:
        signal.signal(signal.SIGTERM, terminated)
        gc.unfreeze()
        try:
            writer.close()
        except OSError as exc:
            failed = failed or f"writing EVE to {args.eve} failed: {exc.strerror or exc}"
    if failed:
        errors.print(f"[red]error:[/red] {escape(failed)} (the run stopped; records before it may be lost)")
        return EXIT_DAMAGED
    elapsed = time.perf_counter() - started
    if args.metrics_textfile:
        from inspector.sinks.textfile import write_textfile

        try:
            write_textfile(args.metrics_textfile, analyzer.stats, elapsed=elapsed,
                           rules=engine.ruleset.rules if engine else (), policy=analyzer.policy)
        except OSError as exc:
            errors.print(f"[red]error:[/red] cannot write {escape(args.metrics_textfile)}: "
                         f"{escape(exc.strerror or str(exc))}")
            return EXIT_DAMAGED
    if not args.quiet:
        _print_summary(console, analyzer, elapsed, args.eve)
    else:  # quiet: no summary, but a capture that could not be read whole is still said
        for captured in analyzer.stats.files:
            if captured.problem:
                errors.print(escape(captured.problem))
    return EXIT_DAMAGED if analyzer.stats.damaged else EXIT_OK


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _output_problem(args: argparse.Namespace, files: list[Path]) -> str:
    """Why the outputs cannot be written where asked, before anything is read; "" when fine."""
    if args.eve == "-" and sys.stdout is None:
        return "--eve -: standard output is closed"
    inputs = set()
    for f in files:
        with contextlib.suppress(OSError):
            inputs.add(os.path.realpath(f))
    for option, value in (("--eve", args.eve), ("--metrics-textfile", args.metrics_textfile)):
        if not value or value == "-":
            continue
        if os.path.realpath(value) in inputs:
            return f"{option} {value} is one of the captures to read: it would be overwritten"
        if os.path.isdir(value):
            return f"{option} {value} is a directory"
    textfile = args.metrics_textfile
    if textfile and (os.path.islink(textfile) or (os.path.exists(textfile) and not os.path.isfile(textfile))):
        return (f"--metrics-textfile {textfile} exists and is not a regular file (a link or a device): it is "
                "replaced atomically, so it must be a plain file or not exist yet")
    return ""


def _load_policy_monitor(path: str, console: Console) -> Any:
    """A PolicyMonitor for `--policy`, or False when the policy does not load."""
    from inspector.policy import PolicyLoadError, PolicyMonitor, load_policy

    try:
        return PolicyMonitor(load_policy(path))
    except PolicyLoadError as exc:
        for error in exc.errors:
            console.print(f"[red]{escape(str(error))}[/red]")
        return False


def _load_keylog(paths: list[str], console: Console) -> Any:
    """The TLS key log of `--keylog` files, or False when one cannot be read. A file that gives no
    secret is still key material given (its handshakes are reported `keys_missing`), with a
    warning saying what the file looks like."""
    from inspector.capture.tls_keylog import KeyLog, describe_unusable
    from inspector.limits import DEFAULT_LIMITS

    keylog = KeyLog(DEFAULT_LIMITS)
    for path in paths:
        before = keylog.stats.lines
        try:
            keylog.load(path)
            if keylog.stats.lines == before:
                with open(path, "rb") as fh:
                    head = fh.read(4096)
        except OSError as exc:
            console.print(f"[red]error:[/red] cannot read key log {escape(path)}: {escape(exc.strerror or str(exc))}")
            return False
        if keylog.stats.lines == before:
            console.print(f"[yellow]warning:[/yellow] key log {escape(path)} gave no TLS secret: "
                          f"{escape(describe_unusable(head))}")
    return keylog


def _load_engine(args: argparse.Namespace, console: Console) -> Any:
    """The rule engine for `--rules` (default: the shipped signatures), or False on errors."""
    from inspector.engine import Engine
    from inspector.rules import RuleLoadError, load_config, load_rules
    from inspector.rules.cli import print_warnings, rule_paths

    rules_paths = rule_paths(args.rules or [])
    try:
        config = load_config(args.config)
        ruleset = load_rules(rules_paths, config)
    except RuleLoadError as exc:
        for error in exc.errors:
            console.print(f"[red]{escape(str(error))}[/red]")
        return False
    print_warnings(console, ruleset)
    return Engine(ruleset, config)


def _run_files(analyzer: Any, files: list[Path], console: Console, show_progress: bool) -> None:
    parallel = hasattr(analyzer, "analyze_files")  # --workers: the workers tell how far they read
    if not show_progress:
        if parallel:
            analyzer.analyze_files(files)
            return
        for path in files:
            analyzer.analyze_file(path)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(p.stat().st_size for p in files if p.is_file())
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console.rich, transient=True) as progress:
        if parallel:
            task = progress.add_task(f"analyzing ({analyzer.workers} workers)", total=total)
            analyzer.analyze_files(files, progress=lambda done: progress.update(task, completed=done))
            return
        task = progress.add_task("analyzing", total=total)
        done = 0
        for path in files:
            size = path.stat().st_size if path.is_file() else 0
            progress.update(task, description=f"analyzing {path.name}")
            analyzer.analyze_file(path, progress=lambda n, base=done: progress.update(task, completed=base + n))
            done += size
            progress.update(task, completed=done)


def _print_summary(console: Console, analyzer: Any, elapsed: float, eve: str) -> None:
    stats = analyzer.stats
    rate = stats.packets / elapsed if elapsed > 0 else 0.0
    files = new_table(title="Captures", title_justify="left")
    for column in ("file", "format", "packets", "status"):
        files.add_column(column, justify="right" if column == "packets" else "left")
    for f in stats.files:
        status = f"[red]{escape(f.error)}[/red]" if f.error else "ok"
        files.add_row(escape(f.path), f.format or "-", str(f.packets), status)
    console.print(files)

    overview = new_table(title="Summary", title_justify="left", show_header=False)
    overview.add_column("what")
    overview.add_column("count", justify="right")
    overview.add_row("packets", f"{stats.packets:,}")
    overview.add_row("flows", f"{stats.flows:,}")
    for app, n in sorted(stats.flows_by_app.items(), key=lambda kv: -kv[1]):
        overview.add_row(f"  flows {escape(app)}", f"{n:,}")
    for proto, n in sorted(stats.transactions.items(), key=lambda kv: -kv[1]):
        overview.add_row(f"transactions {escape(proto)}", f"{n:,}")
    overview.add_row("anomalies", f"{sum(stats.anomalies.values()):,}")
    _add_detect_rows(overview, stats)
    if analyzer.policy is not None:
        overview.add_row("policy violations", f"{analyzer.policy.flows_denied:,} of "
                         f"{analyzer.policy.flows_checked:,} flows checked")
    overview.add_row("time", f"{elapsed:.2f} s ({rate:,.0f} packets/s)")
    if getattr(analyzer, "workers", 1) > 1:
        overview.add_row("workers", f"{analyzer.workers}, split by {'file' if analyzer.split == 'files' else 'flow'}")
    overview.add_row("EVE", "stdout" if eve == "-" else escape(eve))
    console.print(overview)
    _print_tls_summary(console, stats.detection, analyzer.keylog)

    _print_not_analysed(console, stats)
    if stats.anomalies:
        table = new_table(title="Anomalies", title_justify="left")
        table.add_column("layer.event")
        table.add_column("count", justify="right")
        for name, n in stats.anomalies.most_common(15):
            table.add_row(escape(name), str(n))
        console.print(table)
    if stats.alerts:
        table = new_table(title="Alerts by rule", title_justify="left")
        table.add_column("sid", justify="right")
        table.add_column("signature")
        table.add_column("count", justify="right")
        for (sid, signature), n in stats.alerts.most_common():
            table.add_row(str(sid), escape(signature), str(n))
        console.print(table)


def _add_detect_rows(overview: Table, stats: Any) -> None:
    """Rules loaded, alerts, and the matches that made none (the EVE stats record's `detect`)."""
    from inspector.runstats import detect_object

    detect = detect_object(stats)
    overview.add_row("rules", "none (--no-rules)" if detect is None else f"{detect['rules_loaded']:,}")
    overview.add_row("alerts", f"{sum(stats.alerts.values()):,}")
    if detect is None:
        return
    for counter, label in (("alerts_suppressed", "  suppressed (site config)"),  # matches that made no alert
                           ("rate_pending", "  rate: below count"),
                           ("rate_quiet", "  rate: after the alert"),
                           ("rate_keys_evicted", "  rate keys evicted")):
        if detect.get(counter):
            overview.add_row(label, f"{detect[counter]:,}")


def _print_not_analysed(console: Console, stats: Any) -> None:
    """What the run could not see or parse (shown when it counted any): frames, bytes, flows."""
    from inspector.runstats import not_analysed

    rows = not_analysed(stats)
    if not rows:
        return
    table = new_table(title="Not analysed (the EVE stats record has every counter)", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count, size in rows:
        table.add_row(what, f"{count:,}" if size is None else f"{count:,} ({size:,} bytes)")
    console.print(table)


def _print_tls_summary(console: Console, counts: Any, keylog: Any) -> None:
    """TLS handshakes and what could not be decrypted (shown when the run saw TLS)."""
    handshakes = counts.get("tls_handshakes", 0)
    if not handshakes and keylog is None:
        return
    table = new_table(title="TLS", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("handshakes", f"{handshakes:,}")
    for key, label in (("tls_handshakes_decrypted", "  decrypted"),
                       ("tls_handshakes_decrypted_in_part", "    of which one side only (its keys missing or wrong)"),
                       ("tls_handshakes_without_keys", "  without keys"),
                       ("tls_handshakes_unsupported", "  keys found, suite not decrypted"),
                       ("tls_handshakes_unanswered", "  no ServerHello seen"),
                       ("tls_records_decrypted", "records decrypted"),
                       ("tls_records_failed", "records failing authentication (wrong keys)"),
                       ("tls_records_not_decrypted", "records not decrypted (no keys, unsupported)"),
                       ("tls_records_early_data", "0-RTT records not decrypted")):
        if counts.get(key):
            table.add_row(label, f"{counts[key]:,}")
    if keylog is not None:
        kept = keylog.stats
        table.add_row("key log secrets", f"{kept.lines:,} ({len(keylog):,} sessions)")
        if kept.malformed or kept.truncated_bytes:
            table.add_row("key log lines ignored", f"{kept.malformed:,} malformed, {kept.truncated_bytes:,} "
                          "bytes beyond the cap")
    console.print(table)


# -- fields --------------------------------------------------------------------------------


def cmd_fields(args: argparse.Namespace) -> int:
    from inspector.rules.tables import fields_table

    rows = fields_table(event=args.event)
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return EXIT_OK
    console = Console(highlight=False, soft_wrap=True)
    title = "Field catalogue: a rule's field is the EVE record's JSON path"
    if args.event:
        title += f" (fields a rule with `event: {args.event}` may use)"
    table = new_table(title=title, title_justify="left")
    for column in ("name", "type", "events", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "type", "events", "description")))
    console.print(table)
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------


#: Commands whose runs do not need the other commands' modules (the sidecar's, the lab's, ...):
#: `inspector analyze ...` starts without importing them.
SELF_CONTAINED = frozenset({"analyze", "fields"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command` one of SELF_CONTAINED, only the parsers that
    command needs (the rest are neither registered nor imported)."""
    parser = argparse.ArgumentParser(prog="inspector", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="analyze pcap/pcapng files or directories, write EVE JSON")
    analyze.add_argument("paths", nargs="+", help="capture files or directories")
    analyze.add_argument("--eve", default="eve.json", help="EVE output file, or - for stdout (default: eve.json)")
    analyze.add_argument("--rules", action="append", help="rule file or directory (repeatable; "
                         "default: the shipped signatures/)")
    analyze.add_argument("--config", help="site config with variables and suppressions "
                         "(default: the shipped default config)")
    analyze.add_argument("--no-rules", action="store_true", help="parse and log only, no detection")
    analyze.add_argument("--no-flow-records", action="store_true", help="do not write flow records")
    analyze.add_argument("--keylog", metavar="FILE", action="append", help="TLS key log (NSS format, as "
                         "SSLKEYLOGFILE writes) to decrypt TLS with (repeatable); pcapng Decryption Secrets "
                         "Blocks are used without it (docs/protocols/tls.md)")
    analyze.add_argument("--policy", metavar="FILE", help="segmentation policy: zones on every record, a policy "
                         "record for each flow it does not allow (docs/policy.md)")
    analyze.add_argument("--metrics-textfile", metavar="FILE", help="write the run's counters in Prometheus text "
                         "format (node-exporter textfile collector)")
    analyze.add_argument("--baseline", metavar="FILE|online", help="anomaly detection: a baseline from `inspector "
                         "baseline learn`, or online (learn as it goes, after a warm-up); docs/anomaly.md")
    analyze.add_argument("--egress", action="store_true", help="the captures are workloads' outbound traffic: "
                         "apply the config's egress allowlists to every HTTP record (docs/egress.md)")
    analyze.add_argument("--workers", type=process_count, default=1, metavar="N|auto",
                         help="processes to shard flows across (default 1; auto: one per usable CPU); same "
                         "records and alerts as one process (docs/offline.md)")
    analyze.add_argument("--shard", choices=("auto", "flows", "files"), default="auto",
                         help="how --workers divides the run: flows (worker 0 reads the files once and feeds "
                         "the others their flows' frames), files (whole files per worker: rotated capture "
                         "sets), auto (default: files "
                         "when several files balance across the workers, else flows)")
    analyze.add_argument("--placement", choices=("load", "hash"), default="load",
                         help="with flows sharded, where a new flow goes: load (default: to a worker that is "
                         "keeping up, else to worker 0, which also reads), hash (by flow hash alone: the same "
                         "split every run)")
    analyze.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    analyze.set_defaults(func=cmd_analyze, ends_without_teardown=True)  # closes what it writes

    fields = sub.add_parser("fields", help="list the field catalogue rules can match on")
    fields.add_argument("--event", help="only the fields a rule for this event type may use")
    fields.add_argument("--json", action="store_true", help="machine-readable output")
    fields.set_defaults(func=cmd_fields)

    if command in SELF_CONTAINED:
        return parser
    from inspector.anomaly.cli import add_baseline_commands
    from inspector.eval.cli import add_eval_command
    from inspector.lab.cli import add_lab_commands
    from inspector.live.proxy import add_live_commands
    from inspector.policy.cli import add_policy_commands
    from inspector.rules.cli import add_rules_commands

    add_rules_commands(sub)
    add_policy_commands(sub)
    add_live_commands(sub)
    add_lab_commands(sub)
    add_eval_command(sub)
    add_baseline_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _main(argv)[0]


def _main(argv: list[str] | None) -> tuple[int, bool]:
    """The command's exit code, and whether the process may end without interpreter teardown (the
    command returned and says it closes what it writes: inspector.fastexit)."""
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(argv)
    try:
        return args.func(args), getattr(args, "ends_without_teardown", False)
    except KeyboardInterrupt:
        return 130, False
    except BrokenPipeError:
        return EXIT_OK, False


def run() -> NoReturn:
    """The `inspector` script and `python -m inspector`: the command, then the process ends."""
    code, quick = _main(None)
    if quick:
        from inspector.fastexit import end_process

        end_process(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
