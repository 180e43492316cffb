"""Conversions between mitmproxy's messages and the normalized ones (inspector/live/messages.py)."""

from __future__ import annotations

import dataclasses

from inspector.http import HttpMessage
from inspector.live.messages import fresh
from inspector.live.options import matches_method

#: What a builder fills in; everything else is the head and is copied.
BODY_FIELDS = {"body": b"", "body_length": 0, "body_truncated": False, "decoded": "", "trailers": [],
               "ts_end": 0.0, "complete": False}


def test_fresh_copies_every_head_field_and_resets_the_body():
    head = HttpMessage(kind="request", version="HTTP/2", headers=[("content-type", "application/grpc")],
                       method="POST", scheme="https", authority="triton:8001", path="/x.Y/Z", status=0,
                       reason="", body=b"old", body_length=3, body_truncated=True, decoded="gzip",
                       trailers=[("grpc-status", "0")], ts_start=1.5, ts_end=2.5, complete=True)
    copy = fresh(head)
    for spec in dataclasses.fields(HttpMessage):
        expected = BODY_FIELDS[spec.name] if spec.name in BODY_FIELDS else getattr(head, spec.name)
        assert getattr(copy, spec.name) == expected, spec.name
    copy.headers.append(("x", "y"))
    assert head.headers == [("content-type", "application/grpc")]  # its own list


def test_stream_method_patterns_match_as_fnmatch_does():
    patterns = ("/inference.GRPCInferenceService/ModelStreamInfer", "/llm.*/Generate*")
    assert matches_method("/inference.GRPCInferenceService/ModelStreamInfer", patterns)
    assert matches_method("/llm.v1.Service/GenerateStream", patterns)
    assert not matches_method("/inference.GRPCInferenceService/ModelInfer", patterns)
    assert not matches_method("/inference.grpcinferenceservice/modelstreaminfer", patterns)  # case matters
    assert not matches_method("/inference.GRPCInferenceService/ModelStreamInferX", patterns)  # whole path
    assert not matches_method("/anything", ())
