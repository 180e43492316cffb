"""Model-file detection (inspector.protocols.modelfile): formats from bytes made by the real libraries.

Pickles come from `pickle.dumps`, arrays from `numpy.save`/`savez`, archives from `zipfile`
(seekable, streamed with data descriptors, zip64, deflated). Formats with no writer installed here
(safetensors, GGUF, ONNX, HDF5 superblocks, legacy torch) are built byte-exact from their specs.
Nothing is ever unpickled.
"""

from __future__ import annotations

import builtins
import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import random
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.protocols import modelfile
from inspector.protocols.modelfile import (
    EXTENSION_FORMATS,
    format_from_name,
    inspect_model,
    model_fields,
)
from inspector.protocols.protobuf import encode_field, encode_message


class ShellOnLoad:
    def __reduce__(self):
        return (os.system, ("echo owned",))


class EvalOnLoad:
    def __reduce__(self):
        return (builtins.eval, ("1+1",))


class SubprocessOnLoad:
    def __reduce__(self):
        return (subprocess.check_output, (["id"],))


def _touch(path: str) -> None:  # what a pickle below would call if anything loaded it
    Path(path).write_text("loaded")


class TouchOnLoad:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


class Plain:
    """A model's own class: neither safe nor unsafe for picklescan."""

    def __init__(self) -> None:
        self.w = [1, 2, 3]


def inspect(data: bytes, name: str | None = None, complete: bool = True, **kw):
    model = inspect_model(data, name=name, body_complete=complete, **kw)
    assert model is not None
    return model


def zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def streamed_zip(entries: dict[str, bytes]) -> bytes:
    """zipfile writing to a pipe-like stream: sizes go to data descriptors (flag bit 3)."""
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, data in entries.items():
            with archive.open(name, "w") as member:
                member.write(data)
    return bytes(sink.data)


