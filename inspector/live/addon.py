"""The mitmproxy addon: HTTPFlow hooks -> session events -> records -> engine -> enforcement.

A plain class with hooks (mitmproxy's addon style). Options are declared in `load` (see
options.py for their help), parsed in `configure` (bad values raise OptionsError, which refuses
the update), and every hook opens with guard clauses.

Per request (see inspection.py for the phases):

* `requestheaders`: a gRPC stream method gets per-flow streaming callables (grpcstream.py); a
  body declaring a large length gets a held-back body stream (bodystream.py); a body of unknown
  length is buffered until it outgrows the threshold, then gets one (`defer_stream`); anything
  else is buffered by mitmproxy and inspected whole in `request`, before it goes upstream. A
  block there answers with the protocol's block response (blocking.py) and the request never
  leaves. A block on a body that already streams cuts it (`_aborter`).
* `responseheaders` / `response`: the response is inspected (streamed, or whole before the
  client gets it), the transaction record is written. An event stream (SSE, JSON lines) passes
  chunk by chunk (PassThroughStream) and is evaluated when it ends, alert only.
* `error`: upstream failures are counted; the transaction is written with what was seen.

Upstream HTTP/2 prior knowledge (h2c): `server_connect` sets the server connection's ALPN to h2
for the configured cleartext upstreams, which makes mitmproxy speak HTTP/2 without TLS (a
mitmproxy-internal behaviour, pinned to mitmproxy 12.3 and tested). mTLS: `tls_start_client`
makes the client-side TLS context require a certificate chaining to `inspector_client_ca`.
`tls_clienthello` writes a `tls` record (SNI, ALPN, JA4, JA3 ...) for each client hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http.http1 import expected_http_body_size

from inspector.engine import BLOCK
from inspector.http import TO_CLIENT, TO_SERVER, HttpMessage, SessionAnomaly
from inspector.live import gcfreeze
from inspector.live import options as opts
from inspector.live.blocking import BlockResponse, block_response, is_grpc_content_type
from inspector.live.bodystream import HeldBodyStream, Inspect, PassThroughStream
from inspector.live.flowinfo import LiveFlowInfo, flow_info
from inspector.live.grpcstream import GrpcRequestStream, GrpcResponseStream
from inspector.live.hookdispatch import dispatch_name, set_fast_dispatch
from inspector.live.inspection import FLUSH_INTERVAL, Connection, Decision, LiveInspector, LiveSettings, Transaction
from inspector.live.malloctune import restore_malloc, tune_malloc
from inspector.live.messages import (
    StreamedMessage,
    header_list,
    merge,
    raw_body,
    request_exchange,
    request_head,
    response_exchange,
    response_head,
)
from inspector.live.mtls import ClientCertVerifier
from inspector.live.principal import principal_from_certificate
from inspector.live.proxy import write_private
from inspector.live.rawstream import RawStream, handle_results
from inspector.live.readsize import parse_read_size, read_size, set_read_size
from inspector.live.runtime import Runtime, RuntimeSpec, describe_errors, load_policy_monitor, load_ruleset
from inspector.live.watch import files_fingerprint
from inspector.policy import PolicyLoadError
from inspector.policy.zones import proxied_destination
from inspector.protocols import pickle_scan
from inspector.protocols.tls import clienthello_events
from inspector.records import anomaly_record
from inspector.rules import RuleLoadError

logger = logging.getLogger("inspector.live")


class _FlowState:
    """The addon's bookkeeping for one HTTPFlow."""

    __slots__ = ("aborted", "request_stream", "response_head", "response_stream", "tx")

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.response_head: HttpMessage | None = None
        self.request_stream: GrpcRequestStream | HeldBodyStream | PassThroughStream | None = None
        self.response_stream: GrpcResponseStream | HeldBodyStream | PassThroughStream | None = None
        #: The sidecar cut the transfer (a block decided while a body streamed).
        self.aborted = False


