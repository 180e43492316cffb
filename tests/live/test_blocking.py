"""Block responses: the shape each client library understands."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from inspector.live.blocking import (
    block_message,
    block_response,
    grpc_percent_encode,
    stream_error_message,
)
from inspector.protocols.protobuf import decode_fields

MESSAGE = "blocked by inspector: Model load (sid 7)"


def test_message_template():
    assert block_message("blocked by inspector: {signature} (sid {sid})", "Model load", 7) == MESSAGE
    assert block_message("denied {nope}", "x", 1) == "denied {nope}"  # a bad template stays literal
    assert block_message("denied ({sid})", "x", None) == "denied (-)"


def test_grpc_message_encoding():
    assert grpc_percent_encode("a 100% déjà\n") == "a 100%25 d%C3%A9j%C3%A0%0A"


def test_grpc_records_get_trailers_only_permission_denied():
    block = block_response({"grpc": {}, "triton": {}}, MESSAGE, method="POST", path="/x/y", content_type="")
    assert (block.status, block.body, block.kind) == (200, b"", "grpc")
    assert dict(block.headers) == {"content-type": "application/grpc", "grpc-status": "7",
                                   "grpc-message": MESSAGE}


def test_grpc_content_type_alone_is_enough():
    assert block_response(None, MESSAGE, method="POST", path="/a/b",
                          content_type="application/grpc+proto").kind == "grpc"


def test_s3_records_get_access_denied_xml():
    block = block_response({"s3": {}}, "no <pickles> & co", method="GET", path="/models/a.pkl?x=1",
                           content_type="")
    assert block.status == 403 and dict(block.headers)["content-type"] == "application/xml"
    error = ET.fromstring(block.body)
    assert (error.findtext("Code"), error.findtext("Message"), error.findtext("Resource")) == (
        "AccessDenied", "no <pickles> & co", "/models/a.pkl")
    assert error.findtext("RequestId") == dict(block.headers)["x-amz-request-id"]
    assert block_response({"s3": {}}, MESSAGE, method="HEAD", path="/m", content_type="").body == b""


def test_llm_records_get_openai_errors():
    block = block_response({"llm": {}}, MESSAGE, method="POST", path="/v1/chat/completions", content_type="")
    assert block.status == 403
    assert json.loads(block.body)["error"]["message"] == MESSAGE


@pytest.mark.parametrize(("record", "path"), [({"triton": {}}, "/anything"), ({"http": {}}, "/v2/models/m/infer"),
                                              ({"http": {}}, "/v1/models/m:predict")])
def test_kserve_style_json(record, path):
    block = block_response(record, MESSAGE, method="POST", path=path, content_type="")
    assert (block.status, json.loads(block.body), block.kind) == (403, {"error": MESSAGE}, "kserve")


def test_plain_text_otherwise():
    block = block_response({"http": {}}, MESSAGE, method="GET", path="/admin", content_type="")
    assert (block.status, block.body) == (403, (MESSAGE + "\n").encode())


def test_stream_error_for_triton_only():
    framed = stream_error_message("/inference.GRPCInferenceService/ModelStreamInfer", MESSAGE)
    assert framed[:1] == b"\x00" and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    assert decode_fields(framed[5:]) == [(1, 2, MESSAGE.encode())]
    assert stream_error_message("/other.Service/Chat", MESSAGE) is None
