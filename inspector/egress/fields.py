"""Field declarations of the `egress` object (forward proxy and `analyze --egress` records)."""

from __future__ import annotations

from inspector.fields import declare

#: The egress object rides on any HTTP-borne record, and on the CONNECT records of type egress.
EVENTS = ("egress", "http")

declare(EVENTS, [
    ("egress", "object", "Egress decision on a workload's outbound request (docs/egress.md)."),
    ("egress.host", "string", "Destination host (CONNECT authority, Host / :authority), lower-case."),
    ("egress.port", "integer", "Destination port."),
    ("egress.phase", "string", "connect (a CONNECT tunnel opening) or request (an HTTP request)."),
    ("egress.allowed", "boolean", "The destination is on the allowlists (for a CONNECT to a registry or an S3 "
                                  "endpoint: the host may be, each request inside is decided on its own)."),
    ("egress.matched", "string", "What allowed it: host, bucket, registry, registry_host (CONNECT), s3_endpoint "
                                 "(CONNECT); absent when nothing did."),
    ("egress.entry", "string", "The allowlist entry that matched."),
    ("egress.bucket", "string", "S3 bucket of a request to an S3 endpoint."),
    ("egress.repo", "string", "Registry repository of a model hub request (owner/name, image name)."),
])