def safetensors(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


GOOD_HEADER = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
               "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}}


# --- pickles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols_2_to_5(protocol):
    model = inspect(pickle.dumps({"w": [1.5, 2.5]}, protocol=protocol), "m.pkl")
    assert model.record() == {"format": "pickle", "format_source": "magic", "confidence": "high",
                              "extension_format": "pickle", "extension_mismatch": False,
                              "pickle": {"scan": "complete", "scanned_bytes": model.pickle.scanned_bytes,
                                         "globals": [], "dangerous": [], "protocol": protocol}}


@pytest.mark.parametrize(("payload", "dangerous"), [
    (ShellOnLoad(), "posix.system"),
    (EvalOnLoad(), "builtins.eval"),
    (SubprocessOnLoad(), "subprocess.check_output"),
])
def test_dangerous_globals_are_named(payload, dangerous):
    scan = inspect(pickle.dumps(payload, protocol=4)).pickle
    assert scan.dangerous == (dangerous,) and scan.globals == (dangerous,) and scan.status == "complete"


def test_a_models_own_class_is_suspicious_not_dangerous():
    scan = inspect(pickle.dumps(Plain(), protocol=4)).pickle
    assert scan.suspicious == (f"{__name__}.Plain",) and scan.dangerous == ()


def test_protocol_0_pickle_is_found_by_its_global_opcode():
    model = inspect(pickle.dumps(ShellOnLoad(), protocol=0), "x.bin")
    assert (model.format, model.confidence, model.pickle.protocol) == ("pickle", "medium", None)
    assert model.pickle.dangerous == ("posix.system",)


def test_scanning_never_loads_the_pickle(tmp_path):
    marker = tmp_path / "marker"
    data = pickle.dumps(TouchOnLoad(str(marker)), protocol=4)
    scan = inspect(data, "x.pkl").pickle
    assert scan.suspicious == (f"{__name__}._touch",)
    assert not marker.exists()
    pickle.loads(data)  # the control: loading it would have run the call
    assert marker.read_text() == "loaded"


def test_truncated_pickle_scan_is_partial_and_keeps_what_it_saw():
    data = pickle.dumps([ShellOnLoad(), list(range(2000))], protocol=4)
    scan = inspect(data[:200], "x.pkl", complete=False).pickle
    assert (scan.status, scan.dangerous) == ("partial", ("posix.system",))


def test_garbage_after_a_pickle_in_a_complete_body_is_an_error():
    scan = inspect(pickle.dumps({"a": 1}, protocol=4) + b"\xff\xfe not a pickle").pickle
    assert scan.status == "error"


def test_scan_cap_makes_the_scan_partial():
    data = pickle.dumps([0.5] * 10_000 + [ShellOnLoad()], protocol=4)
    model = inspect_model(data, name="x.pkl", body_complete=True, scan_cap=1024)
    assert model.pickle.status == "partial" and model.pickle.scanned_bytes == 1024
    assert model.pickle.dangerous == ()  # the call sits past the cap: the record says partial


def test_joblib_by_its_globals_and_by_compression():
    wrapper = (b"\x80\x04cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}b.")
    assert inspect(wrapper, "m.pkl").format == "joblib"
    model = inspect(zlib.compress(pickle.dumps(ShellOnLoad(), protocol=4)), "model.joblib")
    assert (model.format, model.compression, model.pickle.dangerous) == ("joblib", "zlib", ("posix.system",))
    model = inspect(gzip.compress(pickle.dumps({"a": 1}, protocol=4)), "weights.bin")
    assert (model.format, model.compression, model.pickle.status) == ("pickle", "gzip", "complete")
    assert inspect_model(gzip.compress(b"just some text"), name=None, body_complete=True) is None


# The writers pandas.to_pickle (compression from the extension) and joblib.dump(compress="bz2" / "xz" /
# "lzma") use: the standard library's file objects, the pickle streamed into them.
COMPRESSED_WRITERS = [
    ("model.pkl.bz2", bz2.BZ2File, {}, "bz2", "pickle"),
    ("model.pkl.xz", lzma.LZMAFile, {"format": lzma.FORMAT_XZ}, "xz", "pickle"),
    ("model.joblib", lzma.LZMAFile, {"format": lzma.FORMAT_XZ}, "xz", "joblib"),
    ("model.pkl.lzma", lzma.LZMAFile, {"format": lzma.FORMAT_ALONE}, "lzma", "pickle"),
    ("model.pkl.gz", gzip.GzipFile, {}, "gzip", "pickle"),
]


@pytest.mark.parametrize(("name", "writer", "options", "compression", "fmt"), COMPRESSED_WRITERS,
                         ids=[w[0] for w in COMPRESSED_WRITERS])
def test_bz2_xz_and_lzma_pickles_are_decompressed_and_scanned(tmp_path, name, writer, options, compression, fmt):
    marker = tmp_path / "marker"
    with writer(tmp_path / name, "wb", **options) as out:
        # 1.2 MB of incompressible weights after the call: two bz2 blocks (900 kB each).
        pickle.dump([ShellOnLoad(), TouchOnLoad(str(marker)), random.Random(7).randbytes(1_200_000)], out,
                    protocol=4)
    data = (tmp_path / name).read_bytes()
    model = inspect(data, name, scan_cap=2 * 1024 * 1024)
    assert (model.format, model.compression, model.pickle.status) == (fmt, compression, "complete")
    assert model.pickle.dangerous == ("posix.system",) and model.record()["extension_format"] == fmt
    prefix = inspect(data[:1_000_000], name, complete=False)  # the kept prefix (first block): partial
    assert (prefix.compression, prefix.pickle.status, prefix.pickle.dangerous) == (compression, "partial",
                                                                                   ("posix.system",))
    assert not marker.exists()  # disassembled, never loaded


def test_compression_suffixes_are_looked_through_by_name():
    assert format_from_name("models/model.pkl.bz2") == "pickle" and format_from_name("m.joblib.xz") == "joblib"
    assert format_from_name("pytorch_model.bin.gz") == "torch" and format_from_name("m.npy.z") == "numpy"
    assert format_from_name("data.tar.gz") is None and format_from_name("model.gz") is None
    head = inspect(b"", "model.pkl.lzma", body_seen=False)  # a HEAD: the name alone
    assert head.record() == {"format": "pickle", "format_source": "extension", "confidence": "low"}


def test_a_compressed_body_that_cannot_be_read_says_so():
    data = bz2.compress(pickle.dumps(ShellOnLoad(), protocol=4))
    cut = inspect(data[:20], "model.pkl.bz2", complete=False).record()
    assert cut == {"format": "pickle", "format_source": "extension", "confidence": "low", "compression": "bz2",
                   "decompression_error": "the kept 20 bytes end before the bz2 stream's first decompressed byte"}
    short = inspect(data[:20], "model.pkl.bz2")  # the whole object, and no output: a corrupt stream
    assert short.anomalies == [("model_compression_corrupt",
                                "the bz2 stream ends before its first decompressed byte")]
    corrupt = bytearray(lzma.compress(pickle.dumps(ShellOnLoad(), protocol=4)))
    corrupt[20:40] = bytes(20)
    record = inspect(bytes(corrupt), "model.pkl.xz").record()
    assert (record["compression"], record["format_source"]) == ("xz", "extension")
    assert record["decompression_error"].startswith("corrupt xz stream")
    # Compressed bytes that hold no pickle: no error, the name decides (a tarball is no model).
    assert inspect(gzip.compress(b"plain text"), "model.pkl.gz").record() == {
        "format": "pickle", "format_source": "extension", "confidence": "low", "compression": "gzip"}
    assert inspect_model(bz2.compress(b"plain text"), name="data.tar.bz2", body_complete=True) is None
    assert inspect_model(data[:20], name="notes.bz2", body_complete=True) is None


def decompress_prefix(data: bytes, kind: str, cap: int) -> tuple[bytes, bool]:
    """How the scan decompressed before its probe: at most `cap + 1` bytes of the stream `data`
    starts, and whether the stream ended in `data` (the reference below reads it)."""
    decoder = modelfile._decoder(kind)
    inner = decoder.decompress(data, cap + 1)
    return inner, modelfile._ended(decoder)


def test_bz2_and_xz_bombs_cost_the_scan_cap():
    bomb = bz2.compress(bytes(64 * 1024 * 1024))  # 64 MiB of zeros in about 50 bytes
    started = time.perf_counter()
    inner, ended = decompress_prefix(bomb, "bz2", 1024 * 1024)
    assert (len(inner), ended) == (1024 * 1024 + 1, False)
    assert time.perf_counter() - started < 1.0
    pickled = b"\x80\x04\x95" + bytes(8) + b"N" * (8 * 1024 * 1024)  # a pickle that is 8 MiB of NONE opcodes
    for compress, name in ((bz2.compress, "m.pkl.bz2"), (lzma.compress, "m.pkl.xz")):
        model = inspect(compress(pickled), name, scan_cap=64 * 1024)
        assert (model.pickle.status, model.pickle.scanned_bytes) == ("partial", 64 * 1024)


def _compressed_pickle_reference(data: bytes, complete: bool, cap: int, ext_format: str | None):
    """`_compressed_pickle` before its probe: decompress up to the cap, then look for a pickle."""
    kind = modelfile.compression_of(data)
    if kind is None:
        return None
    strong = kind in ("gzip", "bz2", "xz")
    try:
        inner, ended = decompress_prefix(data, kind, cap)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError, MemoryError) as exc:
        return modelfile._Unread(kind, f"corrupt {kind} stream: {exc}"[:256], corrupt=True) if strong else None
    is_pickle = modelfile.is_pickle_magic(inner) or bool(modelfile._PROTOCOL0_GLOBAL.match(inner, 0, 300))
    if not strong and not is_pickle:
        return None
    if not inner:
        if ended:
            return modelfile._Unread(kind, f"the {kind} stream is empty")
        if complete:
            return modelfile._Unread(kind, f"the {kind} stream ends before its first decompressed byte", corrupt=True)
        return modelfile._Unread(kind, f"the kept {len(data)} bytes end before the {kind} stream's first "
                                 "decompressed byte")
    if not is_pickle:
        return modelfile._Unread(kind, None)
    truncated = len(inner) > cap or not ended or not complete
    model = modelfile._pickle(inner[:cap], not truncated, cap, ext_format)
    model.compression = kind
    return model