class InspectorAddon:
    """Inspects and enforces every HTTP flow mitmproxy proxies."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self._spec: RuntimeSpec | None = None
        self._connections: dict[str, Connection] = {}
        self._flows: dict[str, _FlowState] = {}
        self._raw: dict[str, RawStream] = {}
        self._h2c: frozenset[str] = frozenset()
        self._client_verifier: ClientCertVerifier | None = None
        self._stream_threshold = 0
        self._flusher: asyncio.Task | None = None
        self._baseline: Any = None
        self._baseline_option: str | None = None
        self._watcher: asyncio.Task | None = None
        self._reload_interval = 0.0
        self._files: tuple = ()  # fingerprint of the rule, config and policy files last loaded
        self._malloc = "glibc"  # malloc thresholds: "glibc" (its own), "tuned", "not glibc"
        self._gc = "collector"  # start-up objects: "frozen" out of full collections, or "collector"

    # -- options --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        pickle_scan.preload()  # imported now, not by the first request that carries a pickle
        for spec in opts.OPTIONS:
            loader.add_option(name=spec.name, typespec=spec.typespec, default=spec.default, help=spec.help,
                              choices=spec.choices)

    def configure(self, updated: set[str]) -> None:
        if updated & {"inspector_fast_dispatch", "inspector_read_size", "inspector_malloc_tuning",
                      "inspector_gc_freeze"}:
            self._tune_mitmproxy()
        if not any(name.startswith("inspector_") for name in updated) and self.runtime is not None:
            return
        spec = self._parse_options()
        files = files_fingerprint(spec.rules, spec.config, spec.policy)  # before reading them
        try:
            ruleset = load_ruleset(spec.rules, spec.config)
        except RuleLoadError as exc:
            raise exceptions.OptionsError(f"inspector rules do not load:\n{describe_errors(exc)}") from exc
        except OSError as exc:
            raise exceptions.OptionsError(f"inspector rules do not load: {exc}") from exc
        try:
            policy = load_policy_monitor(spec.policy)
        except PolicyLoadError as exc:
            raise exceptions.OptionsError(f"inspector policy does not load:\n{describe_errors(exc)}") from exc
        old = self.runtime
        metrics = old.metrics if old is not None else None
        if old is not None:
            old.close()
        try:
            self.runtime = Runtime(spec, ruleset, metrics, policy)
        except OSError as exc:
            raise exceptions.OptionsError(f"inspector: cannot open {spec.eve}: {exc}") from exc
        self._spec = spec
        self._files = files
        if getattr(ctx.options, "stream_large_bodies", None) != str(self._stream_threshold):
            # mitmproxy buffers a body of unknown length up to this size, then streams it (see defer_stream)
            ctx.options.update(stream_large_bodies=str(self._stream_threshold))
        self.runtime.inspector.baseline = self._baseline
        master = ctx.master
        self.runtime.proxy_tuning = lambda: {"hook_dispatch": dispatch_name(master), "read_size": read_size(),
                                             "malloc": self._malloc, "gc": self._gc}
        if old is not None:
            self._refreeze()
        if old is not None and old.listening:
            self.runtime.listening = True
            self._start_exporter()

    def _tune_mitmproxy(self) -> None:
        """Apply the options that tune mitmproxy and the process: the hook dispatch
        (hookdispatch.py), the read size (readsize.py) and glibc's malloc thresholds
        (malloctune.py: put back to glibc's starting ones when turned off after being set;
        `_malloc` says which for /health) and the start-up objects frozen out of the garbage
        collector's full collections (gcfreeze.py). From `configure` when they change and from `running`,
        as mitmproxy's first configure names only the options set away from their defaults."""
        o = ctx.options
        try:
            size = parse_read_size(o.inspector_read_size)  # first: a refused update changes nothing
        except ValueError as exc:
            raise exceptions.OptionsError(f"inspector: {exc}") from exc
        set_fast_dispatch(ctx.master, o.inspector_fast_dispatch)
        set_read_size(size)
        if o.inspector_malloc_tuning:
            self._malloc = "tuned" if tune_malloc() else "not glibc"
        elif self._malloc == "tuned":
            restore_malloc()
            self._malloc = "glibc"
        if o.inspector_gc_freeze:
            gcfreeze.freeze()
            self._gc = "frozen"
        elif self._gc == "frozen":
            gcfreeze.thaw()
            self._gc = "collector"

    def _refreeze(self) -> None:
        """After a rule set was replaced: its objects go back to the collector, the new ones are frozen."""
        if self._gc == "frozen":
            gcfreeze.refreeze()

    def _parse_options(self) -> RuntimeSpec:
        o = ctx.options
        try:
            metrics = opts.parse_metrics(o.inspector_metrics)
            redis = opts.parse_redis_url(o.inspector_redis)
            timeout = opts.parse_positive(o.inspector_redis_timeout, "inspector_redis_timeout")
            if o.inspector_reload_interval < 0:
                raise ValueError(f"inspector_reload_interval: {o.inspector_reload_interval} is negative (0: off)")
            self._reload_interval = float(o.inspector_reload_interval)
            retry = opts.parse_positive(o.inspector_redis_retry, "inspector_redis_retry")
            threshold = opts.parse_size(o.inspector_stream_threshold)
            methods = opts.parse_stream_methods(o.inspector_stream_methods)
            self._h2c = opts.parse_h2c_upstreams(o.inspector_h2c_upstreams)
            opts.parse_block_message(o.inspector_block_message)
        except ValueError as exc:
            raise exceptions.OptionsError(f"inspector: {exc}") from exc
        if self._h2c and getattr(o, "connection_strategy", "lazy") != "lazy":
            # With eager connections mitmproxy opens the upstream before the ALPN can be set:
            # measured 1-4 % of new h2c connections failing.
            raise exceptions.OptionsError("inspector_h2c_upstreams needs --set connection_strategy=lazy")
        self._client_verifier = None
        if o.inspector_client_ca is not None:
            try:
                self._client_verifier = ClientCertVerifier(o.inspector_client_ca)
            except (OSError, ValueError) as exc:
                raise exceptions.OptionsError(f"inspector_client_ca: {exc}") from exc
        self._stream_threshold = threshold
        settings = LiveSettings(block_message=o.inspector_block_message, uninspectable=o.inspector_uninspectable,
                                fail_open=o.inspector_fail == "open",
                                log_transactions=o.inspector_log_transactions,
                                stream_threshold=threshold, stream_methods=methods, egress=o.inspector_egress)
        if o.inspector_baseline_save and not o.inspector_baseline:
            raise exceptions.OptionsError("inspector_baseline_save needs inspector_baseline (a file, or online)")
        if o.inspector_baseline != self._baseline_option:
            from inspector.anomaly.baseline import BaselineError
            from inspector.anomaly.cli import load_baseline

            try:
                self._baseline = load_baseline(o.inspector_baseline) if o.inspector_baseline else None
            except BaselineError as exc:
                raise exceptions.OptionsError(f"inspector_baseline: {exc}") from exc
            self._baseline_option = o.inspector_baseline
        return RuntimeSpec(rules=tuple(o.inspector_rules), config=o.inspector_config, eve=o.inspector_eve,
                           metrics=metrics, redis=redis, redis_timeout=timeout, redis_retry=retry,
                           settings=settings, policy=o.inspector_policy)

    # -- lifecycle ------------------------------------------------------------------------------

    def running(self) -> None:
        self._tune_mitmproxy()
        if self.runtime is None:
            return
        self.runtime.listening = True
        self._start_exporter()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_files())
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)

    async def _flush_periodically(self) -> None:
        """Records written by hooks reach the file within FLUSH_INTERVAL even when traffic stops."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self.runtime is not None:
                self.runtime.inspector.flush_if_dirty()

    async def _watch_files(self) -> None:
        """With inspector_reload_interval, the rule, config and policy files are checked at that
        interval; a change reloads them as SIGHUP does (once per change: a set that fails is not
        retried until the files change again)."""
        while True:
            interval = self._reload_interval
            await asyncio.sleep(interval if interval > 0 else 1.0)
            spec = self._spec
            if interval <= 0 or spec is None or self.runtime is None:
                continue
            files = files_fingerprint(spec.rules, spec.config, spec.policy)
            if files != self._files:
                logger.warning("inspector: rule, config or policy files changed: reloading")
                self._reload(files)

    def _start_exporter(self) -> None:
        assert self.runtime is not None
        try:
            self.runtime.start_exporter()
        except OSError as exc:
            logger.error("inspector: metrics exporter not started: %s", exc)

    def reload(self) -> bool:
        """SIGHUP: rules and config re-read (the running ones stay if they fail), EVE reopened, the
        baseline saved (inspector_baseline_save)."""
        spec = self._spec
        if self.runtime is None or spec is None:
            return False
        return self._reload(files_fingerprint(spec.rules, spec.config, spec.policy))

    def _reload(self, files: tuple) -> bool:
        """Reload, `files` being the fingerprint of what is about to be read."""
        assert self.runtime is not None
        self._save_baseline()
        self._files = files
        reloaded = self.runtime.reload()
        if reloaded:
            self._refreeze()
        return reloaded

    def _save_baseline(self) -> None:
        """Write the baseline to inspector_baseline_save, once it is past its warm-up (a file that
        is loaded counts as warmed up, so an online baseline is not written before)."""
        path = ctx.options.inspector_baseline_save if self._baseline is not None else None
        if not path:
            return
        if not self._baseline.warmed_up:
            logger.warning("inspector: baseline not saved to %s: still in its warm-up", path)
            return
        try:
            write_private(path, self._baseline.to_text().encode(), atomic=True)
            logger.info("inspector: baseline saved to %s (%d records learned)", path, self._baseline.records)
        except OSError as exc:
            logger.error("inspector: cannot save the baseline to %s: %s", path, exc)

    def done(self) -> None:
        self._save_baseline()
        for task in (self._flusher, self._watcher):
            if task is not None:
                task.cancel()
        self._flusher = self._watcher = None
        if self.runtime is not None:
            self.runtime.listening = False
            self.runtime.close()

    def live_inspector(self) -> LiveInspector:
        assert self.runtime is not None
        return self.runtime.inspector

    # -- connections ----------------------------------------------------------------------------

    def client_connected(self, client: Any) -> None:
        self._connections[client.id] = Connection(info=flow_info(client.peername, client.sockname,
                                                                 client.timestamp_start or time.time()))

    def client_disconnected(self, client: Any) -> None:
        conn = self._connections.pop(client.id, None)
        if conn is not None and self.runtime is not None:
            try:
                self.live_inspector().connection_closed(conn.info)
            except Exception as exc:
                self.live_inspector().failed(exc, "connection close")

    def _set_zones(self, info: LiveFlowInfo, server: Any) -> None:
        """The connection's zones, once the policy can tell them: the client's, and the upstream
        server's (the listener's when the upstream is on loopback; see proxied_destination)."""
        policy = self.live_inspector().policy
        if policy is None or (info.zones is not None and info.zones[1] is not None):
            return
        address = getattr(server, "address", None)
        peer = getattr(server, "peername", None)
        destination = proxied_destination(info.dest_text, str(address[0]) if address else None,
                                          str(peer[0]) if peer else None)
        info.zones = policy.zones(info.src_text, destination)

    def _connection(self, flow: http.HTTPFlow) -> Connection:
        client = flow.client_conn
        conn = self._connections.get(client.id)
        if conn is None:
            conn = Connection(info=flow_info(client.peername, client.sockname, client.timestamp_start or 0.0))
            self._connections[client.id] = conn
        if not conn.info.app_proto:
            conn.info.app_proto = "http2" if flow.request.is_http2 else "http"
        self._set_zones(conn.info, flow.server_conn)
        return conn

    def server_connect(self, data: Any) -> None:
        server = data.server
        if not self._h2c or server.tls or server.address is None:
            return
        host, port = server.address[0], server.address[1]
        if "*" in self._h2c or f"{str(host).lower()}:{port}" in self._h2c:
            server.alpn = b"h2"

    def tls_start_client(self, data: Any) -> None:
        verifier = self._client_verifier
        if verifier is None:
            return
        from OpenSSL import SSL

        try:
            if data.ssl_conn is None:  # script addons run before mitmproxy's tlsconfig: let it build
                ctx.master.addons.get("tlsconfig").tls_start_client(data)
            data.ssl_conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verifier.callback)
        except Exception as exc:
            # Never let a client in unverified: a connection we could not configure is refused.
            logger.error("inspector: cannot require a client certificate (%s): refusing the connection", exc)
            if data.ssl_conn is not None:
                data.ssl_conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _refuse)

    def tls_established_client(self, data: Any) -> None:
        if self._client_verifier is None or not data.conn.certificate_list:
            return
        try:
            principal = principal_from_certificate(data.conn.certificate_list[0].to_cryptography())
        except Exception as exc:
            self.live_inspector().failed(exc, "client certificate")
            return
        conn = self._connections.get(data.conn.id)
        if conn is None:
            conn = Connection(info=flow_info(data.conn.peername, data.conn.sockname,
                                             data.conn.timestamp_start or 0.0))
            self._connections[data.conn.id] = conn
        conn.principal = principal

    def tls_clienthello(self, data: Any) -> None:
        """One `tls` record per client hello (SNI, ALPN, JA4, JA3 ...), evaluated by the rules; a
        block verdict closes the connection."""
        if self.runtime is None:
            return
        client = data.context.client
        try:
            conn = self._connections.get(client.id)
            if conn is None:
                conn = Connection(info=flow_info(client.peername, client.sockname,
                                                 client.timestamp_start or time.time()))
                self._connections[client.id] = conn
            self._set_zones(conn.info, data.context.server)
            stream = RawStream(dataclasses.replace(conn.info, app_proto="tls"), self.live_inspector().settings.limits)
            stream.tx_id, conn.next_tx = conn.next_tx, conn.next_tx + 1
            events = clienthello_events(data.client_hello.raw_bytes(wrap_in_record=False), time.time())
            block = handle_results(stream, events, self.live_inspector(), time.time) == BLOCK
            if block:
                self.live_inspector().metrics.blocks.labels("rule").inc()
        except Exception as exc:
            block = self.live_inspector().failed(exc, "TLS ClientHello")
        if block:
            self._close_tcp(_Connections(client_conn=client, server_conn=data.context.server))

    # -- HTTP -----------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """Forward mode: a CONNECT is an `egress` record; a block answers 403 and no tunnel opens."""
        if self.runtime is None or not self.live_inspector().settings.egress or flow.response is not None:
            return
        try:
            conn = self._connection(flow)
            decision = self.live_inspector().connect(conn.info, flow.request.host, flow.request.port,
                                                     flow.request.timestamp_start or time.time())
            block = decision.action == BLOCK
            message = decision.message
        except Exception as exc:
            block = self.live_inspector().failed(exc, "CONNECT")
            message = "blocked by inspector: internal error"
        if block:
            flow.response = http.Response.make(403, message.encode(), {"content-type": "text/plain"})

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.runtime is None or not flow.live or flow.response is not None or flow.error is not None:
            return
        try:
            self._requestheaders(flow)
        except Exception as exc:
            self._internal_error(flow, exc, "request headers")

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        inspector = self.live_inspector()
        settings = inspector.settings
        head = request_head(flow.request)
        if head.method == "PRI" and head.path == "*":  # the HTTP/2 preface, in cleartext
            self._h2c_refused(flow)
            return
        tx = inspector.begin(self._connection(flow), head, flow.request.timestamp_start or time.time())
        state = _FlowState(tx)
        self._flows[flow.id] = state
        limits = settings.limits
        if is_grpc_content_type(head.content_type) and opts.matches_method(head.path, settings.stream_methods):
            stream = GrpcRequestStream(inspector, tx, head, limits, time.time, self._aborter(flow),
                                       hold_bytes=limits.body_keep_bytes)
            state.request_stream = stream
            flow.request.stream = stream
            inspector.metrics.streams.labels("grpc_stream").inc()
        elif (declared_large := self._should_stream(head)) or _unknown_length(head):
            def held_stream() -> HeldBodyStream | PassThroughStream:
                stream = self._body_stream(flow, StreamedMessage(limits, TO_SERVER, head), "request",
                                           lambda data, complete: self._inspect_request_part(tx, data, complete))
                state.request_stream = stream
                return stream

            if declared_large:
                flow.request.stream = held_stream()
            else:  # buffered up to the threshold: small enough, it is inspected (and blocked) whole
                defer_stream(flow.request, held_stream)

    def _h2c_refused(self, flow: http.HTTPFlow) -> None:
        """A client spoke HTTP/2 with prior knowledge in cleartext: mitmproxy does not take it
        (its DisableH2C addon closes the connection). Said once per connection as an anomaly and
        a log line, instead of an `http` record of a `PRI *` request that never was."""
        inspector = self.live_inspector()
        message = ("cleartext HTTP/2 with prior knowledge (h2c) from the client: mitmproxy does not accept it and "
                   "closed the connection; gRPC clients reach the sidecar over TLS (--cert/--key)")
        logger.warning("inspector: %s:%s: %s", *(flow.client_conn.peername or ("?", "?"))[:2], message)
        inspector.metrics.anomalies.labels("http", "h2c_prior_knowledge_refused").inc()
        info = self._connection(flow).info
        inspector.write(anomaly_record(info, flow.request.timestamp_start or time.time(), kind="applayer",
                                       layer="http", event="h2c_prior_knowledge_refused", message=message))

    def request(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow.id)
        if state is None or self.runtime is None or state.tx.completed:
            return
        try:
            self._request(flow, state)
        except Exception as exc:
            self._internal_error(flow, exc, "request")

    def _request(self, flow: http.HTTPFlow, state: _FlowState) -> None:
        tx = state.tx
        trailers = header_list(flow.request.trailers)
        ts_end = flow.request.timestamp_end or time.time()
        stream = state.request_stream
        if stream is not None:  # inspected while it streamed; keep what the record needs
            tx.request_side, tx_anomalies = stream.body.end(trailers, ts_end)
            self._pending_anomalies(tx, tx_anomalies)
            return
        inspector = self.live_inspector()
        exchange, anomalies = request_exchange(inspector.settings.limits, tx.request_head, raw_body(flow.request),
                                               trailers, ts_end)
        tx.request_side = exchange
        if not inspector.blocking_possible():
            inspector.record_anomalies(tx, anomalies, [])
            return
        decision = inspector.inspect(tx, exchange, anomalies, "request", block_only=True)
        if decision.action == BLOCK:
            self._block(flow, state, decision)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow.id)
        if state is None or self.runtime is None or state.tx.completed or flow.response is None:
            return
        try:
            self._responseheaders(flow, state)
        except Exception as exc:
            self._internal_error(flow, exc, "response headers")

    def _responseheaders(self, flow: http.HTTPFlow, state: _FlowState) -> None:
        assert flow.response is not None
        inspector = self.live_inspector()
        limits = inspector.settings.limits
        head = state.response_head = response_head(flow.response)
        if isinstance(state.request_stream, GrpcRequestStream):
            stream = GrpcResponseStream(state.request_stream, head, limits, time.time)
            state.response_stream = stream
            flow.response.stream = stream
        elif is_streamed_answer(head):
            passing = PassThroughStream(StreamedMessage(limits, TO_CLIENT, head), time.time)
            state.response_stream = passing
            flow.response.stream = passing
            inspector.metrics.streams.labels("event_stream").inc()
        else:
            def held_stream() -> HeldBodyStream | PassThroughStream:
                tx = state.tx
                stream = self._body_stream(flow, StreamedMessage(limits, TO_CLIENT, head), "response",
                                           lambda data, complete: self._inspect_response_part(tx, head, data,
                                                                                              complete))
                state.response_stream = stream
                return stream

            if self._should_stream(head) or _unknown_length(head):  # a response's: HTTP/1 chunked only
                flow.response.stream = held_stream()
            elif head.header("content-length") is None:  # HTTP/2 of unknown length: buffered up to the threshold
                defer_stream(flow.response, held_stream)

    def response(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if state is None or self.runtime is None or state.tx.completed or flow.response is None:
            return
        try:
            self._response(flow, state)
        except Exception as exc:
            self._internal_error(flow, exc, "response")

    def _response(self, flow: http.HTTPFlow, state: _FlowState) -> None:
        assert flow.response is not None
        tx = state.tx
        self._set_zones(tx.conn.info, flow.server_conn)
        inspector = self.live_inspector()
        trailers = header_list(flow.response.trailers)
        ts_end = flow.response.timestamp_end or time.time()
        request_side = self._request_side(flow, state)
        if state.response_stream is not None:
            response_side, anomalies = state.response_stream.body.end(trailers, ts_end)
            # A streamed answer went out as it came: what matches it now can only alert.
            inspector.complete(tx, merge(request_side, response_side), anomalies,
                               enforce=not isinstance(state.response_stream, PassThroughStream),
                               partial=state.aborted)
            return
        response_side, anomalies = response_exchange(inspector.settings.limits, state.response_head
                                                     or response_head(flow.response), raw_body(flow.response),
                                                     trailers, ts_end)
        decision = inspector.complete(tx, merge(request_side, response_side), anomalies)
        if decision.action == BLOCK:
            flow.response = self._mitm_response(flow, self._block_for(flow, decision))

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if self.runtime is None:
            return
        aborted = state is not None and state.aborted  # our own cut: counted as a block, not here
        if (flow.error is not None and flow.error.msg != flow.error.KILLED_MESSAGE and not aborted
                and _upstream_failed(flow)):
            self.runtime.metrics.upstream_errors.inc()
        if state is None or state.tx.completed:
            return
        try:
            request_side = self._request_side(flow, state)
            self.live_inspector().complete(state.tx, request_side, [], partial=state.aborted)
        except Exception as exc:
            self.live_inspector().failed(exc, "error hook")

    # -- raw TCP --------------------------------------------------------------------------------

    def tcp_start(self, flow: Any) -> None:
        if self.runtime is None:
            return
        conn = self._connections.get(flow.client_conn.id)
        if conn is None:
            conn = Connection(info=flow_info(flow.client_conn.peername, flow.client_conn.sockname,
                                             flow.client_conn.timestamp_start or time.time()))
        self._set_zones(conn.info, flow.server_conn)
        self._raw[flow.id] = RawStream(conn.info, self.live_inspector().settings.limits)

    def tcp_message(self, flow: Any) -> None:
        stream = self._raw.get(flow.id)
        if stream is None or self.runtime is None or not flow.messages:
            return
        message = flow.messages[-1]
        del flow.messages[:-1]  # mitmproxy keeps every message of a TCP flow: keep memory flat
        try:
            self._set_zones(stream.info, flow.server_conn)
            direction = TO_SERVER if message.from_client else TO_CLIENT
            results = stream.feed(direction, message.content, message.timestamp or time.time())
            if handle_results(stream, results, self.live_inspector(), time.time) == BLOCK:
                self.live_inspector().metrics.blocks.labels("rule").inc()
                message.content = b""
                self._close_tcp(flow)
        except Exception as exc:
            if self.live_inspector().failed(exc, "raw TCP inspection"):
                message.content = b""
                self._close_tcp(flow)
            else:
                self._raw.pop(flow.id, None)

    def tcp_end(self, flow: Any) -> None:
        stream = self._raw.pop(flow.id, None)
        if stream is None or self.runtime is None:
            return
        try:
            handle_results(stream, stream.end(time.time()), self.live_inspector(), time.time)
        except Exception as exc:
            self.live_inspector().failed(exc, "raw TCP end")

    tcp_error = tcp_end

    @staticmethod
    def _close_tcp(flow: Any) -> None:
        def close() -> None:
            try:
                handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
                if handler is not None:
                    for connection in (flow.server_conn, flow.client_conn):
                        if connection in handler.transports:
                            handler.close_connection(connection)
            except Exception as exc:
                logger.warning("inspector: cannot close the blocked TCP connection: %s", exc)

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(close)

    # -- inspection helpers ---------------------------------------------------------------------

    def _request_side(self, flow: http.HTTPFlow, state: _FlowState) -> Any:
        tx = state.tx
        if tx.request_side is None:
            ts = flow.request.timestamp_end or time.time()
            trailers = header_list(flow.request.trailers)
            if state.request_stream is not None:
                tx.request_side, _ = state.request_stream.body.end(trailers, ts)
            else:
                tx.request_side, _ = request_exchange(self.live_inspector().settings.limits, tx.request_head,
                                                      raw_body(flow.request), trailers, ts, complete=False)
        return tx.request_side

    def _inspect_request_part(self, tx: Transaction, data: bytes, complete: bool) -> Decision:
        inspector = self.live_inspector()
        if not inspector.blocking_possible():
            return Decision(action="allow", record={}, inspected=False)
        exchange, anomalies = request_exchange(inspector.settings.limits, tx.request_head, data, [], time.time(),
                                               complete=complete)
        return inspector.inspect(tx, exchange, anomalies, "request", block_only=True, partial=not complete)

    def _inspect_response_part(self, tx: Transaction, head: Any, data: bytes, complete: bool) -> Decision:
        if not self.live_inspector().blocking_possible():
            return Decision(action="allow", record={}, inspected=False)
        limits = self.live_inspector().settings.limits
        request_side = tx.request_side
        if request_side is None:
            request_side, _ = request_exchange(limits, tx.request_head, b"", [], tx.ts, complete=False)
        response_side, anomalies = response_exchange(limits, head, data, [], time.time(), complete=complete)
        return self.live_inspector().inspect(tx, merge(request_side, response_side), anomalies, "response",
                                             block_only=True, partial=not complete)

    def _pending_anomalies(self, tx: Transaction, anomalies: list) -> None:
        """Anomalies found when a streamed body ended: written with the transaction."""
        if anomalies:
            self.live_inspector().record_anomalies(tx, anomalies, [])

    def _body_stream(self, flow: http.HTTPFlow, body: StreamedMessage, side: str,
                     inspect: Inspect) -> HeldBodyStream | PassThroughStream:
        """The stream callable of a large or unsized body: its first part held back until
        `inspect` decides (a block rule, or the uninspectable policy, may stop it), or, when
        nothing can block, forwarded as it comes (the transaction is still evaluated whole when
        the body ends, as a held one's is)."""
        inspector = self.live_inspector()
        metrics = inspector.metrics
        metrics.streams.labels(f"{side}_body").inc()
        hand_back = self._hand_back_for(flow, body) if side == "response" else None
        if not inspector.blocking_possible():
            return PassThroughStream(body, time.time, hand_back)
        head = body.head

        def settled(held: bytes) -> int | None:  # asked again as bytes come: a reload may change the rules
            settled_at = inspector.answer_settled_at(head)
            return None if settled_at is None else settled_at(held)

        return HeldBodyStream(body, inspect, self._aborter(flow), lambda exc: inspector.failed(exc, f"{side} body"),
                              time.time, hold_bytes=inspector.settings.limits.body_keep_bytes,
                              settled_at=settled if side == "response" else None,
                              ended=lambda ended_by: metrics.body_holds.labels(ended_by).inc(), hand_back=hand_back)

    def _hand_back_for(self, flow: http.HTTPFlow, body: StreamedMessage) -> Callable[[], bool] | None:
        """For an answer whose length mitmproxy enforces: the function that hands the rest of it
        to mitmproxy once it is only counted (bodystream.py); else None."""
        declared = _enforced_length(flow)
        if declared is None:
            return None
        metrics = self.live_inspector().metrics

        def hand_back() -> bool:
            if flow.response is None or not body.hand_back(declared):
                return False
            flow.response.stream = True
            metrics.streams_handed_back.inc()
            return True

        return hand_back

    def _should_stream(self, head: HttpMessage) -> bool:
        """Whether a body declares a length over the stream threshold."""
        length = head.header("content-length")
        if length is not None:
            length = length.strip()
            return length.isascii() and length.isdigit() and int(length) > self._stream_threshold
        return False

    # -- enforcement ----------------------------------------------------------------------------

    def _block(self, flow: http.HTTPFlow, state: _FlowState, decision: Decision) -> None:
        """Answer a request that has not gone upstream with the block response, and write its
        transaction as the client saw it."""
        tx = state.tx
        response = self._block_for(flow, decision)
        flow.request.stream = False
        flow.response = self._mitm_response(flow, response)
        tx.blocked = True
        limits = self.live_inspector().settings.limits
        response_side, anomalies = response_exchange(limits, response_head(flow.response), response.body, [],
                                                     time.time())
        self.live_inspector().complete(tx, merge(self._request_side(flow, state), response_side), anomalies,
                                evaluate=False)

    def _block_for(self, flow: http.HTTPFlow, decision: Decision) -> BlockResponse:
        return block_response(decision.record, decision.message, method=flow.request.method,
                              path=flow.request.path, content_type=flow.request.headers.get("content-type", ""))

    @staticmethod
    def _mitm_response(flow: http.HTTPFlow, block: BlockResponse) -> http.Response:
        response = http.Response.make(block.status, block.body,
                                      [(name.encode(), value.encode()) for name, value in block.headers])
        if block.kind == "grpc":
            response.headers.pop("content-length", None)
        response.http_version = flow.request.http_version
        return response

    def _aborter(self, flow: http.HTTPFlow):
        """What a streamed body's block does: the transfer is cut. The upstream connection is
        closed; for a request body the client's connection too, at once (it has had no answer and
        cannot get one: mitmproxy already sent the head upstream), so it never waits. The
        transaction is marked blocked, with an `http` anomaly `transfer_aborted`."""
        def abort(reason: str) -> None:
            inspector = self.live_inspector()
            inspector.metrics.blocks.labels("abort").inc()
            logger.info("inspector: aborting %s %s: %s", flow.request.method, flow.request.path, reason)
            state = self._flows.get(flow.id)
            request_side = flow.response is None
            if state is not None:
                state.aborted = True
                state.tx.blocked = True
                where = "request" if request_side else "response"
                inspector.record_anomalies(state.tx, [SessionAnomaly(
                    layer="http", event="transfer_aborted", ts=time.time(),
                    message=f"{where} body cut by the inspector after it started streaming: {reason}")], [],
                    evaluate=False)
                inspector.flush()
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(_close_upstream, flow, request_side)

        return abort

    def _internal_error(self, flow: http.HTTPFlow, exc: BaseException, where: str) -> None:
        if not self.live_inspector().failed(exc, where):
            return
        state = self._flows.pop(flow.id, None)
        if where in ("request headers", "request") and flow.response is None:
            block = block_response(None, "blocked by inspector: internal error", method=flow.request.method,
                                   path=flow.request.path, content_type=flow.request.headers.get("content-type", ""))
            flow.request.stream = False
            flow.response = self._mitm_response(flow, block)
        elif where == "response" and flow.response is not None and not flow.response.stream:
            block = block_response(None, "blocked by inspector: internal error", method=flow.request.method,
                                   path=flow.request.path, content_type=flow.request.headers.get("content-type", ""))
            flow.response = self._mitm_response(flow, block)
        else:
            _close_upstream(flow)
        if state is not None:
            state.tx.completed = True


@dataclasses.dataclass(frozen=True, slots=True)
class _Connections:
    """The two connections `_close_tcp` closes, for a hook that has no flow (tls_clienthello)."""

    client_conn: Any
    server_conn: Any


def _refuse(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
    return False


#: Answers a client reads as they come (LLM token streams): forwarded chunk by chunk.
STREAMED_ANSWERS = frozenset({"text/event-stream", "application/x-ndjson", "application/jsonl",
                              "application/x-jsonlines"})


def is_streamed_answer(head: HttpMessage) -> bool:
    """A response whose content type is an event stream (SSE, JSON lines)."""
    return (head.header("content-type") or "").split(";", 1)[0].strip().lower() in STREAMED_ANSWERS


def _enforced_length(flow: http.HTTPFlow) -> int | None:
    """The body length of an answer that mitmproxy's HTTP/1 reader holds the upstream to (a
    Content-Length body: the message completes with exactly that many bytes, or fails), else
    None (HTTP/2, chunked, read until close, no body)."""
    response = flow.response
    if response is None or response.http_version not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    try:
        size = expected_http_body_size(flow.request, response)
    except ValueError:
        return None
    return size if size is not None and size > 0 else None


def _unknown_length(head: HttpMessage) -> bool:
    """A body whose length is not declared (HTTP/1 chunked, an HTTP/2 request without
    content-length, whatever its method: a GET or DELETE may carry a body too)."""
    if head.header("content-length") is not None:
        return False
    if head.version in ("HTTP/1.1", "HTTP/1.0"):
        return "chunked" in (head.header("transfer-encoding") or "").lower()
    return head.kind == "request"


def _deferred_stream(value: Any, message: Any) -> Any:
    if value is True:
        factory = message.__dict__.pop("_inspector_stream_factory", None)
        if factory is not None:
            return factory()
    return value


class _DeferredStream:
    """Mixed into a message mitmproxy buffers, whose body's length is unknown. When the buffered
    body outgrows `stream_large_bodies` (set to the stream threshold), mitmproxy sets
    `stream = True` and streams the rest; this turns that True into the inspector's stream
    callable, which then gets the buffered part first (mitmproxy-internal:
    HttpStream.check_body_size, pinned to mitmproxy 12.3 and tested)."""

    @property
    def stream(self) -> Any:
        return self.__dict__.get("_inspector_stream", False)

    @stream.setter
    def stream(self, value: Any) -> None:
        self.__dict__["_inspector_stream"] = _deferred_stream(value, self)


class _DeferredStreamRequest(_DeferredStream, http.Request):  # type: ignore[misc]
    pass


class _DeferredStreamResponse(_DeferredStream, http.Response):  # type: ignore[misc]
    pass


def defer_stream(message: http.Request | http.Response, factory: Any) -> None:
    """Buffer `message` (mitmproxy's default) until it outgrows the threshold, then stream it
    through the callable `factory()` makes."""
    message.__dict__["_inspector_stream"] = message.stream
    message.__class__ = _DeferredStreamRequest if isinstance(message, http.Request) else _DeferredStreamResponse
    message.__dict__["_inspector_stream_factory"] = factory


def _upstream_failed(flow: http.HTTPFlow) -> bool:
    """Whether a flow's error is the upstream's: the client is still connected and got no
    response (refused, reset, timed out), or a response cut short by the upstream closing its
    connection. A client that went away is not an upstream error. (An HTTP/2 upstream resetting
    one stream of a connection that stays open cannot be told from the client resetting it.)"""
    if flow.client_conn.state is ConnectionState.CLOSED:
        return False
    if flow.response is None:
        return True
    return flow.response.timestamp_end is None and flow.server_conn.state is ConnectionState.CLOSED


def _close_upstream(flow: http.HTTPFlow, client_too: bool = False) -> None:
    """Close the flow's upstream connection, and with `client_too` the client's (mitmproxy-internal:
    the proxyserver's connection handler; pinned to mitmproxy 12.3 and tested). Falls back to
    killing the flow."""
    try:
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id)
        if handler is not None and flow.server_conn in handler.transports:
            handler.close_connection(flow.server_conn)
            if client_too and flow.client_conn in handler.transports:
                handler.close_connection(flow.client_conn)
            return
    except Exception as exc:  # the internals moved: say so, then do what the public API allows
        logger.warning("inspector: cannot close the upstream connection (%s), killing the flow", exc)
    if flow.killable:
        flow.kill()
