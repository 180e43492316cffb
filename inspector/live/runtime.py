"""What the sidecar keeps running between option updates: rules and engine, rate store, EVE
writer, metrics exporter. Built from parsed options, reloaded on SIGHUP.

Reloading re-reads the rule files, the site config and the segmentation policy. A set that fails
validation is refused whole (rules, config and policy): the error lines are logged,
`inspector_reloads_total{result="failed"}` counts it, and the running rules stay. Rate windows
survive a reload (the same store serves the new engine), so a reload never resets a limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.engine import Engine
from inspector.live.inspection import LiveInspector, LiveSettings
from inspector.live.metrics import Metrics, MetricsExporter
from inspector.live.redis_rate import RedisRateStore
from inspector.policy import PolicyLoadError, PolicyMonitor, load_policy
from inspector.rules import RuleLoadError, RuleSet, load_config, load_rules
from inspector.rules.rate import MemoryRateStore, RateStore
from inspector.sinks.spool import SpoolingEveWriter

logger = logging.getLogger("inspector.live")


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """Everything a Runtime is built from (parsed options)."""

    rules: tuple[str, ...]
    config: str | None
    eve: str
    metrics: tuple[str, int] | None
    redis: str | None
    redis_timeout: float
    redis_retry: float
    settings: LiveSettings
    policy: str | None = None


def load_ruleset(rules: tuple[str, ...], config: str | None) -> RuleSet:
    """The rule set of the options (default: the shipped signatures), its warnings logged (an
    empty rules directory, a suppression of a sid no rule has). Raises RuleLoadError."""
    from inspector.rules.cli import rule_paths

    ruleset = load_rules(rule_paths(rules), load_config(config))
    for warning in ruleset.warnings:
        logger.warning("inspector rules: %s: warning: %s", warning.where, warning.message)
    return ruleset


def load_policy_monitor(path: str | None) -> PolicyMonitor | None:
    """The segmentation policy of the options, or None. Raises PolicyLoadError."""
    return PolicyMonitor(load_policy(path)) if path else None


def describe_errors(exc: RuleLoadError | PolicyLoadError) -> str:
    return "\n".join(str(error) for error in exc.errors)


class Runtime:
    def __init__(self, spec: RuntimeSpec, ruleset: RuleSet, metrics: Metrics | None = None,
                 policy: PolicyMonitor | None = None) -> None:
        self.spec = spec
        #: How the addon tuned mitmproxy: hook dispatch, read size, malloc (set by the addon; None: not reported).
        self.proxy_tuning: Callable[[], dict[str, Any]] | None = None
        self.metrics = metrics or Metrics()
        self._lock = threading.Lock()
        self.fallback = MemoryRateStore(ruleset.config.rate_max_keys)
        self.rate_store: RateStore = self.fallback
        self.redis: RedisRateStore | None = None
        if spec.redis:
            self.redis = RedisRateStore(spec.redis, timeout=spec.redis_timeout, retry_interval=spec.redis_retry,
                                        fallback=self.fallback, on_error=self._redis_error,
                                        on_state=self._redis_state)
            self.rate_store = self.redis
            if not self.redis.ping():
                logger.warning("inspector: Redis at %s does not answer yet: rate windows are in-process until "
                               "it does", self.redis._safe_url())
        self.writer = SpoolingEveWriter(spec.eve)  # a full or unwritable disk spools, never raises
        self._eve_errors = 0
        self._eve_dropped: dict[str, int] = {}
        self._writer_lock = threading.Lock()
        self.inspector = LiveInspector(self._engine(ruleset), self._write, self._flush, self.metrics,
                                       spec.settings)
        self.inspector.policy = policy
        self.metrics.set_rules(ruleset.rules)
        self.exporter: MetricsExporter | None = None
        self.listening = False
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start_exporter(self) -> None:
        if self.spec.metrics is None or self.exporter is not None:
            return
        host, port = self.spec.metrics
        self.exporter = MetricsExporter(host, port, self.metrics, self.health)
        self.exporter.start()
        logger.info("inspector: metrics on http://%s:%d/metrics, health on /healthz", *self.exporter.address)

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        with self._writer_lock:
            self.writer.close()
        if self.redis is not None:
            self.redis.close()

    def health(self) -> dict[str, Any]:
        engine = self.inspector.engine
        backend = "memory"
        if self.redis is not None:
            backend = "redis" if self.redis.up else "memory-fallback"
        health = {"status": "ok" if self.listening else "starting", "rules": len(engine.ruleset.rules),
                  "ratelimit_backend": backend, "internal_errors": self.inspector.errors}
        if self.proxy_tuning is not None:  # hookdispatch.py, readsize.py, malloctune.py
            health.update(self.proxy_tuning())
        if self.writer.failing:  # the EVE output cannot be written: records wait in memory
            health.update(eve="failing", eve_backlog=self.writer.backlog)
        return health

    # -- reload ---------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read rules and config (keeping the running set when they fail), reopen the EVE file."""
        with self._writer_lock:
            self.writer.reopen()
            self._eve_metrics()
        try:
            ruleset = load_ruleset(self.spec.rules, self.spec.config)
            policy = load_policy_monitor(self.spec.policy)
        except (RuleLoadError, PolicyLoadError) as exc:
            logger.error("inspector: reload refused, the running rules stay:\n%s", describe_errors(exc))
            self.metrics.reloads.labels("failed").inc()
            return False
        except OSError as exc:
            logger.error("inspector: reload refused, the running rules stay: %s", exc)
            self.metrics.reloads.labels("failed").inc()
            return False
        self.inspector.engine = self._engine(ruleset)
        self.inspector.policy = policy
        logger.warning("inspector: reloaded %d rules", len(ruleset.rules))
        self.metrics.set_rules(ruleset.rules)
        self.metrics.reloads.labels("ok").inc()
        return True

    def _engine(self, ruleset: RuleSet) -> Engine:
        return Engine(ruleset, ruleset.config, blocking=True, rate_store=self.rate_store)

    # -- EVE ------------------------------------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        with self._writer_lock:
            self.writer.write(record)

    def _flush(self) -> None:
        with self._writer_lock:
            self.writer.flush()
            self._eve_metrics()

    def _eve_metrics(self) -> None:
        """EVE output failures as metrics: write errors, records waiting, records dropped."""
        writer, metrics = self.writer, self.metrics
        if writer.write_errors != self._eve_errors:
            metrics.eve_write_errors.inc(writer.write_errors - self._eve_errors)
            self._eve_errors = writer.write_errors
        metrics.eve_backlog.set(writer.backlog)
        for event_type, count in writer.dropped.items():
            seen = self._eve_dropped.get(event_type, 0)
            if count != seen:
                metrics.eve_dropped.labels(event_type).inc(count - seen)
                self._eve_dropped[event_type] = count

    # -- Redis callbacks ------------------------------------------------------------------------

    def _redis_error(self, exc: Exception) -> None:
        self.metrics.ratelimit_errors.inc()

    def _redis_state(self, up: bool) -> None:
        self.metrics.ratelimit_up.set(1 if up else 0)
