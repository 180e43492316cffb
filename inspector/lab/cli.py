"""`inspector lab list|generate|replay`: the attack lab's scenarios, as labelled captures or live traffic.

    inspector lab list [--json]
    inspector lab generate SCENARIO... -o DIR [--seed N] [--benign N] [--duration S] [--name NAME]
    inspector lab replay SCENARIO --target URL [--rate R] [--ca FILE] [--timeout S] [--allow-remote] [--json]

`generate` takes scenario names or `all`; it writes DIR/NAME.pcap, DIR/NAME.truth.json and the
lab's policy.yaml and site.yaml. `replay` refuses targets that are not loopback addresses unless
`--allow-remote` is given. Exit status: 0 done; 1 a replay where no call got an answer; 2 usage
errors (unknown scenario, bad target).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from inspector.console import Console, escape, new_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def cmd_list(args: argparse.Namespace) -> int:
    from inspector.lab.scenarios import SCENARIOS

    rows = [{"name": s.name, "title": s.title, "description": s.description, "atlas": list(s.atlas),
             "cves": list(s.cves), "sids": list(s.sids), "replay": list(s.transports),
             "steps": [{"id": st.id, "description": st.description, "sids": list(st.sids), "policy": st.policy}
                       for st in s.steps]}
            for s in SCENARIOS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = new_table(title=f"{len(rows)} scenarios (inspector lab generate NAME... -o DIR)", title_justify="left")
    table.add_column("scenario", no_wrap=True)
    for column in ("what it does", "ATLAS (AML.)", "rules expected", "replay"):
        table.add_column(column)
    for row in rows:
        atlas = " ".join(a.removeprefix("AML.") for a in row["atlas"])
        if row["cves"]:
            atlas += " " + " ".join(row["cves"])
        table.add_row(row["name"], escape(row["title"]), atlas, " ".join(map(str, row["sids"])),
                      " ".join(row["replay"]))
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    console.print(table)
    console.print("`inspector lab list --json` adds each scenario's description and steps.")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from inspector.lab.generate import write_lab
    from inspector.lab.scenarios import SCENARIOS

    console = Console(highlight=False, soft_wrap=True)
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        console.print(f"[red]error:[/red] unknown scenario(s) {escape(', '.join(unknown))}; "
                      "`inspector lab list` shows them")
        return EXIT_USAGE
    if args.benign < 0 or (args.duration is not None and args.duration <= 0):
        console.print("[red]error:[/red] --benign must be >= 0 and --duration > 0")
        return EXIT_USAGE
    written = write_lab(args.output, names, name=args.name, seed=args.seed, benign=args.benign,
                        duration=args.duration)
    console.print(f"{written.pcap}: {written.packets} packets, {written.flows} flows "
                  f"({len(names)} scenario(s), {args.benign} benign session(s))")
    console.print(f"{written.truth}: ground truth; policy.yaml and site.yaml beside them")
    console.print(f"next: inspector eval {written.pcap} --config {written.pcap.parent / 'site.yaml'} "
                  f"--policy {written.pcap.parent / 'policy.yaml'} -o report/")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from inspector.lab.replay import ReplayError, check_loopback, parse_target, run_replay
    from inspector.lab.scenarios import SCENARIOS

    console = Console(highlight=False, soft_wrap=True, stderr=args.json)
    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        console.print(f"[red]error:[/red] unknown scenario {escape(repr(args.scenario))}; "
                      "`inspector lab list` shows them")
        return EXIT_USAGE
    try:
        target = parse_target(args.target)
        check_loopback(target, args.allow_remote)
        replay = run_replay(scenario, target, rate=args.rate, ca=args.ca, timeout=args.timeout)
    except ReplayError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    results = replay.results
    if args.json:
        print(json.dumps([{"what": r.what, "step": r.step, "ok": r.ok, "detail": r.detail,
                           "seconds": round(r.seconds, 4)} for r in results], indent=2))
    else:
        table = new_table(title=f"{scenario.name} -> {target.url} ({target.transport})", title_justify="left")
        for column in ("step", "call", "outcome"):
            table.add_column(column)
        for r in results:
            outcome = r.detail if r.ok else f"[yellow]{escape(r.detail)}[/yellow]"
            table.add_row(r.step or "", escape(r.what), outcome)
        console.print(table)
        console.print(f"{sum(r.ok for r in results)} of {len(results)} call(s) answered; refusals and blocks are "
                      "outcomes (a sidecar blocking an attack answers with an error)")
    answered = any(r.ok or _answered(r.detail) for r in results)
    return EXIT_OK if answered or not results else EXIT_FAILED


def _answered(detail: str) -> bool:
    """An error that still means the target answered (an HTTP, gRPC or S3 refusal, not a dead connection)."""
    lowered = detail.lower()
    return not any(word in lowered for word in ("connection refused", "connecterror", "connection error",
                                                "unavailable", "timed out", "timeout", "name or service"))


def add_lab_commands(sub: Any) -> None:
    """Register `lab list|generate|replay` on the top-level subparsers."""
    lab = sub.add_parser("lab", help="attack lab: scenarios as labelled captures, or replayed live")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)

    listing = lab_sub.add_parser("list", help="the scenarios, what they do, their ATLAS techniques and rules")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)

    generate = lab_sub.add_parser("generate", help="write scenarios (and benign background) as a pcap and its "
                                  "ground truth")
    generate.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    generate.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    generate.add_argument("--seed", type=int, default=7, help="seed: the same seed gives the same bytes (default 7)")
    generate.add_argument("--benign", type=int, default=0, metavar="N",
                          help="benign background sessions spread over the duration (default 0)")
    generate.add_argument("--duration", type=float, metavar="S",
                          help="capture duration in seconds (default: the longest scenario + 10 s; 300 s with "
                               "background)")
    generate.add_argument("--name", help="file name stem (default: the scenario's name, or lab)")
    generate.set_defaults(func=cmd_generate)

    replay = lab_sub.add_parser("replay", help="send a scenario's traffic live to a sidecar or server (loopback only "
                                "unless --allow-remote)")
    replay.add_argument("scenario", help="scenario name")
    replay.add_argument("--target", required=True, metavar="URL",
                        help="http(s)://host:port (REST, S3, LLM and JSON APIs), grpc(s)://host:port (Triton gRPC), "
                             "tcp://host:port (TCPStore, NCCL)")
    replay.add_argument("--rate", type=float, default=20.0, metavar="R", help="calls per second at most (default 20; "
                        "0: as fast as the target answers)")
    replay.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify an https:// or grpcs:// target with")
    replay.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per-call timeout (default 10 s)")
    replay.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not a loopback address (a lab host you control)")
    replay.add_argument("--json", action="store_true", help="results as JSON on stdout")
    replay.set_defaults(func=cmd_replay)
