"""Header checks for model file formats that carry no code: safetensors, GGUF, numpy, ONNX, HDF5.

Each `read_*` function takes the first bytes of a file (possibly a prefix) and returns a
:class:`HeaderCheck`: the facts worth logging (`info`), the anomalies found (`(event, message)`
pairs, events named `model_<format>_<what>`), and whether the header was seen whole. None of
them raises on arbitrary bytes, and each caps what it reads.

Format facts:

* safetensors (https://github.com/huggingface/safetensors, "Format"): u64 little-endian N, then
  N bytes of JSON: `{"<tensor>": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
  "__metadata__": {str: str}}`, then the tensor bytes. Readers refuse N over 100,000,000 and
  offsets that do not tile the data buffer exactly.
* GGUF (ggml `docs/gguf.md`): "GGUF", u32 version, u64 tensor count, u64 metadata count (u32 in
  version 1), then typed key/value pairs (`general.architecture`, `tokenizer.chat_template` ...).
* numpy `.npy` (numpy `lib/format.py`): "\\x93NUMPY", major, minor, u16 (v1) or u32 (v2, v3)
  header length, a Python dict literal with `descr`, `fortran_order`, `shape`. An object dtype
  (`O`) means the array data is a pickle.
* ONNX (onnx `onnx.proto`, ModelProto): a protobuf message with no magic number. Field 1
  `ir_version` comes first as written by the onnx library, then `producer_name` (2),
  `producer_version` (3), `domain` (4), `model_version` (5), `doc_string` (6), `graph` (7),
  `opset_import` (8), `metadata_props` (14), `training_info` (20), `functions` (25),
  `configuration` (26). Recognition is structural, hence its confidence is "medium" unless the
  name says `.onnx` too.
* HDF5: the 8-byte signature "\\x89HDF\\r\\n\\x1a\\n" at offset 0, 512, 1024 or 2048.
"""

from __future__ import annotations

import ast
import math
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any

from inspector import jsonio
from inspector.protocols.protobuf import ProtobufError, read_varint

#: safetensors' own limit on the JSON header length.
SAFETENSORS_MAX_HEADER = 100_000_000
#: Header keys (tensors) examined, dtypes and metadata keys listed.
MAX_TENSORS_CHECKED = 100_000
MAX_LISTED = 32
MAX_TEXT = 256
MAX_CHAT_TEMPLATE = 2048
#: Dimensions a safetensors shape may have before it counts as absurd.
MAX_RANK = 64
#: GGUF key/value pairs walked, and counts above which a header is absurd.
GGUF_MAX_KV_WALKED = 4096
GGUF_ABSURD_COUNT = 10_000_000
#: numpy headers longer than this are not parsed (numpy itself stops at 10,000 bytes).
NPY_MAX_HEADER = 65_536

#: Bits per element of each safetensors dtype.
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
    "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Where the superblock signature may be: 0, or after a user block of 512 * 2^n bytes.
HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048)
NPY_MAGIC = b"\x93NUMPY"
GGUF_MAGIC = b"GGUF"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


@dataclass(slots=True)
class HeaderCheck:
    """Result of a header check: `info` for the record, `anomalies` as (event, message)."""

    info: dict[str, Any] = field(default_factory=dict)
    anomalies: list[tuple[str, str]] = field(default_factory=list)
    #: False when the prefix ended inside the header.
    header_complete: bool = True


# --- safetensors -------------------------------------------------------------------------------


def looks_like_safetensors(data: bytes) -> bool:
    """u64 header length then a JSON object: the only shape safetensors files have."""
    return len(data) >= 9 and data[8] == 0x7B and _U64.unpack_from(data)[0] >= 2


