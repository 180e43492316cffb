"""The infer request read without building its tensor data gives the generic parse's record.

Differential: each body goes through the REST layer twice, once as shipped (msgspec against the
request's shape, data counted from its text) and once with that path turned off (every value
parsed), and the records and anomalies must be identical. Bodies come from tritonclient itself
and from generated documents that vary what the shortcut depends on.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import jsonio
from inspector.apps import transaction_record
from inspector.http import HttpExchange, HttpMessage
from inspector.protocols import triton_rest
from inspector.protocols.triton_common import AnomalyOnce
from inspector.protocols.triton_infer_json import DataCount, infer_header

INFER_PATH = "/v2/models/resnet/infer"


def _record(body: bytes, headers: list | None = None) -> tuple[dict, list, tuple]:
    """The transaction record, its anomalies, and the REST layer's own output (its tensor objects
    hold more than the record shows)."""
    request = HttpMessage(kind="request", version="HTTP/1.1", headers=headers or [], method="POST", path=INFER_PATH,
                          status=0, body=body, body_length=len(body), body_truncated=False, trailers=[],
                          complete=True)
    exchange = HttpExchange(request=request, response=None, stream_id=0)
    record, anomalies = transaction_record(None, exchange)
    reported: list = []
    layer = triton_rest.rest_call(exchange, triton_rest.match_route(INFER_PATH),
                                  AnomalyOnce(lambda *anomaly: reported.append(anomaly)))
    return record, anomalies, (layer, reported)


def _both_ways(body: bytes, monkeypatch: pytest.MonkeyPatch, headers: list | None = None) -> tuple[tuple, tuple]:
    shipped = _record(body, headers)
    with monkeypatch.context() as patch:
        patch.setattr(triton_rest, "infer_json", jsonio.loads)  # the generic parse only
        generic = _record(body, headers)
    return shipped, generic


NUMPY_TYPES = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
               "UINT8": np.uint8, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16,
               "FP32": np.float32, "FP64": np.float64}


@pytest.mark.parametrize("datatype", sorted(NUMPY_TYPES))
@pytest.mark.parametrize("shape", [(1, 3, 4, 4), (2, 5), (7,), (0, 3)])
def test_tritonclient_bodies_are_counted_without_parsing_the_data(datatype, shape, monkeypatch):
    array = (np.arange(int(np.prod(shape))) % 7).astype(NUMPY_TYPES[datatype]).reshape(shape)
    first = httpclient.InferInput("INPUT0", list(shape), datatype)
    first.set_data_from_numpy(array, binary_data=False)
    second = httpclient.InferInput("INPUT1", [2], "BYTES")
    second.set_data_from_numpy(np.array([b"ab", b"cde"], dtype=np.object_), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [first, second], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)], request_id="7")
    assert json_size is None
    header = infer_header(body)
    assert header is not None
    expected_bytes = array.size * array.itemsize
    assert header["inputs"][0]["data"] == DataCount((array.size, expected_bytes))
    shipped, generic = _both_ways(body, monkeypatch)
    assert shipped == generic
    inputs = shipped[0]["triton"]["inputs"]
    assert inputs[0]["bytes_sent"] == expected_bytes
    assert inputs[1]["bytes_sent"] == 4 + 2 + 4 + 3  # BYTES: a length prefix and the text per element


def test_binary_extension_header_goes_the_same_way(monkeypatch):
    first = httpclient.InferInput("INPUT0", [2, 2], "FP32")
    first.set_data_from_numpy(np.ones((2, 2), dtype=np.float32), binary_data=True)
    second = httpclient.InferInput("INPUT1", [3], "INT32")
    second.set_data_from_numpy(np.arange(3, dtype=np.int32), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([first, second])
    headers = [("inference-header-content-length", str(json_size))]
    shipped, generic = _both_ways(body, monkeypatch, headers)
    assert shipped == generic
    assert [i["source"] for i in shipped[0]["triton"]["inputs"]] == ["binary", "json"]


def test_what_the_shortcut_leaves_to_the_generic_parse():
    assert infer_header(b'{"inputs":[{"name":"x","datatype":"FP32","data":[[1,2],[3,4]]}]}')["inputs"][0]["data"] \
        == DataCount((4, 16))  # nested: parsed, still counted
    assert infer_header(b'{"inputs":[{"data":[ ]},{"data":[5]},{"data":null},{}]}')["inputs"] == [
        {"name": None, "datatype": None, "shape": None, "parameters": None, "data": DataCount((0, None))},
        {"name": None, "datatype": None, "shape": None, "parameters": None, "data": DataCount((1, None))},
        {"name": None, "datatype": None, "shape": None, "parameters": None, "data": DataCount((1, None))},
        {"name": None, "datatype": None, "shape": None, "parameters": None}]
    for refused in (b'{"inputs": "x"}', b'{"inputs": [1]}', b'[]', b'{"inputs": [{"data": [NaN]}]}',
                    b'{"inputs": [{"data": ["\\ud800"]}]}', b'{"inputs": [], "inputs": 5}', b'{"inputs": [',
                    '{"inputs": []}'.encode("utf-16")):
        assert infer_header(refused) is None, refused


json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=4)
data_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=3), inner, max_size=2), max_leaves=12)
flat_numbers = st.integers(0, 40).flatmap(lambda size: st.lists(
    st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False), min_size=size, max_size=size))
inputs = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=5) | st.integers(),
    "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "BF16", "weird", ""]) | st.integers(),
    "shape": st.lists(st.integers(-2, 5), max_size=3) | st.text(max_size=2),
    "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "shared_memory_region", "x"]),
                                  st.integers(-1, 9) | st.text(max_size=3), max_size=2),
    "data": flat_numbers | flat_numbers | data_values,
    "extra": data_values,
})
requests = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=4) | st.integers() | st.booleans(),
    "parameters": st.dictionaries(st.text(max_size=4), json_scalars, max_size=3) | st.integers(),
    "inputs": st.lists(inputs, max_size=3) | json_scalars,
    "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=4)}), max_size=2) | json_scalars,
})


@settings(max_examples=300, deadline=None, database=None)
@given(request=requests, spaced=st.booleans(), duplicate=st.booleans())
def test_generated_requests_give_the_generic_record(request, spaced, duplicate):
    body = json.dumps(request, separators=(", ", ": ") if spaced else (",", ":")).encode()
    if duplicate and body.startswith(b"{") and len(body) > 2:
        body = b'{"inputs": [{"data": [1, 2]}], ' + body[1:]  # an earlier duplicate key loses
    with pytest.MonkeyPatch.context() as monkeypatch:
        shipped, generic = _both_ways(body, monkeypatch)
    assert shipped == generic