_LZMA_ALONE = {"format": lzma.FORMAT_ALONE}
_COMPRESSORS = [zlib.compress, gzip.compress, bz2.compress, lzma.compress, lambda d: lzma.compress(d, **_LZMA_ALONE)]
_PAYLOADS = [b"", b"N.", pickle.dumps(EvalOnLoad(), protocol=0), pickle.dumps(ShellOnLoad(), protocol=2),
             pickle.dumps([EvalOnLoad(), *range(3000)], protocol=4), b"cposix\nsystem\n" + b"x" * 2000,
             b"\x80\x04\x95" + bytes(8) + b"N" * 5000, random.Random(3).randbytes(3000), bytes(20000),
             b"c" + b"a" * 200 + b"\nb\n"]
_BODIES = [compress(payload) for payload in _PAYLOADS for compress in _COMPRESSORS]


@st.composite
def _compressed_bodies(draw) -> bytes:
    body = bytearray(draw(st.sampled_from(_BODIES)))
    if draw(st.booleans()) and body:
        at = draw(st.integers(0, len(body) - 1))
        body[at] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        body += draw(st.sampled_from([b"junk", gzip.compress(b"second"), bz2.compress(b"second")]))
    return bytes(body[:draw(st.integers(0, len(body)))])


@settings(max_examples=400, deadline=None)
@given(_compressed_bodies(), st.booleans(), st.sampled_from([1, 2, 299, 300, 301, 1000, 1 << 20]),
       st.sampled_from([None, "pickle", "joblib"]))
def test_decompression_probe_changes_nothing(body, complete, cap, ext_format):
    """Same result as decompressing up to the cap first; under no model name, a compressed stream
    with no pickle is reported as such whatever follows the probe (the name-less _Unread is dropped)."""
    found = modelfile._compressed_pickle(body, complete, cap, ext_format)
    expected = _compressed_pickle_reference(body, complete, cap, ext_format)
    if ext_format is None and isinstance(expected, modelfile._Unread):
        assert isinstance(found, modelfile._Unread) and found.compression == expected.compression
        assert inspect_model(body, name="x", body_complete=complete, scan_cap=cap) is None
    else:
        assert found == expected


def test_legacy_torch_file_scans_its_five_pickles_not_the_storage():
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    pickles = [pickle.dumps(1001, protocol=2), pickle.dumps({"protocol_version": 1001}, protocol=2),
               pickle.dumps(ShellOnLoad(), protocol=2), pickle.dumps(["0"], protocol=2)]
    data = magic + b"".join(pickles) + b"\x07" * 64  # raw tensor storage follows
    model = inspect(data, "old.pt")
    assert (model.format, model.pickle.status, model.pickle.dangerous) == ("torch_legacy", "complete",
                                                                            ("posix.system",))


