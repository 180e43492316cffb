"""Traffic inspector for AI infrastructure.

One detection engine, two ways in:

    live     client --TLS--> mitmproxy + addons/ --> model server
                                   | HTTPFlow, tcp_message, tls_clienthello
                                   v
                            inspector.live ---------+
                                                    +--> app parsers --> records --> Engine --> verdicts
    offline  pcap --> inspector.capture ------------+   (inspector.protocols)            |
                      read, decode, flows, TCP                                           v
                      reassembly, HTTP/1, HTTP/2                  sinks: EVE JSON, Prometheus, reports

Modules:
    capture/       offline: capture files, link/IP/TCP decode, flows, reassembly, HTTP sessions
    http.py        the normalized HTTP message and session events both paths produce
    exchange.py    session events -> complete exchanges (bodies capped, observers fed)
    apps.py        exchange -> one layered transaction record (http, grpc, ...)
    protocols/     one module per protocol; each declares its record fields (fields.py)
    records.py     EVE common fields, flow and anomaly records
    redact.py      secrets never reach the log
    rules/, engine.py   rule loading, matching, rate windows, verdicts (no I/O)
    policy/        segmentation policy: zones, flow rules, checks, the segmentation report
    sinks/         EVE writer, EVE JSON schema, Prometheus textfile of offline runs
    analyze.py     the offline pipeline; cli.py the command line (console.py: its terminal
                   output, rich imported at the first print)

Principles: sans-IO parsers that never raise on peer input; every peer-controlled length capped
(limits.py); time comes from the event (capture time offline); the log is the rule language.
"""

__version__ = "0.1.0"
