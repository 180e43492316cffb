"""Live inspection without mitmproxy: exchanges in, decisions and EVE records out.

A live transaction is inspected as it progresses, each time with the same engine that reads
captures:

1. **request** - the request is complete (or its first part, for a body that streams): a
   request-only record is evaluated by the block rules before anything goes upstream, so a
   block stops it (skipped when the rule set has no block rules and nothing else can block);
2. **message** - inside a gRPC stream, each request message on its own, by every rule (see
   grpcstream.py: alert rules fire once per stream, block rules on any message);
3. **response** - the first part of a streamed response body, by the block rules; then the
   whole exchange, when the response is complete, by every rule that has not matched yet.

Alert rules therefore see the whole exchange, as offline analysis does; only block rules act
on part of it.

The engine is told which rules already matched the transaction (`Engine.process(..., skip=)`),
so a rule matches a transaction at most once, at the earliest point it can: alerts are not
repeated and rate windows count each transaction once, as offline. (A rule that matches the
request alone but not the whole exchange - a negation of a response field - fires live and not
offline; no shipped rule is written that way.)

The transaction record is written when the transaction completes; alerts and anomalies as they
are found, alerts flushed before any block response leaves. What cannot be inspected (a gRPC
message compressed with an encoding we cannot undo, a body whose Content-Encoding we cannot
decode) follows the `uninspectable` policy: block, alert or allow, never silently.

With a segmentation policy (`policy`, an inspector.policy.PolicyMonitor), each completed
transaction is checked (once per connection and protocol), and connections that close without
one are checked as they close; a flow the policy does not allow gives a `policy` record, always
written (also without log_transactions) and evaluated by the engine like any record.

With an anomaly baseline (`baseline`, inspector.anomaly), each completed record is offered to it
and the anomaly records it returns are written and evaluated. In forward mode (`settings.egress`)
every record carries the `egress` decision of the config's allowlists, and each CONNECT is an
`egress` record evaluated before the tunnel opens (`connect`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inspector.anomaly.baseline import Baseline
from inspector.apps import HTTP_LAYERS, transaction_record
from inspector.egress.policy import EgressPolicy, egress_policy_from_config, split_authority
from inspector.engine import ALERT, ALLOW, BLOCK, Engine, Verdict
from inspector.fields import catalogue
from inspector.http import HttpExchange, HttpMessage, SessionAnomaly
from inspector.limits import Limits
from inspector.live import settle
from inspector.live.blocking import DEFAULT_MESSAGE, block_message
from inspector.live.flowinfo import LiveFlowInfo
from inspector.live.metrics import Metrics
from inspector.policy.monitor import Check, PolicyMonitor
from inspector.protocols.grpc import GrpcFramer
from inspector.records import anomaly_record, base_record
from inspector.rules.layers import layer_closure

logger = logging.getLogger("inspector.live")
#: The layers an HTTP transaction's record can have: its event type and objects (apps.transaction_record,
#: plus what :meth:`LiveInspector.record` adds).
_ANSWER_LAYERS = frozenset({"http", "egress", "principal", *(entry[0] for entry in HTTP_LAYERS)})

UNINSPECTABLE_POLICIES = ("block", "alert", "allow")

#: Records are flushed at least this often (alerts are flushed at once).
FLUSH_INTERVAL = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSettings:
    """What the live path is told by its options (inspector/live/options.py parses them)."""

    limits: Limits = field(default_factory=Limits)
    block_message: str = DEFAULT_MESSAGE
    uninspectable: str = "block"
    fail_open: bool = True
    log_transactions: bool = True
    #: Bodies larger than this (of unknown length: once past it) stream past; their first
    #: `limits.body_keep_bytes` are held back and inspected before anything is forwarded.
    stream_threshold: int = 1024 * 1024
    #: gRPC methods (fnmatch patterns on the :path) inspected message by message while streaming.
    stream_methods: tuple[str, ...] = ("/inference.GRPCInferenceService/ModelStreamInfer",)
    #: Forward proxy (egress control): records get the `egress` decision of the config's
    #: allowlists (inspector.egress), and CONNECTs are records of their own.
    egress: bool = False


@dataclass(slots=True)
class Connection:
    """What is known about one client connection."""

    info: LiveFlowInfo
    principal: dict[str, Any] | None = None
    next_tx: int = 0


@dataclass(slots=True)
class Transaction:
    """One request and its response while they pass."""

    conn: Connection
    tx_id: int
    ts: float
    request_head: HttpMessage
    request_side: HttpExchange | None = None
    matched: set[int] = field(default_factory=set)
    anomalies_seen: set[tuple[str, str, str]] = field(default_factory=set)
    blocked: bool = False
    #: Counted in inspector_requests_total.
    counted: bool = False
    #: Why part of it could not be inspected (reported once), or "".
    uninspectable: str = ""
    record: dict[str, Any] | None = None
    completed: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # allow, alert, block
    record: dict[str, Any]
    message: str = ""
    reason: str = ""  # rule, policy, fail_closed
    sid: int | None = None
    #: False when nothing looked at the exchange (no block rule could act on it, or the
    #: inspection failed): what its parsers would have found is still to be written.
    inspected: bool = True


class LiveInspector:
    """The engine, the EVE writer and the metrics, driven by the addon's hooks."""

    def __init__(self, engine: Engine, write: Callable[[dict[str, Any]], None], flush: Callable[[], None],
                 metrics: Metrics, settings: LiveSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._write = write
        self._flush = flush
        self._last_flush = time.monotonic()
        self._dirty = False
        self._split: tuple[Engine | None, frozenset[int]] = (None, frozenset())
        self._block_layers: list = list(HTTP_LAYERS)
        self._settle_level: int | None = None
        self.errors = 0
        #: The segmentation policy, when one is loaded (set by the runtime).
        self.policy: PolicyMonitor | None = None
        #: The anomaly baseline (inspector.anomaly), when one is loaded or learned online.
        self.baseline: Baseline | None = None
        self._egress: tuple[Engine | None, EgressPolicy | None] = (None, None)

    def block_sids(self) -> frozenset[int]:
        """Sids of the running set's block rules (re-evaluated on every message of a stream); the
        layers they need are noted with them."""
        engine = self.engine
        if self._split[0] is not engine:
            block_rules = [r for r in engine.ruleset.rules if r.action == BLOCK]
            needed = layer_closure(event for rule in block_rules for event in rule.events)
            self._block_layers = [entry for entry in HTTP_LAYERS if entry[0] in needed]
            self._settle_level = settle.settle_level(block_rules, settle.model_layers(catalogue()),
                                                     engine.config.suppressions.entries, _ANSWER_LAYERS)
            self._split = (engine, frozenset(r.sid for r in block_rules))
        return self._split[1]

    def answer_settled_at(self, head: HttpMessage) -> settle.SettledAt | None:
        """How soon a held answer's first bytes settle the running block rules
        (inspector.live.settle), or None when only the full hold does (the rules read what the
        rest could change, or the answer is content-coded or gRPC)."""
        self.block_sids()
        level = self._settle_level
        if level is None or not settle.answer_can_settle(head):
            return None
        return settle.settled_at_for(level)

    def blocking_possible(self) -> bool:
        """Whether anything can be enforced before the response: block rules, or the block policy
        for what cannot be inspected. Without them a transaction is evaluated once, whole."""
        return bool(self.block_sids()) or self.settings.uninspectable == "block"

    # -- transactions ---------------------------------------------------------------------------

    def begin(self, conn: Connection, head: HttpMessage, ts: float) -> Transaction:
        tx = Transaction(conn=conn, tx_id=conn.next_tx, ts=ts, request_head=head)
        conn.next_tx += 1
        return tx

    def inspect(self, tx: Transaction, exchange: HttpExchange, anomalies: list[SessionAnomaly], phase: str,
                *, skip: set[int] | None = None, block_only: bool = False, partial: bool = False,
                enforce: bool = True) -> Decision:
        """Evaluate the exchange as it stands. Alerts and new anomalies are written now.

        `block_only`: a step before the transaction is complete, where only block rules are worth
        evaluating (alert rules wait for the whole exchange, as offline); when one blocks, the
        other rules are evaluated too, since the transaction will not complete.
        `partial`: the exchange holds the first part of a body that goes on: anomalies about
        where a body ends (`*_truncated`) are not the body's, and wait for its whole view.
        `enforce`: False when nothing can be stopped any more (a streamed answer that went
        out): a block verdict is written as an alert `allowed`, and the decision is alert."""
        started = time.perf_counter()
        # Before the exchange is complete only block rules look at it: only their layers run.
        layers = None
        if block_only:
            self.block_sids()
            layers = self._block_layers
        record, layer_anomalies = self.record(tx, exchange, layers)
        cut = self._cut_for_block_rules(exchange, layer_anomalies)
        if partial:
            anomalies = [a for a in anomalies if not a.event.endswith("_truncated")]
            layer_anomalies = [a for a in layer_anomalies if not a[1].endswith("_truncated")]
        if not tx.counted:
            tx.counted = True
            self.metrics.requests.labels(record["event_type"]).inc()
        matched = tx.matched if skip is None else skip
        engine = self.engine
        verdict, matched_now = engine.evaluate(record, tx.ts, skip=matched, block_only=block_only, enforce=enforce)
        matched |= matched_now
        if block_only and verdict.action == BLOCK:
            if layers is not None:  # the transaction ends here: every layer, for the other rules
                record, more = self.record(tx, exchange)
                layer_anomalies = [*layer_anomalies, *more]
            rest, matched_now = engine.evaluate(record, tx.ts, skip=matched, enforce=enforce)
            matched |= matched_now
            if rest.alerts:
                verdict = Verdict(action=BLOCK, alerts=verdict.alerts + rest.alerts, rules=verdict.rules + rest.rules)
        action, block_rule = verdict.action, _first_block_rule(verdict)
        extra = self.record_anomalies(tx, anomalies, layer_anomalies, enforce=enforce)
        for anomaly_verdict in extra:
            if anomaly_verdict.action == BLOCK and action != BLOCK:
                action, block_rule = BLOCK, _first_block_rule(anomaly_verdict)
            elif anomaly_verdict.action == ALERT and action == ALLOW:
                action = ALERT
        alerts = [*verdict.alerts, *(alert for v in extra for alert in v.alerts)]
        decision = Decision(action=action, record=record)
        if action == BLOCK:
            decision = self._blocked_by(block_rule, record)
        elif not tx.uninspectable:
            reason = uninspectable_reason(exchange) or cut
            if reason:
                tx.uninspectable = reason
                decision = self._uninspectable(reason, record, enforce) or decision
        if not enforce:
            held = [rule.sid for v in (verdict, *extra) for rule in v.rules if rule.action == BLOCK]
            if held:
                logger.info("inspector: block rule %s matched a streamed answer that already went out: alert only",
                            ", ".join(map(str, held)))
        self._alerts(alerts)
        tx.record = record
        self.metrics.inspection.labels(phase).observe(time.perf_counter() - started)
        if decision.action == BLOCK:
            self.metrics.blocks.labels(decision.reason).inc()
        return decision

    def complete(self, tx: Transaction, exchange: HttpExchange, anomalies: list[SessionAnomaly], *,
                 evaluate: bool = True, enforce: bool = True, partial: bool = False) -> Decision:
        """The transaction is over: evaluate the whole exchange (unless it was blocked) and write
        its record (`enforce`, `partial`: see :meth:`inspect`; `partial` for a transfer the
        sidecar cut itself)."""
        if tx.completed:
            return Decision(action=ALLOW, record=tx.record or {})
        tx.completed = True
        if evaluate:
            decision = self.inspect(tx, exchange, anomalies, "response", enforce=enforce, partial=partial)
        else:
            record, layer_anomalies = self.record(tx, exchange)
            self.record_anomalies(tx, anomalies, layer_anomalies, evaluate=False)
            decision = Decision(action=ALLOW, record=record)
            if not tx.counted:
                tx.counted = True
                self.metrics.requests.labels(record["event_type"]).inc()
        self.metrics.transactions.labels(decision.record["event_type"]).inc()
        if self.settings.log_transactions:
            self.write(decision.record)
        self.check_policy(decision.record, tx.ts)
        self.observe_baseline(decision.record, tx.ts)
        self.maybe_flush()
        return decision

    def observe_baseline(self, record: dict[str, Any], ts: float) -> None:
        """Offer a completed record to the anomaly baseline; its anomaly records are written (also
        without log_transactions) and evaluated. They come after the transaction: they alert, and
        cannot block the request that showed them."""
        if self.baseline is None or not record:
            return
        anomalies = self.baseline.observe(record, ts)
        for anomaly in anomalies:
            info = anomaly["anomaly"]
            self.metrics.anomalies.labels("baseline", info["kind"]).inc()
            self.write(anomaly)
            self._alerts(list(self.engine.process(anomaly, ts).alerts))

    # -- egress (forward proxy) -----------------------------------------------------------------

    def egress_policy(self) -> EgressPolicy | None:
        """The allowlists of the running config (re-read with the rules), in forward mode."""
        if not self.settings.egress:
            return None
        engine = self.engine
        if self._egress[0] is not engine:
            self._egress = (engine, egress_policy_from_config(engine.ruleset.config))
        return self._egress[1]

    def connect(self, info: LiveFlowInfo, host: str, port: int, ts: float) -> Decision:
        """A CONNECT from a workload: an `egress` record (phase connect), written and evaluated."""
        record = base_record(info, "egress", ts)
        policy = self.egress_policy()
        record["egress"] = policy.decide_connect(host, port) if policy is not None else {"host": host, "port": port}
        verdict = self.engine.process(record, ts)
        self.metrics.transactions.labels("egress").inc()
        self.write(record)
        self._alerts(list(verdict.alerts))
        self.observe_baseline(record, ts)
        if verdict.action == BLOCK:
            self.metrics.blocks.labels("rule").inc()
            return self._blocked_by(_first_block_rule(verdict), record)
        return Decision(action=verdict.action, record=record)

    def _blocked_by(self, rule: Any, record: dict[str, Any]) -> Decision:
        """A block by `rule` (None: a block with no rule to name), with the message clients get."""
        signature = rule.title if rule is not None else "blocked"
        sid = rule.sid if rule is not None else None
        return Decision(action=BLOCK, record=record, reason="rule", sid=sid,
                        message=block_message(self.settings.block_message, signature, sid))

    def record(self, tx: Transaction, exchange: HttpExchange, layers: list | None = None,
               ) -> tuple[dict[str, Any], list]:
        """The transaction record of the exchange as it stands, and its layers' anomalies
        (`layers`: only these of inspector.apps.HTTP_LAYERS)."""
        record, layer_anomalies = transaction_record(tx.conn.info, exchange, layers)
        record["tx_id"] = tx.tx_id
        policy = self.egress_policy()
        if policy is not None and exchange.request is not None:
            request = exchange.request
            authority = request.authority or request.header("host") or ""
            host, port = split_authority(authority, 443 if request.scheme == "https" else 80)
            record["egress"] = policy.decide_request(host, port, request.path)
        if tx.conn.principal is not None:
            record["principal"] = tx.conn.principal
        return record, layer_anomalies

    # -- segmentation policy --------------------------------------------------------------------

    def check_policy(self, record: dict[str, Any], ts: float) -> None:
        """Check a completed transaction record against the policy (once per connection and
        protocol); a violation's policy record is written and evaluated."""
        if self.policy is not None and record:
            self._policy_result(self.policy.check_record(record), ts)

    def connection_closed(self, info: LiveFlowInfo) -> None:
        """A client connection closed: checked if none of its transactions was."""
        if self.policy is not None:
            now = time.time()
            self._policy_result(self.policy.check_flow_end(info, now), now)

    def _policy_result(self, check: Check | None, ts: float) -> None:
        if check is None:
            return
        verdict = "allowed" if check.allowed else "denied"
        self.metrics.policy_flows.labels(check.from_zone, check.to_zone, check.app_proto, verdict).inc()
        if check.record is None:
            return
        self.write(check.record)
        self._alerts(list(self.engine.process(check.record, ts).alerts))
        self.flush()

    # -- failure policy -------------------------------------------------------------------------

    def failed(self, exc: BaseException, where: str) -> bool:
        """An internal error: count it, log it (with the traceback the first times), and say
        whether to block (fail-closed)."""
        self.errors += 1
        if self.settings.fail_open:
            self.metrics.fail_open.inc()
        else:
            self.metrics.fail_closed.inc()
            self.metrics.blocks.labels("fail_closed").inc()
        policy = "passing (fail-open)" if self.settings.fail_open else "blocking (fail-closed)"
        logger.error("inspector: internal error in %s, %s: %s: %s", where, policy, type(exc).__name__, exc,
                     exc_info=self.errors <= 5)
        return not self.settings.fail_open

    # -- output ---------------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        self._write(record)
        self._dirty = True
        self.metrics.eve_records.labels(record.get("event_type") or "unknown").inc()

    def flush(self) -> None:
        self._flush()
        self._dirty = False
        self._last_flush = time.monotonic()

    def flush_if_dirty(self) -> None:
        if self._dirty:
            self.flush()

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def _alerts(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        for alert in alerts:
            info = alert["alert"]
            self.metrics.alerts.labels(str(info["signature_id"]), info["action"]).inc()
            self.write(alert)
        self.flush()

    # -- anomalies and the uninspectable policy -------------------------------------------------

    def record_anomalies(self, tx: Transaction, anomalies: list[SessionAnomaly], layer_anomalies: list, *,
                         evaluate: bool = True, enforce: bool = True) -> list:
        """Write the anomalies not yet written for this transaction; their verdicts."""
        found = [(a.layer, a.event, a.message) for a in anomalies]
        found += layer_anomalies
        verdicts = []
        for key in found:
            if key in tx.anomalies_seen:
                continue
            tx.anomalies_seen.add(key)
            layer, event, message = key
            self.metrics.anomalies.labels(layer, event).inc()
            anomaly = anomaly_record(tx.conn.info, tx.ts, kind="applayer", layer=layer, event=event,
                                     message=message)
            anomaly["tx_id"] = tx.tx_id
            if self.settings.log_transactions:
                self.write(anomaly)
            if evaluate:
                verdicts.append(self.engine.process(anomaly, tx.ts, enforce=enforce))
        return verdicts

    def _cut_for_block_rules(self, exchange: HttpExchange, layer_anomalies: list) -> str:
        """Why a request a block rule needs was not inspected whole, or "": its body went past
        what is kept (`body_keep_bytes`, or the decompression cap) and the protocol layer of a
        block rule said it could not read the request whole (`<layer>_request_truncated`)."""
        request = exchange.request
        if request is None or (request.complete and not request.body_truncated) or not self.block_sids():
            return ""
        needed = {entry[0] for entry in self._block_layers}
        for layer, event, _ in layer_anomalies:
            if layer in needed and event.endswith("_request_truncated"):
                return (f"the request body was cut at {self.settings.limits.body_keep_bytes} bytes before the "
                        f"{layer} layer could read it whole")
        return ""

    def _uninspectable(self, reason: str, record: dict[str, Any], enforce: bool = True) -> Decision | None:
        policy = self.settings.uninspectable
        if not enforce and policy == "block":
            policy = "alert"
        self.metrics.uninspectable.labels(policy).inc()
        logger.info("inspector: %s (policy: %s)", reason, policy)
        if policy == "block":
            return Decision(action=BLOCK, record=record, reason="policy",
                            message=f"blocked by inspector: {reason}")
        if policy == "alert":
            return Decision(action=ALERT, record=record, reason="policy")
        return None


def _first_block_rule(verdict: Any) -> Any:
    for rule in verdict.rules:
        if rule.action == BLOCK:
            return rule
    return verdict.rules[0] if verdict.rules else None


def uninspectable_reason(exchange: HttpExchange) -> str:
    """Why (part of) the exchange could not be inspected, or ""."""
    for key, observer in exchange.observations.items():
        if isinstance(observer, GrpcFramer) and not observer.inspectable:
            side = key.split(".", 1)[-1]
            return f"a gRPC {side} message could not be decompressed (grpc-encoding {observer.encoding or 'none'})"
    for message in (exchange.request, exchange.response):
        if message is None or not message.body_length:
            continue
        if message.encoded:  # inspector.contentcoding: a coding it does not remove, or a broken stream
            return (f"the {message.kind} body's Content-Encoding {message.encoded!r} was not removed (not decoded "
                    "here, or the body does not decode)")
        codings = [c.strip() for c in (message.header("content-encoding") or "").lower().split(",")]
        codings = [c for c in codings if c not in ("", "identity")]
        if "aws-chunked" in codings and len(codings) > 1:  # the S3 layer undoes the framing, not a coding
            return f"the {message.kind} body uses Content-Encoding {', '.join(codings)}, which is not decoded"
    return ""