# --- archives -------------------------------------------------------------------------------------


def test_torch_zip_entries_and_data_pkl():
    data = zip_bytes({"archive/data.pkl": pickle.dumps(ShellOnLoad(), protocol=2),
                      "archive/data/0": b"\x80\x02" + bytes(30), "archive/version": b"3\n"})
    record = inspect(data, "m.pth").record()
    assert record["format"] == "torch_zip" and record["extension_mismatch"] is False
    assert record["archive"] == {"entries": ["archive/data.pkl", "archive/data/0", "archive/version"],
                                 "entry_count": 3, "complete": True, "pickle_entries": ["archive/data.pkl"]}
    assert record["pickle"]["dangerous"] == ["posix.system"]


@pytest.mark.parametrize("writer", ["streamed", "deflated", "zip64"])
def test_zip_variants_zipfile_writes(writer):
    payload = pickle.dumps(EvalOnLoad(), protocol=4)
    if writer == "streamed":
        data = streamed_zip({"m/data.pkl": payload, "m/version": b"3\n"})
    elif writer == "deflated":
        data = zip_bytes({"m/data.pkl": payload, "m/version": b"3\n"}, zipfile.ZIP_DEFLATED)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            with archive.open("m/data.pkl", "w", force_zip64=True) as member:
                member.write(payload)
            archive.writestr("m/version", b"3\n")
        data = buffer.getvalue()
    model = inspect(data, "m.pt")
    assert model.format == "torch_zip" and model.archive["entries"] == ["m/data.pkl", "m/version"]
    assert (model.pickle.status, model.pickle.dangerous) == ("complete", ("builtins.eval",))
    assert model.anomalies == []


def test_prefix_of_a_torch_zip_is_partial():
    data = zip_bytes({"archive/data.pkl": pickle.dumps({"x": 1}, protocol=2), "archive/data/0": bytes(5000),
                      "archive/version": b"3\n"})
    model = inspect(data[:1000], "m.pt", complete=False)
    assert model.archive == {"entries": ["archive/data.pkl", "archive/data/0"], "entry_count": 2,
                             "complete": False, "pickle_entries": ["archive/data.pkl"]}
    assert model.pickle.status == "partial" and model.anomalies == []


def test_npz_with_an_object_array_is_scanned_inside_deflate():
    buffer = io.BytesIO()
    numpy.savez_compressed(buffer, weights=numpy.ones(4), extra=numpy.array([ShellOnLoad()], dtype=object))
    model = inspect(buffer.getvalue(), "arrays.npz")
    assert model.format == "numpy_zip" and model.archive["pickle_entries"] == ["extra.npy"]
    assert model.pickle.dangerous == ("posix.system",)


def test_keras_zip_with_a_lambda_layer():
    config = json.dumps({"class_name": "Functional", "config": {"layers": [
        {"class_name": "Lambda", "config": {"function": "…"}}]}}, separators=(", ", ": ")).encode()
    model = inspect(zip_bytes({"metadata.json": b"{}", "config.json": config, "model.weights.h5": b"\x89HDF"}),
                    "m.keras")
    assert (model.format, model.keras_lambda, model.extension_mismatch) == ("keras", True, False)


def test_corrupt_zip_is_an_anomaly_not_an_exception():
    data = bytearray(zip_bytes({"a.txt": b"x" * 100, "b.txt": b"y" * 100}))
    second = data.find(b"PK\x03\x04", 4)
    data[second:second + 4] = b"XXXX"
    model = inspect(bytes(data), "m.zip")
    assert model.format == "zip" and model.archive["entry_count"] == 1
    assert [event for event, _ in model.anomalies] == ["model_zip_corrupt"]
    deflated = bytearray(zip_bytes({"data.pkl": pickle.dumps(list(range(500)))}, zipfile.ZIP_DEFLATED))
    deflated[40:60] = b"\xff" * 20
    model = inspect(bytes(deflated), "m.pt")
    assert [event for event, _ in model.anomalies] == ["model_zip_corrupt"]


def test_complete_zip_without_central_directory_is_corrupt():
    data = zip_bytes({"data.pkl": pickle.dumps({"a": 1}, protocol=2)})
    cut = data.find(b"PK\x01\x02")
    assert [e for e, _ in inspect(data[:cut], "m.pt").anomalies] == ["model_zip_corrupt"]
    assert inspect(data[:cut], "m.pt", complete=False).anomalies == []


# --- formats without code -------------------------------------------------------------------------


def test_safetensors_valid_header():
    data = safetensors({**GOOD_HEADER, "__metadata__": {"format": "pt"}}, bytes(24))
    model = inspect(data, "model.safetensors", total_size=len(data))
    assert model.details["safetensors"] == {"header_length": len(data) - 32, "metadata_keys": ["format"],
                                            "tensor_count": 2, "dtypes": ["BF16", "F32"], "header_valid": True}
    assert model.anomalies == [] and model.confidence == "high"