def read_safetensors(data: bytes, *, body_complete: bool, total_size: int | None) -> HeaderCheck:
    check = HeaderCheck()
    length = _U64.unpack_from(data)[0]
    check.info["header_length"] = length
    if length > SAFETENSORS_MAX_HEADER:
        check.info["header_valid"] = False
        check.anomalies.append(("model_safetensors_header_too_large",
                                f"safetensors header length {length} is over the format's "
                                f"{SAFETENSORS_MAX_HEADER}-byte limit"))
        return check
    if 8 + length > len(data):
        check.header_complete = False
        if body_complete:
            check.info["header_valid"] = False
            check.anomalies.append(("model_safetensors_header_truncated",
                                    f"header length {length} runs past the end of the "
                                    f"{len(data)}-byte file"))
        return check
    try:
        header = jsonio.loads(data[8:8 + length])
    except (ValueError, RecursionError) as exc:
        check.info["header_valid"] = False
        check.anomalies.append(("model_safetensors_header_invalid", f"header is not JSON: {exc}"[:MAX_TEXT]))
        return check
    problem, data_end = _check_safetensors_header(header, check.info)
    if problem is None and total_size is not None and data_end is not None and 8 + length + data_end != total_size:
        problem = (f"header describes {8 + length + data_end} bytes, the object has {total_size}", True)
    if problem is not None:
        text, size_problem = problem
        check.info["header_valid"] = False
        event = "model_safetensors_size_mismatch" if size_problem else "model_safetensors_header_invalid"
        check.anomalies.append((event, text[:MAX_TEXT]))
    else:
        check.info["header_valid"] = True
    return check


def _check_safetensors_header(header: Any, info: dict[str, Any]) -> tuple[tuple[str, bool] | None, int | None]:
    """Validate the tensor table; fills `info`. Returns ((reason, is_size_problem) | None, data end)."""
    if not isinstance(header, dict):
        return (f"header is a JSON {type(header).__name__}, not an object", False), None
    metadata = header.get("__metadata__")
    if metadata is not None:
        if not isinstance(metadata, dict):
            return ("__metadata__ is not an object", False), None
        info["metadata_keys"] = sorted(str(k)[:MAX_TEXT] for k in metadata)[:MAX_LISTED]
    spans: list[tuple[int, int, str]] = []
    dtypes: set[str] = set()
    count = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count += 1
        if count > MAX_TENSORS_CHECKED:
            continue
        reason = _check_tensor(str(name)[:MAX_TEXT], entry, spans, dtypes)
        if reason is not None:
            info["tensor_count"] = count
            return (reason, False), None
    info["tensor_count"] = count
    info["dtypes"] = sorted(dtypes)[:MAX_LISTED]
    if count > MAX_TENSORS_CHECKED:
        return None, None  # the tiling check needs every tensor
    spans.sort()
    expected = 0
    for begin, end, name in spans:
        if begin != expected:
            gap = "overlaps the previous tensor" if begin < expected else f"leaves a gap at byte {expected}"
            return (f"tensor {name!r} starts at {begin}: {gap}", False), None
        expected = end
    return None, expected


def _check_tensor(name: str, entry: Any, spans: list[tuple[int, int, str]], dtypes: set[str]) -> str | None:
    if not isinstance(entry, dict):
        return f"tensor {name!r} is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
        return f"tensor {name!r} has unknown dtype {str(dtype)[:32]!r}"
    dtypes.add(dtype)
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_count(d) for d in shape):
        return f"tensor {name!r} has a bad shape"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        return f"tensor {name!r} has bad data_offsets"
    bits = math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype]
    if bits != (offsets[1] - offsets[0]) * 8:
        return (f"tensor {name!r}: shape {shape[:8]} of {dtype} needs {bits // 8} bytes, "
                f"data_offsets give {offsets[1] - offsets[0]}")
    spans.append((offsets[0], offsets[1], name))
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- GGUF --------------------------------------------------------------------------------------

_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_KEPT_KEYS = {"general.architecture": "architecture", "general.name": "name",
                   "tokenizer.chat_template": "chat_template"}


class _OutOfBytes(Exception):
    pass


