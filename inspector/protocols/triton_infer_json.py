"""A KServe v2 REST inference request's JSON, read without building its tensor data.

An infer request carries its tensors as JSON arrays (`inputs[].data`), thousands of numbers
that the layer only counts. Parsing them into Python floats was most of the REST layer's cost;
here the document is decoded against the request's shape (msgspec), each `data` value kept as
its raw JSON text, and a flat array of numbers (what tritonclient and KServe clients send) is
counted from that text; other data (nested arrays, strings, BYTES tensors) is parsed and
counted as before. The result is what the generic parse gives the layer, exactly: the same dict
for the fields it reads (`id`, `parameters`, `inputs`, `outputs`; per input `name`, `datatype`,
`shape`, `parameters`, `data`), with each input's `data` replaced by its :class:`DataCount`. A
document of another shape (`inputs` not a list of objects, a duplicate key of another type) or
one msgspec refuses gives None and the caller parses it the generic way, so odd and hostile
documents keep the generic parse's results and anomalies.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import msgspec

from inspector import jsonio
from inspector.protocols.triton_tensors import BYTES, DATATYPE_SIZES, json_data_stats

__all__ = ["DataCount", "infer_header", "infer_json"]

_ABSENT = msgspec.Raw()  # the default of a missing `data`: empty raw text


class DataCount(NamedTuple):
    """What `json_data_stats` gives for an input's `data`: (elements, bytes), or None."""

    stats: tuple[int, int | None] | None


class _Input(msgspec.Struct):
    name: Any = None
    datatype: Any = None
    shape: Any = None
    parameters: Any = None
    data: msgspec.Raw = _ABSENT


class _Request(msgspec.Struct):
    id: Any = None
    parameters: Any = None
    inputs: list[_Input] | None = None
    outputs: Any = None


_decode = msgspec.json.Decoder(_Request).decode
_JSON_SPACE = b" \t\r\n"


def infer_header(document: bytes) -> dict[str, Any] | None:
    """The infer request's fields with each input's data counted; None: parse it generically."""
    try:
        return _header(_decode(document))
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None


def infer_json(document: bytes) -> Any:
    """An infer request body as JSON: :func:`infer_header` when it has the request's shape, else
    the value ``json.loads`` gives, or its exception (msgspec is asked once: a document it cannot
    read at all goes straight to ``json``)."""
    try:
        request = _decode(document)
    except msgspec.ValidationError:  # JSON of another shape, or a value msgspec refuses
        return jsonio.loads(document)
    except msgspec.DecodeError:
        return json.loads(document)
    try:
        return _header(request)
    except (ValueError, RecursionError):
        return jsonio.loads(document)


def _header(request: _Request) -> dict[str, Any]:
    inputs = request.inputs
    items = None
    if inputs is not None:
        items = []
        for tensor in inputs:
            item = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
                    "parameters": tensor.parameters}
            raw = tensor.data
            if len(raw):
                item["data"] = DataCount(_data_stats(bytes(raw), tensor.datatype))
            items.append(item)
    return {"id": request.id, "parameters": request.parameters, "inputs": items, "outputs": request.outputs}


def _data_stats(raw: bytes, datatype: Any) -> tuple[int, int | None] | None:
    datatype = datatype if isinstance(datatype, str) else ""
    elements = _flat_numbers(raw) if datatype != BYTES else None
    if elements is None:
        return json_data_stats(jsonio.loads(raw), datatype)
    size = DATATYPE_SIZES.get(datatype)
    return elements, (size * elements if size is not None else None)


def _flat_numbers(raw: bytes) -> int | None:
    """Elements of a flat JSON array without strings or objects (commas then separate elements
    only: msgspec has checked the syntax); None for anything else."""
    if raw[:1] != b"[" or raw.count(b"[") != 1 or b'"' in raw or b"{" in raw:
        return None
    commas = raw.count(b",")
    if commas:
        return commas + 1
    return 1 if raw[1:-1].strip(_JSON_SPACE) else 0