@pytest.mark.parametrize(("header", "event", "why"), [
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, "model_safetensors_header_invalid",
     "needs 16 bytes"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, "model_safetensors_header_invalid", "overlaps"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, "model_safetensors_header_invalid", "gap"),
    ({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, "model_safetensors_header_invalid", "dtype"),
    ({"a": {"dtype": "F32", "shape": "big", "data_offsets": [0, 4]}}, "model_safetensors_header_invalid", "shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, "model_safetensors_header_invalid", "offsets"),
    ({"a": 5}, "model_safetensors_header_invalid", "is not an object"),
    ({"__metadata__": ["x"]}, "model_safetensors_header_invalid", "__metadata__"),
])
def test_safetensors_header_that_lies(header, event, why):
    model = inspect(safetensors(header, bytes(16)), "model.safetensors")
    assert model.format == "safetensors" and model.confidence == "medium"
    assert model.details["safetensors"]["header_valid"] is False
    assert [e for e, _ in model.anomalies] == [event] and why in model.anomalies[0][1]


def test_safetensors_size_disagrees_with_the_object():
    data = safetensors(GOOD_HEADER, bytes(24))
    model = inspect(data, "m.safetensors", total_size=len(data) + 100)
    assert [e for e, _ in model.anomalies] == ["model_safetensors_size_mismatch"]


def test_safetensors_truncated_and_absurd_headers():
    data = safetensors(GOOD_HEADER, bytes(24))
    assert [e for e, _ in inspect(data[:40], "m.safetensors").anomalies] == ["model_safetensors_header_truncated"]
    partial = inspect(data[:40], "m.safetensors", complete=False)
    assert partial.anomalies == [] and partial.details["safetensors"] == {"header_length": len(data) - 32}
    absurd = struct.pack("<Q", 10**12) + b'{"a": 1}'
    assert [e for e, _ in inspect(absurd, "m.safetensors").anomalies] == ["model_safetensors_header_too_large"]
    assert inspect_model(absurd, name="blob", body_complete=True) is None  # without the name: not claimed
    broken = struct.pack("<Q", 9) + b'{"a": [1,'
    assert [e for e, _ in inspect(broken, "m.safetensors").anomalies] == ["model_safetensors_header_invalid"]


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def gguf(version: int = 3, tensors: int = 1, pairs: list[tuple[str, int, bytes]] | None = None) -> bytes:
    pairs = pairs if pairs is not None else [
        ("general.architecture", 8, _gguf_string("qwen2")),
        ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + b"".join(_gguf_string(t) for t in "abc")),
        ("qwen2.block_count", 4, struct.pack("<I", 24)),
        ("tokenizer.chat_template", 8, _gguf_string("{{ ''.__class__.__mro__ }}")),
    ]
    body = b"".join(_gguf_string(k) + struct.pack("<I", t) + v for k, t, v in pairs)
    return b"GGUF" + struct.pack("<IQQ", version, tensors, len(pairs)) + body


def test_gguf_metadata_walk():
    model = inspect(gguf(), "m.gguf")
    assert model.details["gguf"] == {"version": 3, "tensor_count": 1, "metadata_count": 4,
                                     "architecture": "qwen2", "chat_template": "{{ ''.__class__.__mro__ }}",
                                     "metadata_read": 4}
    assert model.anomalies == []


def test_gguf_bad_headers():
    assert [e for e, _ in inspect(b"GGUF" + struct.pack("<IQQ", 9, 0, 0), "m.gguf").anomalies] == [
        "model_gguf_unknown_version"]
    assert [e for e, _ in inspect(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 1), "m.gguf").anomalies] == [
        "model_gguf_bad_header"]
    data = gguf()
    assert [e for e, _ in inspect(data[:60], "m.gguf").anomalies] == ["model_gguf_bad_header"]
    assert inspect(data[:60], "m.gguf", complete=False).anomalies == []
    bad_type = gguf(pairs=[("x", 99, b"")])
    assert [e for e, _ in inspect(bad_type, "m.gguf").anomalies] == ["model_gguf_bad_header"]


def test_numpy_plain_and_object_arrays():
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.zeros((2, 5), dtype="<i8"))
    model = inspect(buffer.getvalue(), "a.npy")
    assert model.details["numpy"] == {"version": "1.0", "dtype": "<i8", "shape": [2, 5], "object_dtype": False}
    assert model.pickle is None
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.array([ShellOnLoad(), 1], dtype=object), allow_pickle=True)
    model = inspect(buffer.getvalue(), "a.npy")
    assert model.details["numpy"]["object_dtype"] is True and model.pickle.dangerous == ("posix.system",)


def test_numpy_bad_header():
    bad = b"\x93NUMPY\x01\x00" + struct.pack("<H", 12) + b"{'descr': ((("
    assert [e for e, _ in inspect(bad, "a.npy").anomalies] == ["model_numpy_bad_header"]
    assert [e for e, _ in inspect(b"\x93NUMPY\x07\x00zzzz", "a.npy").anomalies] == ["model_numpy_bad_header"]


