"""Whether a held answer's first bytes already decide the block rules, so the hold can end early.

A large answer (a model pulled from S3 or a hub, a dataset) is held back until its first
`body_keep_bytes` (1 MiB) are in and the block rules have looked at them
(bodystream.HeldBodyStream): at a few hundred MB/s that is milliseconds before the client's first
byte. What the rest of that MiB could still change depends on the fields the block rules read
(:func:`settle_level`), and so does how soon the hold can end (:func:`settled_at_for`):

* only fields the heads fix (addresses, the URL and headers, the egress verdict, the gRPC
  encoding, the S3 bucket and key, the hub's repository): the body cannot change the verdict,
  the hold ends with the first chunk;
* also a model file's pickle findings (`<layer>.model.pickle.*`, as the shipped rule that blocks
  dangerous pickles): every pickle the model-file detection scans is announced by the object's
  first bytes (a pickle, a zip archive, a .npy array, a compressed stream), so any other answer
  (safetensors, GGUF, a dataset, JSON, an image) is settled after 300 bytes; one that starts like
  a pickle keeps the full hold, its opcodes read as they come;
* also other model-file fields (`<layer>.model.format`, header checks): settled once a safetensors
  file's header is read whole (and the first 2,056 bytes, where the detection's last magic lies);
  any other answer keeps the full hold.

Block rules for records an HTTP answer never makes (TCPStore, NCCL) do not count. The decision
is the one the full hold would reach (property tests check that a settled prefix describes the
object, or its pickles, as every longer prefix does). Everything else keeps the full hold: a block
rule, or a site suppression of one, that reads any other field (the body's length, an error code
read from the body, a field this module does not know to be fixed by the heads), a block rule on
`anomaly` records (the rest of the prefix could raise one), and a content-coded or gRPC answer
(decoding the rest could fail, which the `uninspectable` policy blocks). Requests (uploads) keep the full
hold: their bodies can be framed (aws-chunked) so that the bytes on the wire are not the file
the layers read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from inspector.http import HttpMessage
from inspector.protocols.grpc import grpc_kind
from inspector.protocols.modelfile import pickle_settled_at, settled_at

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
#: f(held bytes) -> the held length from which they settle the rules (more than held: ask again
#: then), or None (not before the full hold).
SettledAt = Callable[[bytes], int | None]


def model_layers(catalogue: Mapping[str, Any]) -> frozenset[str]:
    """Layers that describe model files (`<layer>.model.format` is declared): s3, modelhub ..."""
    return frozenset(name.split(".", 1)[0] for name in catalogue if name.endswith(".model.format")
                     and name.count(".") == 2)


#: What a rule set's block rules read, in the order of how long a held answer must wait.
HEAD, PICKLE, MODEL = 1, 2, 3


def field_level(name: str, layers: frozenset[str]) -> int | None:
    """HEAD, PICKLE (`<layer>.model.pickle` and below), MODEL (any other `<layer>.model` field,
    for a layer that describes model files), or None (a field the body may still change)."""
    if name in HEAD_FIELDS:
        return HEAD
    layer, _, rest = name.partition(".")
    if layer not in layers or not (rest == "model" or rest.startswith("model.")):
        return None
    return PICKLE if rest == "model.pickle" or rest.startswith("model.pickle.") else MODEL


def settle_level(block_rules: Iterable[Any], layers: frozenset[str], suppressions: Iterable[Any] = (),
                 answer_layers: frozenset[str] | None = None) -> int | None:
    """The most any block rule, or any suppression entry of a block rule's sid, reads (a level);
    None when one reads a field the body may change, or a block rule listens to anomalies.
    `answer_layers`: the layers an HTTP transaction's record can have (its event type and its
    objects); a block rule for none of them (TCPStore, NCCL) never sees an answer and is left
    out. None: every rule counts."""
    relevant = [rule for rule in block_rules
                if answer_layers is None or ANOMALY_EVENT in rule.events or not answer_layers.isdisjoint(rule.events)]
    sids = {rule.sid for rule in relevant}
    read: list[frozenset[str] | None] = []
    for rule in relevant:
        if ANOMALY_EVENT in rule.events:
            return None
        read.append(rule.fields)
    read += [entry.fields for entry in suppressions if sids.intersection(entry.sids)]
    level = HEAD
    for names in read:
        if names is None:
            return None
        for name in names:
            found = field_level(name, layers)
            if found is None:
                return None
            level = max(level, found)
    return level


def _at_once(data: bytes) -> int:
    return 0


_SETTLED_AT: dict[int, SettledAt] = {HEAD: _at_once, PICKLE: pickle_settled_at, MODEL: settled_at}


def settled_at_for(level: int) -> SettledAt:
    """How soon a held answer settles block rules of `level`."""
    return _SETTLED_AT[level]


def answer_can_settle(head: HttpMessage) -> bool:
    """An answer whose body the layers read as it is on the wire: no content coding, and not
    gRPC (whose messages may be compressed: one that does not decompress, anywhere in the
    prefix, is uninspectable, which the `uninspectable` policy blocks)."""
    codings = [c.strip() for c in (head.header("content-encoding") or "").lower().split(",")]
    return all(c in ("", "identity") for c in codings) and grpc_kind(head.content_type) is None
