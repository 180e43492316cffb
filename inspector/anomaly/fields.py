"""Field declarations of the baseline's `anomaly` records (`anomaly.kind`, `anomaly.score` ...).

The record shape is the parsers' anomaly record (inspector.records: `type`, `layer`, `event`,
`message`) with `type: baseline`, `event` equal to `kind`, and the fields below; rules match
them with `event: anomaly` (docs/anomaly.md).
"""

from __future__ import annotations

from inspector.fields import declare

declare("anomaly", [
    ("anomaly.kind", "string", "Baseline deviation (type baseline): rate_spike, payload_size, new_shape, new_client, "
                               "new_endpoint, new_fingerprint, new_protocol."),
    ("anomaly.score", "number", "How far from the baseline: a robust z-score (rate_spike, payload_size) or bits "
                                "of surprise log2((n+1)/(k+1)) (new_*); docs/anomaly.md."),
    ("anomaly.subject", "string", "Model or endpoint concerned, <protocol>:<name> (triton:resnet, grpc:Svc/Method)."),
    ("anomaly.scope", "string", "What the baseline was kept for: a server ip:port, server|subject (shapes), a zone "
                                "pair src->dest, or client / all_clients (rate_spike)."),
    ("anomaly.value", "string", "The value never seen before (client address, shape pattern, JA4, protocol ...)."),
    ("anomaly.observed", "number", "Observed quantity: requests in the interval, or request bytes."),
    ("anomaly.expected", "number", "The baseline's usual value for it (EWMA mean)."),
    ("anomaly.baseline_count", "integer", "Observations behind the baseline that was deviated from."),
])
