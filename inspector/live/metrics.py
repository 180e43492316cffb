"""Prometheus metrics of the live sidecar and the small HTTP server that exports them.

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms, base units):

| metric | labels | what |
|---|---|---|
| inspector_requests_total | protocol | requests inspected, by their record's protocol (http, grpc, s3, ...) |
| inspector_transactions_total | protocol | transaction records completed |
| inspector_alerts_total | sid, action | alerts written (`action`: allowed or blocked) |
| inspector_blocks_total | reason | requests, messages or responses blocked (rule, policy, fail_closed) |
| inspector_inspection_seconds | phase | time spent inspecting (request, message, response) |
| inspector_parse_anomalies_total | layer, event | parser anomalies |
| inspector_uninspectable_total | action | bodies or messages that could not be inspected, and what the policy did |
| inspector_fail_open_total / inspector_fail_closed_total | | internal errors, and which way they failed |
| inspector_ratelimit_backend_errors_total | | shared rate-limit backend (Redis) errors and timeouts |
| inspector_ratelimit_backend_up | | 1 when the shared backend answers, 0 while the fallback is in use |
| inspector_upstream_errors_total | | requests the upstream failed (refused, reset, closed mid-response) |
| inspector_streams_total | kind | flows inspected while streaming (grpc_stream, request_body, response_body) |
| inspector_rules_loaded | | rules in the running set |
| inspector_rule_info | sid, signature, level, severity, rule_action | 1 per rule in the set (join on sid) |
| inspector_policy_flows_total | from_zone, to_zone, app_proto, verdict | flows checked against the policy |
| inspector_reloads_total | result | SIGHUP reloads (ok, failed) |
| inspector_eve_records_total | event_type | EVE records written |

Offline runs write the same metrics, where they mean the same thing, to a node-exporter textfile
(inspector.sinks.textfile builds a `Metrics` and fills it). A private registry per sidecar
(several can live in one test process). `/metrics` serves the
text format, `/healthz` answers 200 with a JSON status while the sidecar runs (503 before it
listens or after it stopped).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # process-wide: `*_created` series double the scrape for nothing
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("inspector_requests", "Requests inspected, by protocol.", ["protocol"],
                                registry=registry)
        self.transactions = Counter("inspector_transactions", "Transaction records completed, by protocol.",
                                    ["protocol"], registry=registry)
        self.alerts = Counter("inspector_alerts", "Alerts written, by rule sid and action.", ["sid", "action"],
                              registry=registry)
        self.blocks = Counter("inspector_blocks", "Requests, stream messages or responses blocked.", ["reason"],
                              registry=registry)
        self.inspection = Histogram("inspector_inspection_seconds", "Time spent inspecting.", ["phase"],
                                    buckets=_LATENCY_BUCKETS, registry=registry)
        self.anomalies = Counter("inspector_parse_anomalies", "Parser anomalies.", ["layer", "event"],
                                 registry=registry)
        self.uninspectable = Counter("inspector_uninspectable", "Bodies or messages that could not be "
                                     "inspected, by the action the policy took.", ["action"], registry=registry)
        self.fail_open = Counter("inspector_fail_open", "Internal errors that let traffic pass.", registry=registry)
        self.fail_closed = Counter("inspector_fail_closed", "Internal errors that blocked traffic.",
                                   registry=registry)
        self.ratelimit_errors = Counter("inspector_ratelimit_backend_errors", "Shared rate-limit backend errors.",
                                        registry=registry)
        self.ratelimit_up = Gauge("inspector_ratelimit_backend_up", "1 when the shared rate-limit backend "
                                  "answers (or none is configured), 0 while the fallback is used.",
                                  registry=registry)
        self.ratelimit_up.set(1)
        self.upstream_errors = Counter("inspector_upstream_errors", "Requests the upstream failed (refused, reset, "
                                       "closed before or during the response).",
                                       registry=registry)
        self.streams = Counter("inspector_streams", "Flows inspected while streaming.", ["kind"],
                               registry=registry)
        self.body_holds = Counter("inspector_body_holds", "Large bodies held back until inspected, by what "
                                  "ended the hold: settled (the first bytes settled the block rules), prefix "
                                  "(the kept prefix was in), end (the body ended first).", ["ended_by"],
                                  registry=registry)
        self.streams_handed_back = Counter("inspector_streams_handed_back", "Large answers whose rest mitmproxy "
                                           "forwarded without a call per chunk: past the inspected prefix, no "
                                           "parser reading on, a length the HTTP/1 reader enforces.",
                                           registry=registry)
        self.rules_loaded = Gauge("inspector_rules_loaded", "Rules in the running set.", registry=registry)
        self.rule_info = Gauge("inspector_rule_info", "1 for each rule of the running set: its title, level, "
                               "severity and action by sid.", ["sid", "signature", "level", "severity", "rule_action"],
                               registry=registry)
        self.policy_flows = Counter("inspector_policy_flows", "Flows checked against the segmentation policy, "
                                    "by zones, protocol and verdict (allowed, denied).",
                                    ["from_zone", "to_zone", "app_proto", "verdict"], registry=registry)
        self.reloads = Counter("inspector_reloads", "Rule and config reloads.", ["result"], registry=registry)
        self.eve_records = Counter("inspector_eve_records", "EVE records written.", ["event_type"],
                                   registry=registry)
        self.eve_write_errors = Counter("inspector_eve_write_errors", "Failed writes or opens of the EVE output "
                                        "(records are held and retried).", registry=registry)
        self.eve_backlog = Gauge("inspector_eve_backlog_records", "EVE records held in memory, waiting for the "
                                 "output to be writable.", registry=registry)
        self.eve_dropped = Counter("inspector_eve_records_dropped", "EVE records dropped because the output "
                                   "stayed unwritable and the spool was full (alerts last).", ["event_type"],
                                   registry=registry)
        # Touched for every request: their children are looked up in a dict, not through
        # prometheus_client's labels() (a lock and a validation per call).
        for metric in (self.requests, self.transactions, self.alerts, self.blocks, self.inspection,
                       self.anomalies, self.eve_records):
            _memoize_children(metric)

    def set_rules(self, rules: Iterable[Any]) -> None:
        """The running rule set: `inspector_rules_loaded` and one `inspector_rule_info` per rule."""
        rules = list(rules)
        self.rules_loaded.set(len(rules))
        self.rule_info.clear()
        for rule in rules:
            self.rule_info.labels(str(rule.sid), rule.title, rule.level, str(rule.severity), rule.action).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _memoize_children(metric: Any) -> None:
    """Replace `metric.labels` by a memo of its children (for metrics never cleared: their label
    values are bounded sets, protocols, phases, sids, layers)."""
    children: dict[tuple, Any] = {}
    labels = metric.labels

    def cached(*values: str) -> Any:
        child = children.get(values)
        if child is None:
            child = children[values] = labels(*values)
        return child

    metric.labels = cached


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.metrics.render())
        elif path in ("/healthz", "/health", "/-/healthy"):
            status = self.server.health()
            code = 200 if status.get("status") == "ok" else 503
            self._send(code, "application/json", json.dumps(status).encode() + b"\n")
        else:
            self._send(404, "text/plain", b"not found: /metrics, /healthz\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: scrapes every few seconds
        return


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Callable[[], dict]) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class MetricsExporter:
    """`/metrics` and `/healthz` on a background thread."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Callable[[], dict]) -> None:
        self._server = _MetricsServer((host, port), metrics, health)
        self._thread = threading.Thread(target=self._server.serve_forever, name="inspector-metrics",
                                        kwargs={"poll_interval": 0.5}, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
