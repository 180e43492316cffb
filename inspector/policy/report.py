"""The segmentation report of `inspector policy check`: what talked to what, and what should not.

Built from a PolicyMonitor after the captures ran:

* the zone matrix: for each (source zone, destination zone), flows allowed and violating;
* flows by protocol: each (source zone, destination zone, protocol) with its counts and the
  rules that decided (`(default)` for the policy's default);
* the top violating flows: client -> server:port with zones, protocol, the deciding rule and
  how many flows.

Rendered as rich tables (a terminal), Markdown (a CI job summary, a merge-request comment) or
JSON (anything else). A "flow" is a flow checked for one protocol: a connection that carried
two protocols counts once for each.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from inspector.console import Console, escape, new_table
from inspector.policy.monitor import PolicyMonitor

DEFAULT_RULE = "(default)"


@dataclass(frozen=True, slots=True)
class CaptureStatus:
    path: str
    packets: int
    error: str | None


def build_report(monitor: PolicyMonitor, captures: list[CaptureStatus], top: int = 20) -> dict[str, Any]:
    """The report as plain data (the JSON format)."""
    policy = monitor.policy
    pairs: dict[tuple[str, str], list[int]] = {}
    by_protocol = []
    for (from_zone, to_zone, app_proto), cell in sorted(monitor.cells.items()):
        counts = pairs.setdefault((from_zone, to_zone), [0, 0])
        counts[0] += cell.allowed
        counts[1] += cell.denied
        by_protocol.append({
            "from_zone": from_zone, "to_zone": to_zone, "app_proto": app_proto,
            "allowed": cell.allowed, "violating": cell.denied,
            "rules": {name or DEFAULT_RULE: n for name, n in sorted(cell.rules.items())},
        })
    matrix = [{"from_zone": f, "to_zone": t, "allowed": a, "violating": d} for (f, t), (a, d) in sorted(pairs.items())]
    violations = [{"src_ip": key.src_ip, "dest_ip": key.dest_ip, "dest_port": key.dest_port,
                   "from_zone": key.from_zone, "to_zone": key.to_zone, "app_proto": key.app_proto,
                   "rule": key.rule or DEFAULT_RULE, "flows": n}
                  for key, n in _top(monitor.violations, top)]
    return {
        "policy": policy.name,
        "source": policy.source,
        "default": policy.default,
        "zones": [{"name": z.name, "plane": z.plane, "cidrs": [str(c) for c in z.cidrs]} for z in policy.zones],
        "captures": [{"path": c.path, "packets": c.packets, "error": c.error} for c in captures],
        "flows_checked": monitor.flows_checked,
        "flows_violating": monitor.flows_denied,
        "violations_not_itemised": monitor.violations_untracked,
        "matrix": matrix,
        "by_protocol": by_protocol,
        "top_violations": violations,
    }


def _top(counter: Counter, n: int) -> list:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0].src_ip, kv[0].dest_ip, kv[0].dest_port or 0,
                                                   kv[0].app_proto))[:n]


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"## Segmentation check: policy `{report['policy']}` (default {report['default']})", ""]
    verdict = ("**no violation**" if not report["flows_violating"]
               else f"**{report['flows_violating']} violating flow(s)**")
    lines += [f"{report['flows_checked']} flow(s) checked, {verdict}.", ""]
    damaged = [c for c in report["captures"] if c["error"]]
    for capture in damaged:
        lines.append(f"- capture `{capture['path']}` damaged: {capture['error']}")
    if damaged:
        lines.append("")
    zones_from = sorted({row["from_zone"] for row in report["matrix"]})
    zones_to = sorted({row["to_zone"] for row in report["matrix"]})
    cells = {(row["from_zone"], row["to_zone"]): row for row in report["matrix"]}
    if cells:
        lines += ["### Zone matrix (flows allowed / violating)", "",
                  "| from \\ to | " + " | ".join(f"`{t}`" for t in zones_to) + " |",
                  "|---|" + "---|" * len(zones_to)]
        for f in zones_from:
            row = [_cell_text(cells.get((f, t)), markdown=True) for t in zones_to]
            lines.append(f"| `{f}` | " + " | ".join(row) + " |")
        lines.append("")
        lines += ["### Flows by protocol", "", "| from | to | protocol | allowed | violating | decided by |",
                  "|---|---|---|---:|---:|---|"]
        for row in report["by_protocol"]:
            rules = ", ".join(f"{name} ({n})" for name, n in row["rules"].items())
            lines.append(f"| `{row['from_zone']}` | `{row['to_zone']}` | {row['app_proto']} | {row['allowed']} | "
                         f"{row['violating']} | {rules} |")
        lines.append("")
    if report["top_violations"]:
        lines += ["### Top violating flows", "", "| client | server | zones | protocol | rule | flows |",
                  "|---|---|---|---|---|---:|"]
        for v in report["top_violations"]:
            lines.append(f"| {v['src_ip']} | {_server(v)} | `{v['from_zone']}` -> `{v['to_zone']}` | "
                         f"{v['app_proto']} | {v['rule']} | {v['flows']} |")
        lines.append("")
    return "\n".join(lines)


def render_table(report: dict[str, Any], console: Console) -> None:
    damaged = [c for c in report["captures"] if c["error"]]
    for capture in damaged:
        console.print(f"[red]capture {escape(capture['path'])} damaged: {escape(capture['error'])}[/red]")
    zones_from = sorted({row["from_zone"] for row in report["matrix"]})
    zones_to = sorted({row["to_zone"] for row in report["matrix"]})
    cells = {(row["from_zone"], row["to_zone"]): row for row in report["matrix"]}
    matrix = new_table(title=f"Zone matrix, policy {report['policy']} (default {report['default']}): "
                         "flows allowed / violating", title_justify="left")
    matrix.add_column("from \\ to")
    for zone in zones_to:
        matrix.add_column(zone, justify="right")
    for f in zones_from:
        matrix.add_row(f, *(_cell_text(cells.get((f, t)), markdown=False) for t in zones_to))
    console.print(matrix)
    protocols = new_table(title="Flows by protocol", title_justify="left")
    for column in ("from", "to", "protocol", "allowed", "violating", "decided by"):
        protocols.add_column(column, justify="right" if column in ("allowed", "violating") else "left")
    for row in report["by_protocol"]:
        violating = f"[red]{row['violating']}[/red]" if row["violating"] else "0"
        rules = ", ".join(f"{name} ({n})" for name, n in row["rules"].items())
        protocols.add_row(row["from_zone"], row["to_zone"], row["app_proto"], str(row["allowed"]), violating,
                          escape(rules))
    console.print(protocols)
    if report["top_violations"]:
        top = new_table(title="Top violating flows", title_justify="left")
        for column in ("client", "server", "zones", "protocol", "rule", "flows"):
            top.add_column(column, justify="right" if column == "flows" else "left")
        for v in report["top_violations"]:
            top.add_row(escape(v["src_ip"]), escape(_server(v)), f"{v['from_zone']} -> {v['to_zone']}",
                        v["app_proto"], escape(v["rule"]), str(v["flows"]))
        console.print(top)
    verdict = ("[green]no violation[/green]" if not report["flows_violating"]
               else f"[red]{report['flows_violating']} violating flow(s)[/red]")
    console.print(f"{report['flows_checked']} flow(s) checked, {verdict}")


def _server(violation: dict[str, Any]) -> str:
    address = violation["dest_ip"]
    if ":" in address:
        address = f"[{address}]"
    return f"{address}:{violation['dest_port']}" if violation["dest_port"] is not None else address


def _cell_text(row: dict[str, Any] | None, *, markdown: bool) -> str:
    if row is None:
        return ""
    allowed, violating = row["allowed"], row["violating"]
    if not violating:
        return f"{allowed} / 0"
    if markdown:
        return f"{allowed} / **{violating}**"
    return f"{allowed} / [red]{violating}[/red]"