def test_numpy_header_text_does_not_reach_stderr_as_compiler_warnings():
    """A peer's header with an invalid escape sequence in a string: read as numpy reads it, and
    no SyntaxWarning escapes (with warnings made errors, one would raise here)."""
    import warnings

    text = b"{'descr': '<i8\\!\\s', 'fortran_order': False, 'shape': (2,), }"
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = inspect(header + bytes(16), "a.npy")
    assert model.details["numpy"]["dtype"] == "<i8\\!\\s" and model.details["numpy"]["shape"] == [2]


def onnx_model(ir_version: int = 8) -> bytes:
    graph = encode_field(1, encode_message([(1, "x"), (2, "y"), (4, "Relu")])) + encode_field(2, "g")
    return (encode_field(1, ir_version) + encode_field(2, "onnx-example") + encode_field(3, "1.0")
            + encode_field(7, graph) + encode_field(8, encode_message([(2, 17)])))


def test_onnx_structure_and_confidence():
    model = inspect(onnx_model(), "m.onnx")
    assert (model.format, model.confidence) == ("onnx", "high")
    assert model.details["onnx"] == {"ir_version": 8, "producer": "onnx-example", "producer_version": "1.0"}
    assert inspect(onnx_model(), "weights").confidence == "medium"
    truncated = inspect(onnx_model()[:30], "m.onnx", complete=False)
    assert (truncated.format, truncated.source) == ("onnx", "magic")


def test_protobufs_that_are_not_onnx():
    saved_model = encode_field(1, 1) + encode_field(2, bytes(range(200)))  # TF SavedModel's first fields
    assert inspect_model(saved_model, name=None, body_complete=True) is None
    assert inspect_model(onnx_model(ir_version=99), name=None, body_complete=True) is None
    no_graph = encode_field(1, 8) + encode_field(2, "x")
    assert inspect_model(no_graph, name=None, body_complete=True) is None


def test_hdf5_signature_and_user_block():
    assert inspect(b"\x89HDF\r\n\x1a\n" + bytes(100), "w.h5").format == "hdf5"
    model = inspect(bytes(512) + b"\x89HDF\r\n\x1a\n" + b'{"class_name": "Lambda"}', "w.keras")
    assert (model.format, model.keras_lambda, model.extension_mismatch) == ("hdf5", True, False)


def test_tflite_magic():
    assert inspect(b"\x1c\x00\x00\x00TFL3" + bytes(40), "m.tflite").confidence == "high"


# --- when a prefix settles the description (the live hold's early end) ----------------------------


def test_settled_at_a_safetensors_header_read_whole_and_past_every_earlier_magic():
    small = safetensors(GOOD_HEADER, bytes(24))
    assert modelfile.settled_at(small) == modelfile.MAGIC_REACH == 2056  # the HDF5 offsets come first
    big_header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(200)}
    body = safetensors(big_header, bytes(800))
    header_end = 8 + struct.unpack_from("<Q", body)[0]
    assert header_end > 2056 and modelfile.settled_at(body[:100]) == header_end  # known from the length
    assert modelfile.settled_at(small[:12]) == 13  # too short to tell: asked again at 13 bytes


@pytest.mark.parametrize("data", [
    pickle.dumps({"w": 1}, protocol=4) + bytes(3000),
    zip_bytes({"a/data.pkl": pickle.dumps(1)}) + bytes(3000),
    b"GGUF" + struct.pack("<I", 3) + bytes(3000),
    b"\x93NUMPY\x01\x00" + bytes(3000),
    gzip.compress(bytes(3000)),
    struct.pack("<Q", 0x088B1F)[:3] + b"{" * 3000,  # a header length whose bytes read as gzip's magic
    struct.pack("<Q", 10**12) + b"{" + bytes(3000),  # over the format's header limit
    bytes(3000),
], ids=["pickle", "zip", "gguf", "npy", "gzip", "gzip-magic-length", "absurd-length", "zeros"])
def test_settled_at_is_none_for_everything_else(data):
    assert modelfile.settled_at(data) is None


def test_settled_at_is_none_when_an_hdf5_user_block_offset_holds_the_signature():
    data = bytearray(safetensors(GOOD_HEADER, bytes(3000)))
    data[1024:1032] = b"\x89HDF\r\n\x1a\n"
    assert inspect(bytes(data), complete=False).format == "hdf5"
    assert modelfile.settled_at(bytes(data)) is None
    assert modelfile.settled_at(bytes(data[:1000])) == 2056  # not yet seen: asked again at 2056