def read_gguf(data: bytes, *, body_complete: bool) -> HeaderCheck:
    check = HeaderCheck()
    if len(data) < 8:
        check.header_complete = False
        return check
    version = _U32.unpack_from(data, 4)[0]
    check.info["version"] = version
    if version not in (1, 2, 3):
        check.anomalies.append(("model_gguf_unknown_version", f"GGUF version {version}"))
        return check
    wide = version >= 2
    need = 24 if wide else 16
    if len(data) < need:
        check.header_complete = False
        return check
    if wide:
        tensors, kv_count = _U64.unpack_from(data, 8)[0], _U64.unpack_from(data, 16)[0]
    else:
        tensors, kv_count = _U32.unpack_from(data, 8)[0], _U32.unpack_from(data, 12)[0]
    check.info["tensor_count"] = tensors
    check.info["metadata_count"] = kv_count
    if tensors > GGUF_ABSURD_COUNT or kv_count > GGUF_ABSURD_COUNT:
        check.anomalies.append(("model_gguf_bad_header",
                                f"GGUF header claims {tensors} tensors and {kv_count} metadata pairs"))
        return check
    reader = _GgufReader(data, need, wide)
    walked = 0
    try:
        while walked < min(kv_count, GGUF_MAX_KV_WALKED):
            key = reader.string(MAX_TEXT * 4)
            value_type = reader.u32()
            kept = _GGUF_KEPT_KEYS.get(key)
            if kept is not None and value_type == _GGUF_STRING:
                limit = MAX_CHAT_TEMPLATE if kept == "chat_template" else MAX_TEXT
                check.info[kept] = reader.string(limit)
            else:
                reader.skip_value(value_type)
            walked += 1
    except _OutOfBytes:
        check.header_complete = False
        if body_complete:
            check.anomalies.append(("model_gguf_bad_header",
                                    f"metadata pair {walked} runs past the end of the file"))
    except ValueError as exc:
        check.anomalies.append(("model_gguf_bad_header", f"metadata pair {walked}: {exc}"))
    check.info["metadata_read"] = walked
    return check


class _GgufReader:
    """Cursor over GGUF metadata; raises _OutOfBytes at the end of the prefix, ValueError on nonsense."""

    def __init__(self, data: bytes, pos: int, wide: bool) -> None:
        self.data = data
        self.pos = pos
        self.wide = wide

    def _take(self, size: int) -> int:
        start = self.pos
        if size > len(self.data) - start:
            raise _OutOfBytes
        self.pos = start + size
        return start

    def u32(self) -> int:
        return _U32.unpack_from(self.data, self._take(4))[0]

    def count(self) -> int:
        return _U64.unpack_from(self.data, self._take(8))[0] if self.wide else self.u32()

    def string(self, keep: int) -> str:
        length = self.count()
        if length > GGUF_ABSURD_COUNT * 100:
            raise ValueError(f"string length {length}")
        start = self._take(length)
        return self.data[start:start + min(length, keep)].decode("utf-8", "replace")

    def skip_value(self, value_type: int) -> None:
        if value_type in _GGUF_SCALARS:
            self._take(_GGUF_SCALARS[value_type])
        elif value_type == _GGUF_STRING:
            length = self.count()
            if length > GGUF_ABSURD_COUNT * 100:
                raise ValueError(f"string length {length}")
            self._take(length)
        elif value_type == _GGUF_ARRAY:
            element_type = self.u32()
            count = self.count()
            if count > GGUF_ABSURD_COUNT * 100:
                raise ValueError(f"array of {count} elements")
            if element_type in _GGUF_SCALARS:
                self._take(count * _GGUF_SCALARS[element_type])
            elif element_type == _GGUF_STRING:
                for _ in range(count):
                    self.skip_value(_GGUF_STRING)
            else:
                raise ValueError(f"array of value type {element_type}")
        else:
            raise ValueError(f"unknown value type {value_type}")


# --- numpy -------------------------------------------------------------------------------------


