"""The live path: a mitmproxy sidecar that inspects and enforces with the offline path's parsers
and engine.

    client --TLS--> mitmproxy + InspectorAddon --> model server (http, https or h2c)
                          |
                          | HTTPFlow hooks -> HeadReceived / BodyReceived / MessageEnded
                          v
              inspector.exchange.ExchangeBuilder (+ apps.OBSERVER_FACTORIES: gRPC framing ...)
                          v
              inspector.apps.transaction_record -> Engine(blocking=True) -> Verdict
                          v
              enforcement (block responses, stream error messages, aborts) + EVE + Prometheus

Modules:
    addon.py        the addon class: options, hooks, enforcement
    options.py      option declarations and their parsers
    inspection.py   phases of a live transaction, engine calls, failure and uninspectable policies
    messages.py     mitmproxy messages -> normalized messages and exchanges
    grpcstream.py   gRPC streams inspected message by message; in-stream error injection
    bodystream.py   large bodies streamed with their first part held back and inspected
    blocking.py     block responses each client understands
    flowinfo.py     flow identity of a live connection (Community ID, flow_id)
    principal.py    the mTLS client certificate as the `principal` record object (declares principal.*)
    mtls.py         client-certificate verification (cryptography path validation)
    rawstream.py    raw TCP (TCPStore, NCCL) from tcp_message into the offline sessions
    metrics.py      Prometheus metrics, /metrics and /healthz
    redis_rate.py   rate windows shared through Redis, with in-process fallback
    runtime.py      rules, engine, writer, exporter; SIGHUP reload
    proxy.py        `inspector proxy`: mitmproxy's DumpMaster in-process
    certs.py        `inspector certs`: a CA and server/client certificates

mitmproxy is imported only by addon.py and proxy.py; everything else is plain Python, tested
without a proxy.
"""