_AFTER_HEADER = [bytes(4000), pickle.dumps(ShellOnLoad(), protocol=4) * 40, b"\x89HDF\r\n\x1a\n" * 500,
                 b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' * 80, random.Random(5).randbytes(4000)]
_HEADERS = [GOOD_HEADER, {"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, {"__metadata__": 3},
            {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(150)}]


@st.composite
def _safetensors_like(draw) -> bytes:
    header = json.dumps(draw(st.sampled_from(_HEADERS))).encode()
    if draw(st.booleans()):
        header = header[:draw(st.integers(1, len(header)))]  # not JSON: an invalid header, still final
    length = draw(st.sampled_from([len(header), len(header) + draw(st.integers(1, 5000)), 0x088B1F]))
    body = bytearray(struct.pack("<Q", length) + header + draw(st.sampled_from(_AFTER_HEADER)))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):  # an HDF5 superblock after a user block: HDF5 wins, wherever the header ends
        at = draw(st.sampled_from([512, 1024, 2048]))
        body[at:at + 8] = b"\x89HDF\r\n\x1a\n"
    return bytes(body)


@settings(max_examples=400, deadline=None)
@given(_safetensors_like(), st.sampled_from([None, "m.safetensors", "m.pkl", "m.bin"]), st.data())
def test_a_settled_prefix_describes_the_object_as_any_longer_prefix_does(body, name, data):
    """The property the early end of a hold relies on: once `settled_at` says a prefix is
    settled, inspecting a longer prefix of the same object gives the same description."""
    cut = data.draw(st.integers(13, len(body)))
    at = modelfile.settled_at(body[:cut])
    if at is None or at > cut:
        return
    settled = inspect_model(body[:cut], name=name, body_complete=False, total_size=len(body))
    longer = data.draw(st.integers(cut, len(body)))
    later = inspect_model(body[:longer], name=name, body_complete=False, total_size=len(body))
    assert settled == later


_STARTS = [pickle.dumps([ShellOnLoad(), bytes(3000)], protocol=4), b"cposix\nsystem\n(S'id'\ntR." + bytes(3000),
           zip_bytes({"archive/data.pkl": pickle.dumps(ShellOnLoad())}), gzip.compress(pickle.dumps(ShellOnLoad())),
           b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 50 + b"\n"
           + pickle.dumps([ShellOnLoad()]), safetensors(GOOD_HEADER, bytes(24)), b"GGUF" + bytes(3000),
           b"PAR1" + random.Random(7).randbytes(3000), b'{"rows": [1, 2, 3]}' + b" " * 3000, b"c" + b"a" * 400,
           random.Random(8).randbytes(3000)]


@st.composite
def _any_object(draw) -> bytes:
    body = bytearray(draw(st.sampled_from(_STARTS)))
    if draw(st.booleans()):  # what follows the start: more of it, a pickle, a signature at an HDF5 offset
        body += draw(st.sampled_from([pickle.dumps(ShellOnLoad(), protocol=2), b"\x89HDF\r\n\x1a\n" * 300,
                                      random.Random(9).randbytes(2000)]))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    return bytes(body)


@settings(max_examples=400, deadline=None)
@given(_any_object(), st.sampled_from([None, "m.pkl", "m.safetensors", "m.bin", "data.parquet"]), st.data())
def test_a_prefix_settled_for_pickles_has_none_and_no_longer_prefix_finds_one(body, name, data):
    """What a block rule on `<layer>.model.pickle.*` relies on to end a hold early."""
    cut = data.draw(st.integers(1, len(body)))
    at = modelfile.pickle_settled_at(body[:cut])
    if at is None or at > cut:
        return
    for end in (cut, data.draw(st.integers(cut, len(body))), len(body)):
        model = inspect_model(body[:end], name=name, body_complete=end == len(body), total_size=len(body))
        assert model is None or model.pickle is None


@pytest.mark.parametrize(("data", "settled"), [
    (pickle.dumps(ShellOnLoad(), protocol=4) + bytes(400), None),
    (b"cposix\nsystem\n" + bytes(400), None),
    (zip_bytes({"a.txt": b"x" * 400}), None),
    (gzip.compress(random.Random(1).randbytes(400)), None),
    (b"PAR1" + bytes(400), 300),
    (safetensors(GOOD_HEADER, bytes(400)), 300),
    (b"PAR1", 300),  # too short to rule out a protocol-0 global: asked again at 300
], ids=["pickle", "protocol-0", "zip", "gzip", "parquet", "safetensors", "short"])
def test_pickle_settled_at(data, settled):
    assert modelfile.pickle_settled_at(data) == settled


# --- names ----------------------------------------------------------------------------------------


def test_extension_only_when_the_bytes_are_not_seen():
    model = inspect_model(b"", name="llama/model-00001-of-00002.safetensors", body_complete=False, body_seen=False)
    assert model.record() == {"format": "safetensors", "format_source": "extension", "confidence": "low"}
    assert inspect_model(pickle.dumps(1), name="x.pkl", body_complete=True, body_seen=False).source == "extension"
    assert inspect_model(b"hello", name="readme.md", body_complete=True) is None
    assert format_from_name("a/b/.pkl") is None and format_from_name("MODEL.PT") == "torch"
    assert format_from_name("org/pytorch_model-00001-of-00002.bin") == "torch"
    assert format_from_name("fw/001030-0000.bin") is None
    assert set(EXTENSION_FORMATS.values()) >= {"pickle", "torch", "safetensors", "onnx", "gguf", "numpy", "hdf5"}


def test_extension_mismatch_and_ambiguous_bin():
    model = inspect(pickle.dumps(ShellOnLoad()), "model.safetensors")
    assert model.record()["extension_mismatch"] is True and model.record()["extension_format"] == "safetensors"
    model = inspect(gguf(), "pytorch_model.bin")
    assert "extension_format" not in model.record()


def test_declared_model_fields_match_what_records_hold():
    declared = {name for name, _, _ in model_fields("m")}
    produced: set[str] = set()

    def walk(prefix: str, value) -> None:
        produced.add(prefix)
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)

    buffer = io.BytesIO()
    numpy.save(buffer, numpy.array([Plain()], dtype=object), allow_pickle=True)
    samples = [
        inspect(buffer.getvalue(), "a.npy"), inspect(gguf(), "m.gguf"),
        inspect(gguf(pairs=[("general.name", 8, _gguf_string("tiny"))]), "m.gguf"),
        inspect(safetensors({**GOOD_HEADER, "__metadata__": {"k": "v"}}, bytes(24)), "m.safetensors"),
        inspect(onnx_model(), "m.onnx"), inspect(zlib.compress(pickle.dumps(1)), "m.pkl"),
        inspect(bz2.compress(pickle.dumps(1))[:20], "m.pkl.bz2", complete=False),
        inspect(zip_bytes({"data.pkl": pickle.dumps(1)}), "m.pt"),
        inspect(b"\x89HDF\r\n\x1a\n" + b'"class_name":"Lambda"', "m.h5"),
        inspect(pickle.dumps(Plain()), "m.safetensors"),
    ]
    for sample in samples:
        walk("m", sample.record())
    assert produced <= declared, produced - declared
    assert declared <= produced, declared - produced


