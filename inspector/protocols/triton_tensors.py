"""Tensor accounting for the `triton` layer: what an inference request declares, what it sends.

A KServe v2 / Triton input tensor declares a datatype and a shape. The shape implies an element
count (the product of the dimensions) and, for fixed-size datatypes, a byte size (element size
times elements). The tensor's data travels separately: as JSON `data`, as a binary slice after
the JSON header (REST binary extension), as `raw_input_contents` or typed `contents` (gRPC), or
not at all when it lives in a registered shared-memory region. A request that declares far more
than it sends (a "tensor bomb") makes the server allocate for the declaration; rules compare the
two numbers this module computes.

BYTES tensors have no fixed element size: each element is serialized as a 4-byte little-endian
length followed by that many bytes, so their declared size is the sum the length prefixes claim.

Numbers stay exact Python ints; element counts and byte sizes saturate at 2^64 - 1 so a shape
like `[2**62, 2**62]` cannot make a record grow without bound.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

#: Element size in bytes of each fixed-size datatype (KServe v2 "Tensor Data Types").
DATATYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8,
    "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
    "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2,
}
BYTES = "BYTES"

#: Element counts and byte sizes saturate here (2^64 - 1).
SATURATED = (1 << 64) - 1
#: Shape dimensions recorded per tensor; a longer shape is an anomaly and is cut.
MAX_DIMS = 32
#: BYTES elements walked (length prefixes read) per tensor before the walk stops.
MAX_BYTES_ELEMENTS = 65536
#: JSON `data` nesting followed before giving up (a shape has at most MAX_DIMS levels).
MAX_JSON_DEPTH = MAX_DIMS + 1

_U32 = struct.Struct("<I")


def element_count(shape: list[int]) -> int | None:
    """Product of the dimensions, saturating at 2^64 - 1; None when a dimension is negative."""
    count = 1
    for dim in shape:
        if dim < 0:
            return None
        count *= dim
        if count > SATURATED:
            count = SATURATED
    return count


def fixed_byte_size(datatype: str, elements: int | None) -> int | None:
    """Bytes a fixed-size tensor of `elements` elements occupies; None for BYTES or unknown types."""
    size = DATATYPE_SIZES.get(datatype)
    if size is None or elements is None:
        return None
    return min(size * elements, SATURATED)


@dataclass(slots=True)
class BytesWalk:
    """What the length prefixes of serialized BYTES elements say."""

    elements: int  # prefixes read
    declared: int  # sum of 4 + length over the prefixes read
    complete: bool  # the walk ended exactly at the end of the data


def walk_bytes_elements(data: bytes | memoryview) -> BytesWalk:
    """Read the 4-byte length prefixes of a serialized BYTES tensor (at most MAX_BYTES_ELEMENTS).

    A prefix claiming more bytes than remain is counted (its claim included in `declared`) and
    ends the walk; `complete` is True only when the prefixes tile the data exactly.
    """
    end = len(data)
    pos = 0
    elements = 0
    declared = 0
    while pos + 4 <= end and elements < MAX_BYTES_ELEMENTS:
        (length,) = _U32.unpack_from(data, pos)
        declared += 4 + length
        pos += 4 + length
        elements += 1
    return BytesWalk(elements, declared, pos == end)


def json_data_stats(data: Any, datatype: str) -> tuple[int, int | None] | None:
    """`(elements, bytes)` a JSON `data` value carries, or None when it is not a tensor body.

    Nested lists are flattened (row-major, as KServe allows); the bytes are what the elements
    would occupy in binary form (element size times count; BYTES: 4 + UTF-8 length each).
    """
    leaves: list[list[Any]] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    scalars = 0
    while stack:
        items, depth = stack.pop()
        if not isinstance(items, list):
            scalars += 1
            leaves.append([items])
            continue
        if items and isinstance(items[0], list):
            if depth >= MAX_JSON_DEPTH:
                return None
            stack.extend((item, depth + 1) for item in items)
        else:
            leaves.append(items)
    elements = sum(map(len, leaves))
    if datatype == BYTES:
        total = 0
        for leaf in leaves:
            for item in leaf:
                text = item if isinstance(item, str) else str(item)
                total += 4 + len(text.encode("utf-8", "surrogatepass"))
        return elements, total
    size = DATATYPE_SIZES.get(datatype)
    return elements, (size * elements if size is not None else None)


@dataclass(slots=True)
class TensorInput:
    """One input tensor of an inference request, as the record lists it."""

    name: str | None
    datatype: str | None
    shape: list[int] | None
    #: Where the data came from: json, binary, raw, contents, shared_memory, none.
    source: str = "none"
    elements: int | None = None
    bytes_declared: int | None = None
    bytes_sent: int | None = None
    #: Elements the sent data holds, when exactly known (JSON data, typed contents, BYTES walk).
    elements_sent: int | None = None
    shm_region: str | None = None
    shm_offset: int | None = None
    shm_byte_size: int | None = None

    def declare(self) -> None:
        """Fill `elements` and (fixed-size types) `bytes_declared` from the shape and datatype."""
        if self.shape is not None:
            self.elements = element_count(self.shape)
        if self.datatype is not None and self.datatype != BYTES:
            self.bytes_declared = fixed_byte_size(self.datatype, self.elements)

    def take_data(self, data: bytes | memoryview, sent: int) -> None:
        """The tensor's data: `sent` bytes, of which `data` is the kept part.

        For BYTES tensors the length prefixes are walked: their claims are the declared size when
        the walk covered all the data (or already claim more than was sent).
        """
        self.bytes_sent = sent
        if self.datatype != BYTES:
            return
        walk = walk_bytes_elements(data)
        if len(data) == sent and walk.elements < MAX_BYTES_ELEMENTS:
            self.bytes_declared = walk.declared
            if walk.complete:
                self.elements_sent = walk.elements
        elif walk.declared > sent:  # a prefix already claims more than the whole tensor
            self.bytes_declared = walk.declared

    def mismatched(self) -> bool:
        """True when the data sent disagrees with the declaration (both known)."""
        if self.source in ("shared_memory", "none"):
            return False
        if self.bytes_declared is not None and self.bytes_sent is not None \
                and self.bytes_declared != self.bytes_sent:
            return True
        return self.elements is not None and self.elements_sent is not None and self.elements != self.elements_sent

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape,
                                  "source": self.source, "elements": self.elements,
                                  "bytes_declared": self.bytes_declared, "bytes_sent": self.bytes_sent}
        if self.shm_region is not None:
            record["shm_region"] = self.shm_region
        if self.shm_offset is not None:
            record["shm_offset"] = self.shm_offset
        if self.shm_byte_size is not None:
            record["shm_byte_size"] = self.shm_byte_size
        return record


def input_totals(inputs: list[TensorInput], unseen_bytes: int = 0) -> dict[str, Any]:
    """`input_elements` (largest declared), `input_bytes_declared` / `input_bytes_sent` (sums).

    `unseen_bytes`: tensor bytes known to have been sent but not attributable to one input (the
    part of a gRPC message past the kept prefix); they count as sent.
    """
    largest = max((t.elements for t in inputs if t.elements is not None), default=None)
    declared = [t.bytes_declared for t in inputs if t.bytes_declared is not None]
    sent = [t.bytes_sent for t in inputs if t.bytes_sent is not None]
    totals: dict[str, Any] = {}
    if largest is not None:
        totals["input_elements"] = largest
    if declared:
        totals["input_bytes_declared"] = min(sum(declared), SATURATED)
    if sent or unseen_bytes:
        totals["input_bytes_sent"] = sum(sent) + unseen_bytes
    return totals


def unsigned64(value: int) -> int:
    """A negative int64 as the unsigned 64-bit value a size_t would hold; others unchanged."""
    if -(1 << 63) <= value < 0:
        return value + (1 << 64)
    return value
