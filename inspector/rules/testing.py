"""Test helpers for code that loads rules: a sample field catalogue, swapped in and out.

Rules validate against the field catalogue, which the parser modules declare at import. Tests of
the rule language should not depend on which parsers exist, nor leave fields behind, so
:func:`isolated_catalogue` replaces the catalogue for the duration of a `with` block (it touches
inspector.fields' private table: that is its job) and restores it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from inspector import fields
from inspector.fields import ALL_EVENTS, FieldSpec

Declaration = tuple[str | tuple[str, ...], list[tuple[str, str, str]]]

#: A small catalogue shaped like the real one: common fields, http, grpc, and a `triton` layer
#: with a list of objects (inputs) for path-through-list tests.
SAMPLE_FIELDS: tuple[Declaration, ...] = (
    (ALL_EVENTS, [
        ("timestamp", "timestamp", "Time of the transaction"),
        ("event_type", "string", "Record type"),
        ("flow_id", "integer", "Flow identifier"),
        ("community_id", "string", "Community ID v1"),
        ("src_ip", "ip", "Client address"),
        ("src_port", "integer", "Client port"),
        ("dest_ip", "ip", "Server address"),
        ("dest_port", "integer", "Server port"),
        ("proto", "string", "Transport protocol"),
        ("app_proto", "string", "Application protocol"),
    ]),
    ("http", [
        ("http.hostname", "string", "Host / :authority"),
        ("http.url", "string", "Path and query"),
        ("http.http_method", "string", "Request method"),
        ("http.status", "integer", "Response status"),
        ("http.protocol", "string", "HTTP version"),
        ("http.http_user_agent", "string", "User-Agent"),
        ("http.http_content_type", "string", "Content-Type"),
        ("http.length", "integer", "Response body length"),
        ("http.request_headers", "list[object]", "Request headers"),
        ("http.request_headers.name", "string", "Header name"),
        ("http.request_headers.value", "string", "Header value"),
    ]),
    ("grpc", [
        ("grpc.service", "string", "gRPC service"),
        ("grpc.method", "string", "gRPC method"),
        ("grpc.status", "integer", "grpc-status"),
        ("grpc.compressed", "boolean", "Any message compressed"),
        ("grpc.request", "object", "Request messages"),
        ("grpc.request.messages", "integer", "Request message count"),
        ("grpc.request.lengths", "list[integer]", "Request message lengths"),
    ]),
    ("triton", [
        ("triton.api", "string", "Triton API"),
        ("triton.model", "string", "Model name"),
        ("triton.version", "string", "Model version"),
        ("triton.tags", "list[string]", "Labels"),
        ("triton.inputs", "list[object]", "Input tensors"),
        ("triton.inputs.name", "string", "Input name"),
        ("triton.inputs.datatype", "string", "Input datatype"),
        ("triton.inputs.shape", "list[integer]", "Input shape"),
        ("triton.log_settings", "object", "Log settings request"),
        ("triton.log_settings.log_file", "string", "Requested log file"),
        ("triton.log_settings.log_verbose_level", "integer", "Requested verbosity"),
    ]),
    ("anomaly", [
        ("anomaly.event", "string", "Anomaly name"),
        ("anomaly.layer", "string", "Layer that saw it"),
    ]),
)


@contextmanager
def isolated_catalogue(declarations: Sequence[Declaration] = SAMPLE_FIELDS) -> Iterator[dict[str, FieldSpec]]:
    """Within the block, the catalogue holds exactly `declarations` (and what the block declares)."""
    saved_table, saved_modules = fields._CATALOGUE, fields.FIELD_MODULES
    fields._CATALOGUE = {}
    fields.FIELD_MODULES = ()
    try:
        for events, specs in declarations:
            fields.declare(events, specs)
        yield fields.catalogue()
    finally:
        fields._CATALOGUE = saved_table
        fields.FIELD_MODULES = saved_modules


def rule_document(detection: dict, *, event: Any = "http", sid: int = 1000001, **keys: Any) -> dict:
    """A minimal valid rule document around `detection` (a fresh UUID); `keys` add or replace keys."""
    return {"title": "test rule", "id": str(uuid.uuid4()), "sid": sid, "status": "test", "level": "low",
            "event": event, "detection": detection, **keys}