def read_npy(data: bytes, *, body_complete: bool) -> tuple[HeaderCheck, int | None]:
    """Check a `.npy` header; returns the check and the offset where the array data starts."""
    check = HeaderCheck()
    if len(data) < 10:
        check.header_complete = False
        return check, None
    major, minor = data[6], data[7]
    check.info["version"] = f"{major}.{minor}"
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3) and len(data) >= 12:
        length, start = int.from_bytes(data[8:12], "little"), 12
    elif major in (2, 3):
        check.header_complete = False
        return check, None
    else:
        check.anomalies.append(("model_numpy_bad_header", f"unknown .npy version {major}.{minor}"))
        return check, None
    if length > NPY_MAX_HEADER:
        check.anomalies.append(("model_numpy_bad_header", f".npy header length {length} is over {NPY_MAX_HEADER}"))
        return check, None
    if start + length > len(data):
        check.header_complete = False
        if body_complete:
            check.anomalies.append(("model_numpy_bad_header", f"header length {length} runs past the end of the file"))
        return check, None
    text = data[start:start + length].decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        # The header is a Python literal (numpy reads it the same way). Compiling a peer's text
        # must not print the compiler's warnings (an invalid escape sequence in a string) to the
        # operator's stderr: they are silenced here, the way the header's errors are caught.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            header = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        check.anomalies.append(("model_numpy_bad_header", f".npy header is not a dict literal: {exc}"[:MAX_TEXT]))
        return check, None
    if not isinstance(header, dict) or "descr" not in header or "shape" not in header:
        check.anomalies.append(("model_numpy_bad_header", ".npy header lacks descr or shape"))
        return check, None
    descr = header["descr"]
    check.info["dtype"] = str(descr)[:MAX_TEXT]
    shape = header["shape"]
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        check.info["shape"] = list(shape[:MAX_LISTED])
    check.info["object_dtype"] = _has_object_dtype(descr)
    return check, start + length


def _has_object_dtype(descr: Any, depth: int = 0) -> bool:
    """'O' / '|O', or a structured dtype with an object field."""
    if depth > 8:
        return False
    if isinstance(descr, str):
        return descr.lstrip("<>|=") == "O"
    if isinstance(descr, (list, tuple)):
        return any(_has_object_dtype(part, depth + 1) for part in descr)
    return False


# --- ONNX --------------------------------------------------------------------------------------

#: ModelProto field number -> wire type.
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_ONNX_MAX_IR_VERSION = 32


def read_onnx(data: bytes) -> HeaderCheck | None:
    """The ModelProto facts when `data` starts like an ONNX model, else None.

    Requires `ir_version` (3..32) first, only ModelProto field numbers with their wire types
    until the prefix ends, printable producer strings, and the `graph` field present.
    """
    if len(data) < 4 or data[0] != 0x08:
        return None
    check = HeaderCheck()
    pos = 0
    seen_graph = False
    try:
        while pos < len(data):
            tag, pos = read_varint(data, pos)
            number, wire = tag >> 3, tag & 7
            if _ONNX_FIELDS.get(number) != wire:
                return None
            if wire == 0:
                value, pos = read_varint(data, pos)
                if number == 1:
                    if not 3 <= value <= _ONNX_MAX_IR_VERSION:
                        return None
                    check.info["ir_version"] = value
                continue
            length, pos = read_varint(data, pos)
            if number == 7:
                seen_graph = True
            if number in (2, 3) and pos + length <= len(data):
                text = data[pos:pos + min(length, MAX_TEXT)]
                if not text.isascii() or not text.decode("ascii").isprintable():
                    return None
                check.info["producer" if number == 2 else "producer_version"] = text.decode("ascii")
            if pos + length > len(data):
                check.header_complete = False
                break
            pos += length
    except ProtobufError:
        if pos < len(data) - 10:
            return None
        check.header_complete = False
    if "ir_version" not in check.info or not seen_graph:
        return None
    return check


# --- HDF5 --------------------------------------------------------------------------------------


def hdf5_signature_at(data: bytes) -> int | None:
    """Offset of the HDF5 superblock signature (0, or after a user block of 512 * 2^n bytes)."""
    for offset in HDF5_SIGNATURE_OFFSETS:
        if data[offset:offset + 8] == HDF5_SIGNATURE:
            return offset
    return None


def has_keras_lambda(data: bytes) -> bool:
    """A Keras model config naming a Lambda layer (arbitrary Python code, CVE-2024-3660)."""
    return b'"class_name": "Lambda"' in data or b'"class_name":"Lambda"' in data