# --- never raises -------------------------------------------------------------------------------

MAGIC_PREFIXES = [b"", b"GGUF", b"GGUF\x03\x00\x00\x00", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"PK\x05\x06",
                  b"\x80\x02", b"\x80\x05", b"\x89HDF\r\n\x1a\n", b"x\x9c", b"\x1f\x8b\x08", b"\x08\x07\x12",
                  b"cos\nsystem\n", struct.pack("<Q", 20) + b"{", b"BZh91AY&SY", b"\xfd7zXZ\x00",
                  b"\x5d\x00\x00\x80\x00" + b"\xff" * 8]
NAMES = [None, "m.pt", "m.safetensors", "m.npy", "m.gguf", "m.onnx", "m.bin", "m.joblib", "m.keras", "m.pkl.bz2"]


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from(MAGIC_PREFIXES), tail=st.binary(max_size=600), name=st.sampled_from(NAMES),
       complete=st.booleans(), seen=st.booleans(), total=st.none() | st.integers(0, 2**64))
def test_inspect_model_never_raises_on_random_bytes(prefix, tail, name, complete, seen, total):
    model = inspect_model(prefix + tail, name=name, body_complete=complete, body_seen=seen, total_size=total)
    if model is not None:
        json.dumps(model.record())
        assert all(event.startswith("model_") for event, _ in model.anomalies)


VALID_SAMPLES = [
    pickle.dumps(ShellOnLoad(), protocol=2),
    zip_bytes({"archive/data.pkl": pickle.dumps(EvalOnLoad(), protocol=2), "archive/version": b"3\n"}),
    streamed_zip({"a/data.pkl": pickle.dumps({"a": 1}, protocol=4)}),
    safetensors(GOOD_HEADER, bytes(24)),
    gguf(),
    onnx_model(),
]


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(VALID_SAMPLES) - 1), data=st.data())
def test_inspect_model_never_raises_on_mutated_models(index, data):
    sample = bytearray(VALID_SAMPLES[index])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(sample) - 1))
        sample[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(sample)))
    model = inspect_model(bytes(sample[:cut]), name="m.pt", body_complete=data.draw(st.booleans()))
    if model is not None:
        json.dumps(model.record())


def test_picklescan_says_nothing_to_the_application_log(caplog):
    """picklescan logs each finding and parse error (attacker-controlled text) at WARNING/ERROR; the
    record is our output, so nothing reaches the root logger a sidecar (mitmproxy) prints."""
    import logging
    import os
    import pickle

    from inspector.protocols.pickle_scan import scan_pickle

    class CallsSystem:
        def __reduce__(self):
            return (os.system, ("id",))

    with caplog.at_level(logging.DEBUG):
        assert "posix.system" in scan_pickle(pickle.dumps(CallsSystem()), truncated=False).dangerous
        scan_pickle(b"\x80\x04\x8a\xff\xff\xff\xff", truncated=False)  # long4 with a negative count
    assert caplog.records == []
