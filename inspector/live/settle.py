"""Whether a held answer's first bytes already decide the block rules, so the hold can end early.

A large answer (a model pulled from S3 or a hub) is held back until its first `body_keep_bytes`
(1 MiB) are in and the block rules have looked at them (bodystream.HeldBodyStream): at a few
hundred MB/s that is milliseconds before the client's first byte. When the block rules read only
what the heads already fixed (addresses, the URL, the egress verdict, the gRPC encoding) and what
a model file's own header settles (`<layer>.model.*` of a safetensors file whose header has been
read whole), the bytes still to come within the prefix cannot change their verdict; the hold
then ends as soon as the header is in, with the same decision it would have reached at 1 MiB.

Everything else keeps the full hold: a block rule, or a site suppression of one, that reads any
other field (the body's length, an error code read from the body, a field this module does not
know to be fixed by the heads), a
block rule on `anomaly` records (the rest of the prefix could raise one), a content-coded answer
(decoding the rest could fail, which the `uninspectable` policy blocks), and a body that is not
a safetensors file (a pickle's next opcodes, an archive's next entry, a prefix too short to tell).
Requests (uploads) keep the full hold: their bodies can be framed (aws-chunked) so that the bytes
on the wire are not the file the layers read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: Fields whose values come from the connection, the request (its head, or its body: complete
#: before the answer's body starts) and the answer's head: never from the answer's body. Only
#: fields known to be so are listed; a block rule reading any other keeps the full hold.
HEAD_FIELDS = frozenset({
    "src_ip", "dest_ip", "src_port", "dest_port", "proto", "src_zone", "dest_zone", "community_id",
    "http.hostname", "http.url", "http.http_method", "http.http_port", "http.protocol", "http.status",
    "http.http_user_agent", "http.http_refer", "http.http_content_type", "http.request_content_type",
    "http.request_headers", "http.request_headers.name", "http.request_headers.value",
    "http.response_headers", "http.response_headers.name", "http.response_headers.value",
    "egress", "egress.allowed", "egress.bucket", "egress.entry", "egress.host", "egress.matched", "egress.phase",
    "egress.port", "egress.repo",
    "grpc.encoding",
    "principal", "principal.common_name", "principal.fingerprint_s", "principal.issuer", "principal.sans",
    "principal.serial", "principal.source", "principal.subject",
    "s3.bucket", "s3.key", "s3.operation", "s3.region", "s3.access_key_id", "s3.range",
    "modelhub.hub", "modelhub.repo", "modelhub.repo_type", "modelhub.revision", "modelhub.file",
})
#: Records about parser findings: the rest of a prefix may still raise one.
ANOMALY_EVENT = "anomaly"


def model_layers(catalogue: Mapping[str, Any]) -> frozenset[str]:
    """Layers that describe model files (`<layer>.model.format` is declared): s3, modelhub ..."""
    return frozenset(name.split(".", 1)[0] for name in catalogue if name.endswith(".model.format")
                     and name.count(".") == 2)


def field_settled_by_model_header(name: str, layers: frozenset[str]) -> bool:
    """`<layer>.model` or a field below it, for a layer that describes model files."""
    layer, _, rest = name.partition(".")
    return layer in layers and (rest == "model" or rest.startswith("model."))


def rules_settle_early(block_rules: Iterable[Any], layers: frozenset[str],
                       suppressions: Iterable[Any] = ()) -> bool:
    """Whether every block rule, and every suppression entry of a block rule's sid, reads only
    head fields and model-header fields (and no block rule listens to anomalies): then a settled
    model header settles their verdicts."""
    block_rules = list(block_rules)
    sids = {rule.sid for rule in block_rules}
    read: list[frozenset[str] | None] = []
    for rule in block_rules:
        if ANOMALY_EVENT in rule.events:
            return False
        read.append(rule.fields)
    read += [entry.fields for entry in suppressions if sids.intersection(entry.sids)]
    for names in read:
        if names is None:
            return False
        for name in names:
            if name not in HEAD_FIELDS and not field_settled_by_model_header(name, layers):
                return False
    return True


def answer_can_settle(content_encoding: str | None) -> bool:
    """An answer whose body the layers read as it is on the wire (no content coding)."""
    codings = [c.strip() for c in (content_encoding or "").lower().split(",")]
    return all(c in ("", "identity") for c in codings)


#: f(held bytes) -> the held length from which they settle the rules (more than held: ask again
#: then), or None (not before the full hold): inspector.protocols.modelfile.settled_at.
SettledAt = Callable[[bytes], int | None]
