"""Model files in transit: the format from magic bytes (or the name), header checks, pickle scan.

Any layer that sees model bytes uses this: S3 object uploads and downloads, MLflow artifact
uploads, registry pulls. :func:`inspect_model` takes the first bytes of the object (the kept
body prefix), its name, and what is known about its completeness, and returns a
:class:`ModelFile`; `ModelFile.record()` is the layer's `model` object and `ModelFile.anomalies`
the `(event, message)` pairs the layer reports. :func:`model_fields` gives the field
declarations for a prefix (`"s3.model"`). Nothing here raises on arbitrary bytes, and nothing
unpickles: pickles are only disassembled (see `pickle_scan`).

Detection order on the first bytes (each check is a few byte comparisons):

====================  ===========================================================================
format                recognised by
====================  ===========================================================================
``gguf``              "GGUF" then a version (header and metadata keys checked)
``hdf5``              the HDF5 signature at 0/512/1024/2048 (Keras .h5: Lambda layers flagged)
``numpy``             "\\x93NUMPY" (an object dtype means a pickle follows: scanned)
``torch_zip``         zip whose entries include `data.pkl` (PyTorch >= 1.6 `torch.save`)
``numpy_zip``         zip of `.npy` entries (`numpy.savez`)
``keras``             zip with `config.json` and `model.weights.h5` or `metadata.json` (Keras 3)
``torchserve_mar``    zip with `MAR-INF/MANIFEST.json`
``zip``               any other zip (pickles inside are still scanned)
``torch_legacy``      the pickled torch magic number (PyTorch < 1.6 files): five pickles scanned
``joblib``            a pickle importing `joblib.*`, or a compressed pickle named `.joblib`
``pickle``            PROTO opcode "\\x80" + 2..5, a protocol-0 GLOBAL opcode first, or a
                      zlib, gzip, bz2, xz or lzma stream holding one (`compression`)
``safetensors``       u64 header length then "{" (the JSON header parsed and checked)
``tflite``            "TFL3" at offset 4
``onnx``              a ModelProto shape: ir_version first, graph present (no magic exists)
====================  ===========================================================================

When the bytes are not seen (HEAD, a Range past the start, a cut capture) or match nothing, the
name's extension gives the format (`format_source: extension`, `confidence: low`); `.bin` counts
only in model-like names (`pytorch_model.bin`, `adapter_model.bin`, `training_args.bin`). When both
speak and disagree (a pickle stored as `.safetensors`), `extension_mismatch` is true. A
compression suffix (`.gz .z .bz2 .xz .lzma`, as joblib and pandas name their files) is looked
through: `model.pkl.bz2` is named a pickle.

Compressed bodies (joblib `compress=`, `pandas.to_pickle`) are decompressed from the kept prefix
with the standard library, the output capped at the scan cap (1 MiB) so a bomb costs no more than
that (and bounded work: the input is the kept prefix); xz/lzma also under a decoder memory limit.
A pickle inside is scanned. A body that starts like gzip, bz2 or xz but cannot be read (corrupt,
or the kept prefix ends before the first decompressed byte) says so in `decompression_error` when
the name says model; zlib and lzma-alone headers are too weak a magic to claim anything on their
own.
"""

from __future__ import annotations

import bz2
import lzma
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from inspector.protocols import modelformats as mf
from inspector.protocols import zipprefix
from inspector.protocols.pickle_scan import (
    COMPLETE,
    ERROR,
    PARTIAL,
    PICKLE_SCAN_BYTES,
    PickleScan,
    merge_scans,
    pickle_sequence_end,
    scan_pickle,
)

MAGIC, EXTENSION = "magic", "extension"
HIGH, MEDIUM, LOW = "high", "medium", "low"
#: Archive entry names listed in a record, each cut to this many characters.
MAX_ENTRIES_LISTED = 32
MAX_NAME_CHARS = 256
#: Archive entries whose first bytes are looked at.
MAX_ENTRIES_PEEKED = 4096

#: Name suffix -> format, for objects whose bytes are not seen.
EXTENSION_FORMATS: dict[str, str] = {
    ".pkl": "pickle", ".pickle": "pickle", ".dill": "pickle", ".joblib": "joblib",
    ".pt": "torch", ".pth": "torch", ".ckpt": "torch", ".bin": "torch",
    ".safetensors": "safetensors", ".onnx": "onnx", ".gguf": "gguf", ".npy": "numpy", ".npz": "numpy_zip",
    ".h5": "hdf5", ".hdf5": "hdf5", ".keras": "keras", ".pb": "tensorflow", ".tflite": "tflite",
    ".mar": "torchserve_mar", ".zip": "zip",
}
#: Extension format -> magic formats that agree with it.
_COMPATIBLE: dict[str, frozenset[str]] = {
    "pickle": frozenset({"pickle", "joblib"}),
    "joblib": frozenset({"joblib", "pickle"}),
    "torch": frozenset({"torch_zip", "torch_legacy", "pickle"}),
    "numpy_zip": frozenset({"numpy_zip", "zip"}),
    "keras": frozenset({"keras", "hdf5", "zip"}),
    "torchserve_mar": frozenset({"torchserve_mar", "zip"}),
    "zip": frozenset({"zip", "torch_zip", "numpy_zip", "keras", "torchserve_mar"}),
}
#: Extensions too generic to call a disagreement (`.bin` holds torch, GGML, or anything).
_AMBIGUOUS_EXTENSIONS = frozenset({".bin"})
#: `.bin` names that hold torch checkpoints (Hugging Face: pytorch_model*.bin, adapter_model.bin,
#: training_args.bin, optimizer.bin ...).
_TORCH_BIN_NAME = re.compile(r"model|training_args|optimizer|scheduler|checkpoint|ckpt|weights")
_PICKLE_ENTRY_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill")
_TORCH_STORAGE = re.compile(r"(?:^|/)\.?data/\d+$")
_PROTOCOL0_GLOBAL = re.compile(rb"\(?[ci][A-Za-z_][\w.]{0,127}\n[A-Za-z_][\w.]{0,127}\n")
#: Bytes the protocol-0 pattern is tried on (it spans at most 261).
PROTOCOL0_REACH = 300
#: The first pickle of a legacy torch file: protocol 2, LONG1 0x1950a86a20f9469cfc6c, STOP.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
#: Name suffixes of compressed files (joblib, pandas), looked through for the model's own suffix.
COMPRESSION_SUFFIXES = frozenset({".gz", ".z", ".bz2", ".xz", ".lzma"})
#: Memory the xz/lzma decoder may use (its dictionary): `xz -9` needs 65 MiB, more is refused.
LZMA_MEMLIMIT = 128 * 1024 * 1024
_XZ_MAGIC = b"\xfd7zXZ\x00"
#: Decompressed bytes the pickle checks read (the protocol-0 GLOBAL pattern spans at most 260).
PICKLE_PROBE_BYTES = 300
#: bz2: "BZh", the block size digit, then a block header or the end-of-stream magic.
_BZ2_BLOCK_MAGICS = (b"1AY&SY", b"\x17rE8P\x90")
#: Compressions whose magic is strong enough to report a stream that cannot be read.
_STRONG_MAGIC = frozenset({"gzip", "bz2", "xz"})


@dataclass(slots=True)
class ModelFile:
    """What is known about one model object; `record()` is the EVE `<layer>.model` object."""

    format: str
    source: str
    confidence: str
    extension_format: str | None = None
    compression: str | None = None
    #: Why a compressed body could not be read (corrupt, or the kept prefix ends too early).
    decompression_error: str | None = None
    #: Format-specific facts, keyed by format (`{"safetensors": {...}}`).
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    archive: dict[str, Any] | None = None
    pickle: PickleScan | None = None
    keras_lambda: bool = False
    anomalies: list[tuple[str, str]] = field(default_factory=list)

    @property
    def extension_mismatch(self) -> bool:
        ext = self.extension_format
        if ext is None or self.source != MAGIC:
            return False
        return self.format != ext and self.format not in _COMPATIBLE.get(ext, frozenset())

    def record(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"format": self.format, "format_source": self.source, "confidence": self.confidence}
        if self.extension_format is not None and self.source == MAGIC:
            obj["extension_format"] = self.extension_format
            obj["extension_mismatch"] = self.extension_mismatch
        if self.compression:
            obj["compression"] = self.compression
        if self.decompression_error:
            obj["decompression_error"] = self.decompression_error
        if self.archive is not None:
            obj["archive"] = self.archive
        for name, info in self.details.items():
            obj[name] = info
        if self.keras_lambda:
            obj["keras_lambda"] = True
        if self.pickle is not None:
            obj["pickle"] = self.pickle.record()
        return obj


def format_from_name(name: str | None) -> str | None:
    """The format a file name's extension suggests, or None."""
    return _name_format(name, _suffix(name))


def _name_format(name: str | None, suffix: str) -> str | None:
    if not suffix:
        return None
    if suffix == ".bin" and not _TORCH_BIN_NAME.search((name or "").rsplit("/", 1)[-1].lower()):
        return None  # firmware, blobs...: only model-named .bin files (pytorch_model.bin) count
    return EXTENSION_FORMATS.get(suffix)


def _suffix(name: str | None) -> str:
    """The name's extension, lower case; through one compression suffix (`.pkl.bz2` -> `.pkl`)."""
    if not name:
        return ""
    base = name.rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    if dot <= 0:
        return ""
    if base[dot:] in COMPRESSION_SUFFIXES:
        base = base[:dot]
        dot = base.rfind(".")
        if dot <= 0:
            return ""
    return base[dot:]


def inspect_model(body: bytes, *, name: str | None, body_complete: bool, body_seen: bool = True,
                  total_size: int | None = None, scan_cap: int = PICKLE_SCAN_BYTES) -> ModelFile | None:
    """Describe the object whose first bytes are `body` (None: neither bytes nor name say model).

    `body_seen` False means the bytes are not the start of the object (HEAD, a Range past 0, a
    later multipart part): only the name is used. `body_complete` says `body` is the whole
    object; `total_size` is the object's size when known otherwise (for size checks).
    """
    suffix = _suffix(name)
    ext_format = _name_format(name, suffix)
    found = _from_magic(body, body_complete, total_size, scan_cap, ext_format) if body_seen and body else None
    if found is None or isinstance(found, _Unread):
        if ext_format is None:
            return None
        model = ModelFile(format=ext_format, source=EXTENSION, confidence=LOW)
        if found is not None:  # compressed, and no pickle could be read out of it
            model.compression, model.decompression_error = found.compression, found.error
            if found.corrupt:
                model.anomalies.append(("model_compression_corrupt", found.error or found.compression))
        return model
    if suffix not in _AMBIGUOUS_EXTENSIONS:
        found.extension_format = ext_format
    if found.format in ("onnx", "tflite") and ext_format == found.format:
        found.confidence = HIGH
    return found


# --- magic --------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Unread:
    """A compressed body that holds no pickle we could read: its compression and why."""

    compression: str
    error: str | None
    corrupt: bool = False


def _from_magic(data: bytes, complete: bool, total_size: int | None, cap: int,
                ext_format: str | None) -> ModelFile | _Unread | None:
    head = data[:8]
    if head[:4] == mf.GGUF_MAGIC:
        return _with_check("gguf", mf.read_gguf(data, body_complete=complete))
    hdf5_at = mf.hdf5_signature_at(data)
    if hdf5_at is not None:
        model = ModelFile(format="hdf5", source=MAGIC, confidence=HIGH)
        model.keras_lambda = mf.has_keras_lambda(data)
        return model
    if head[:6] == mf.NPY_MAGIC:
        return _numpy(data, complete, cap)
    if zipprefix.looks_like_zip(data):
        return _archive(data, complete, cap)
    if is_pickle_magic(head):
        return _pickle(data, complete, cap, ext_format)
    if _PROTOCOL0_GLOBAL.match(data, 0, PROTOCOL0_REACH):
        return _pickle(data, complete, cap, ext_format, confidence=MEDIUM)
    wrapped = _compressed_pickle(data, complete, cap, ext_format)
    if wrapped is not None:
        return wrapped
    if mf.looks_like_safetensors(data) and (_u64_le(data) <= mf.SAFETENSORS_MAX_HEADER or ext_format == "safetensors"):
        check = mf.read_safetensors(data, body_complete=complete, total_size=total_size)
        model = _with_check("safetensors", check)
        if check.info.get("header_valid") is not True:
            model.confidence = MEDIUM
        return model
    if data[4:8] == b"TFL3":
        return ModelFile(format="tflite", source=MAGIC, confidence=MEDIUM)
    onnx = mf.read_onnx(data)
    if onnx is not None:
        model = _with_check("onnx", onnx)
        model.confidence = MEDIUM
        return model
    return None


#: Bytes the detection order reads before it gets to safetensors: the furthest HDF5 signature
#: offset and its 8 bytes (also past the 300 the protocol-0 pickle pattern may read).
MAGIC_REACH = mf.HDF5_SIGNATURE_OFFSETS[-1] + len(mf.HDF5_SIGNATURE)
#: Bytes before the first magics can be told apart (lzma-alone's header is 13).
_SETTLED_AT_MIN_BYTES = 13


def settled_at(data: bytes) -> int | None:
    """The length from which an object's first bytes `data` settle its description: no byte
    after it changes what :func:`inspect_model` says of the object (format, header checks,
    anomalies). Known for safetensors only, the format models are pulled in: its header read
    whole, and every check that comes before safetensors in the detection order (the magics,
    HDF5's user-block offsets, the compressed-pickle magics) past deciding. None when the bytes
    are no such file, whatever follows (another format claims them, the header is over the
    format's limit); a live hold uses it to end early (inspector.live.settle).

    An answer above `len(data)` means not settled yet: ask again with that many bytes (13 when
    fewer are given: the compression magics read that many)."""
    if len(data) < _SETTLED_AT_MIN_BYTES:
        return _SETTLED_AT_MIN_BYTES
    if _claimed_before_safetensors(data):
        return None
    if not mf.looks_like_safetensors(data):
        return None
    length = _u64_le(data)
    if length > mf.SAFETENSORS_MAX_HEADER:
        return None
    return max(8 + length, MAGIC_REACH)


def pickle_settled_at(data: bytes) -> int | None:
    """The length from which an object's first bytes `data` settle the `pickle` part of its
    description (what a rule on `<layer>.model.pickle.*` reads): none, whatever follows, when the
    object does not start like anything that holds a pickle (a pickle, a zip archive, a .npy
    array, a compressed stream); every branch of the detection that scans pickles is chosen by
    the object's first bytes, the protocol-0 pattern reading the most (PROTOCOL0_REACH). None
    when it does start like one: its pickles are read as the bytes come (not settled before the
    whole prefix). An answer above `len(data)`: ask again with that many bytes."""
    # on fewer than PROTOCOL0_REACH bytes, the answer says to ask again
    return None if _starts_like_pickle_holder(data) else PROTOCOL0_REACH


def _starts_like_pickle_holder(data: bytes) -> bool:
    """Whether the first bytes pick a branch of :func:`_from_magic` that scans pickles: a .npy
    array, a zip archive, a pickle (PROTO or a protocol-0 GLOBAL), a compressed stream."""
    head = data[:8]
    return (head[:6] == mf.NPY_MAGIC or zipprefix.looks_like_zip(data) or is_pickle_magic(head)
            or _PROTOCOL0_GLOBAL.match(data, 0, PROTOCOL0_REACH) is not None or compression_of(data) is not None)


def _claimed_before_safetensors(data: bytes) -> bool:
    """Whether a check :func:`_from_magic` makes before safetensors claims the bytes (each only
    reads the bytes it is given: on a prefix shorter than MAGIC_REACH, a later byte may still)."""
    return (data[:4] == mf.GGUF_MAGIC or mf.hdf5_signature_at(data) is not None
            or _starts_like_pickle_holder(data))


def _u64_le(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def is_pickle_magic(data: bytes) -> bool:
    """PROTO opcode with protocol 2 to 5: how pickles written by Python 2.3+ start."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _with_check(fmt: str, check: mf.HeaderCheck) -> ModelFile:
    model = ModelFile(format=fmt, source=MAGIC, confidence=HIGH, anomalies=list(check.anomalies))
    model.details[fmt] = check.info
    return model


def _pickle(data: bytes, complete: bool, cap: int, ext_format: str | None, *,
            confidence: str = HIGH) -> ModelFile:
    if data.startswith(_TORCH_LEGACY_MAGIC):
        end = pickle_sequence_end(data[:cap], 5)
        if end is not None:
            scan = scan_pickle(data[:end], truncated=False, cap=cap)
        else:
            scan = scan_pickle(data, truncated=not complete, cap=cap)
        return ModelFile(format="torch_legacy", source=MAGIC, confidence=HIGH, pickle=scan)
    scan = scan_pickle(data, truncated=not complete, cap=cap)
    fmt = "joblib" if ext_format == "joblib" or any(g.startswith("joblib.") for g in scan.globals) else "pickle"
    if scan.status == ERROR:
        confidence = MEDIUM
    return ModelFile(format=fmt, source=MAGIC, confidence=confidence, pickle=scan)


def compression_of(data: bytes) -> str | None:
    """zlib, gzip, bz2, xz or lzma (the legacy `.lzma` format) from the first bytes, or None."""
    if len(data) >= 2 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0:
        return "zlib"
    if data[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if data[:3] == b"BZh" and data[3:4].isdigit() and data[3:4] != b"0" and data[4:10] in _BZ2_BLOCK_MAGICS:
        return "bz2"
    if data[:6] == _XZ_MAGIC:
        return "xz"
    # lzma-alone: properties byte (lc=3 lp=0 pb=2 in every writer's default), dictionary size,
    # then the uncompressed size or -1 for "unknown".
    if len(data) >= 13 and data[0] == 0x5D:
        size = int.from_bytes(data[5:13], "little")
        if size == 2**64 - 1 or size < 2**40:
            return "lzma"
    return None


def _decoder(kind: str) -> Any:
    if kind == "zlib":
        return zlib.decompressobj(zlib.MAX_WBITS)
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
    return lzma.LZMADecompressor(format=fmt, memlimit=LZMA_MEMLIMIT)


def _decompress_more(decoder: Any, max_length: int) -> bytes:
    """Up to `max_length` (> 0: zlib takes 0 for no limit) more bytes from a decoder whose last
    call stopped at its output limit."""
    if decoder.eof:
        return b""
    if hasattr(decoder, "unconsumed_tail"):  # zlib hands back the input it did not take
        return decoder.decompress(decoder.unconsumed_tail, max_length)
    # bz2, lzma keep the input themselves; needs_input is not asked (True with output still pending
    # when the stream is cut)
    return decoder.decompress(b"", max_length)


def _ended(decoder: Any) -> bool:
    return bool(decoder.eof) and not decoder.unused_data  # a second stream/member follows: not all seen


def _compressed_pickle(data: bytes, complete: bool, cap: int, ext_format: str | None) -> ModelFile | _Unread | None:
    """A compressed stream holding a pickle (joblib's `compress=`, pandas `to_pickle`).

    None when `data` does not start like a compressed stream, or starts like zlib/lzma-alone (weak
    magics) but does not decompress; `_Unread` when it is compressed but holds no readable pickle.
    Only PICKLE_PROBE_BYTES are decompressed first (all the pickle checks read); the rest, up to
    the cap, only when they show a pickle, or when a corrupt stream would be reported (a strong
    magic under a model's name: the corruption can lie past the probe).
    """
    kind = compression_of(data)
    if kind is None:
        return None
    strong = kind in _STRONG_MAGIC
    decoder = _decoder(kind)
    try:
        probe = min(PICKLE_PROBE_BYTES, cap + 1)
        inner = decoder.decompress(data, probe)
        is_pickle = is_pickle_magic(inner) or bool(_PROTOCOL0_GLOBAL.match(inner, 0, PICKLE_PROBE_BYTES))
        if not is_pickle and (not strong or ext_format is None):
            # a weak magic claims nothing unless a pickle comes out (safetensors can start 78 01);
            # a strong one says "compressed, no pickle", which only a model's name reports
            return _Unread(kind, None) if strong and inner else _unread_empty(kind, data, complete, decoder, strong)
        if len(inner) == probe < cap + 1:
            inner += _decompress_more(decoder, cap + 1 - probe)
        ended = _ended(decoder)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError, MemoryError) as exc:
        return _Unread(kind, f"corrupt {kind} stream: {exc}"[:MAX_NAME_CHARS], corrupt=True) if strong else None
    if not inner:
        return _unread_empty(kind, data, complete, decoder, strong)
    if not is_pickle:
        return _Unread(kind, None)
    truncated = len(inner) > cap or not ended or not complete
    model = _pickle(inner[:cap], not truncated, cap, ext_format)
    model.compression = kind
    return model


def _unread_empty(kind: str, data: bytes, complete: bool, decoder: Any, strong: bool) -> _Unread | None:
    """A stream that gave no byte (None for a weak magic: it claims nothing)."""
    if not strong:
        return None
    if _ended(decoder):
        return _Unread(kind, f"the {kind} stream is empty")
    if complete:
        return _Unread(kind, f"the {kind} stream ends before its first decompressed byte", corrupt=True)
    return _Unread(kind, f"the kept {len(data)} bytes end before the {kind} stream's first decompressed byte")


def _numpy(data: bytes, complete: bool, cap: int) -> ModelFile:
    check, data_at = mf.read_npy(data, body_complete=complete)
    model = _with_check("numpy", check)
    if check.info.get("object_dtype") and data_at is not None:
        model.pickle = scan_pickle(data[data_at:], truncated=not complete, cap=cap)
    return model


# --- archives -----------------------------------------------------------------------------------


def _archive(data: bytes, complete: bool, cap: int) -> ModelFile:
    listing = zipprefix.walk(data)
    names = [entry.name for entry in listing.entries]
    fmt = _archive_kind(names)
    model = ModelFile(format=fmt, source=MAGIC, confidence=HIGH)
    model.archive = {
        "entries": [n[:MAX_NAME_CHARS] for n in names[:MAX_ENTRIES_LISTED]],
        "entry_count": len(names),
        "complete": listing.complete,
    }
    if listing.error is not None:
        model.anomalies.append(("model_zip_corrupt", listing.error))
    elif complete and not listing.complete:
        model.anomalies.append(("model_zip_corrupt", "the archive ends inside its entries, "
                                                     "before the central directory"))
    scans, scanned_names, corrupt = _scan_entries(data, listing, fmt, cap, model)
    if corrupt:
        model.anomalies.append(("model_zip_corrupt", corrupt))
    if scanned_names:
        model.archive["pickle_entries"] = scanned_names[:MAX_ENTRIES_LISTED]
    merged = merge_scans(scans)
    if merged is None and fmt == "torch_zip":
        merged = PickleScan(status=PARTIAL, protocol=None, globals=(), dangerous=(), suspicious=(),
                            scanned_bytes=0)
    if merged is not None and merged.status == COMPLETE and not listing.complete:
        merged = PickleScan(status=PARTIAL, protocol=merged.protocol, globals=merged.globals,
                            dangerous=merged.dangerous, suspicious=merged.suspicious,
                            scanned_bytes=merged.scanned_bytes)
    model.pickle = merged
    return model


def _archive_kind(names: list[str]) -> str:
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch_zip"
    if "MAR-INF/MANIFEST.json" in names:
        return "torchserve_mar"
    if "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "numpy_zip"
    return "zip"


def _scan_entries(data: bytes, listing: zipprefix.ZipListing, fmt: str, cap: int,
                  model: ModelFile) -> tuple[list[PickleScan], list[str], str | None]:
    """Scan the pickles (and object-dtype arrays) among the entries; budget `cap` bytes in all."""
    scans: list[PickleScan] = []
    scanned: list[str] = []
    corrupt: str | None = None
    budget = cap
    for entry in listing.entries[:MAX_ENTRIES_PEEKED]:
        if budget <= 0:
            break
        name = entry.name
        if fmt == "torch_zip" and _TORCH_STORAGE.search(name):
            continue  # raw tensor storage, never unpickled by torch
        if fmt == "keras" and name == "config.json":
            content, _, _ = zipprefix.read_entry(data, entry, cap)
            model.keras_lambda = mf.has_keras_lambda(content)
            continue
        head, _, error = zipprefix.read_entry(data, entry, 8)
        if error is not None:
            if error.startswith("corrupt") and corrupt is None:
                corrupt = f"entry {name[:MAX_NAME_CHARS]!r}: {error}"
            continue
        lower = name.lower()
        is_pickle = lower.endswith(_PICKLE_ENTRY_SUFFIXES) or is_pickle_magic(head)
        is_npy = lower.endswith(".npy") or head[:6] == mf.NPY_MAGIC
        if not (is_pickle or is_npy):
            continue
        content, truncated, _ = zipprefix.read_entry(data, entry, budget)
        if is_npy and head[:6] == mf.NPY_MAGIC:
            check, data_at = mf.read_npy(content, body_complete=not truncated)
            if not check.info.get("object_dtype") or data_at is None:
                continue
            content = content[data_at:]
        scans.append(scan_pickle(content, truncated=truncated, cap=budget))
        scanned.append(name[:MAX_NAME_CHARS])
        budget -= len(content)
    return scans, scanned, corrupt


# --- field declarations -------------------------------------------------------------------------


def model_fields(prefix: str) -> list[tuple[str, str, str]]:
    """Declarations of the `model` object's fields under `prefix` (e.g. "s3.model")."""
    p = prefix
    return [
        (p, "object", "Model file seen in the body, or named by the object key (see docs/protocols/s3.md)."),
        (f"{p}.format", "string", "pickle, joblib, torch_zip, torch_legacy, torch (by name), safetensors, onnx, "
                                  "gguf, numpy, numpy_zip, hdf5, keras, tflite, tensorflow, torchserve_mar, zip."),
        (f"{p}.format_source", "string", "magic (the bytes) or extension (the name only)."),
        (f"{p}.confidence", "string", "high (magic and structure), medium (weaker evidence), low (name only)."),
        (f"{p}.extension_format", "string", "Format the name's extension suggests, when the bytes were seen."),
        (f"{p}.extension_mismatch", "boolean", "The bytes and the extension disagree (a pickle named .safetensors)."),
        (f"{p}.compression", "string", "zlib, gzip, bz2, xz or lzma around the file (joblib compress=, "
                                       "pandas to_pickle)."),
        (f"{p}.decompression_error", "string", "Why a compressed body could not be read (corrupt stream, or the "
                                               "kept prefix ends before its first decompressed byte)."),
        (f"{p}.keras_lambda", "boolean", "A Keras config in the file names a Lambda layer (Python code)."),
        (f"{p}.archive", "object", "Zip-based formats: what the local headers in the seen bytes list."),
        (f"{p}.archive.entries", "list[string]", "First 32 entry names."),
        (f"{p}.archive.entry_count", "integer", "Entries found in the seen bytes."),
        (f"{p}.archive.complete", "boolean", "The walk reached the central directory (every entry seen)."),
        (f"{p}.archive.pickle_entries", "list[string]", "Entries scanned as pickles (data.pkl, object arrays)."),
        (f"{p}.pickle", "object", "Pickle scan (picklescan, disassembly only) of the pickles in the object."),
        (f"{p}.pickle.scan", "string", "complete, partial (only a prefix was seen) or error (did not disassemble)."),
        (f"{p}.pickle.protocol", "integer", "Pickle protocol from the first PROTO opcode."),
        (f"{p}.pickle.globals", "list[string]", "Imported globals as module.name (sorted, first 64)."),
        (f"{p}.pickle.dangerous", "list[string]", "Globals picklescan classes as dangerous (posix.system, "
                                                  "builtins.eval, ...)."),
        (f"{p}.pickle.suspicious", "list[string]", "Globals on neither of picklescan's lists."),
        (f"{p}.pickle.scanned_bytes", "integer", "Pickle bytes disassembled (capped at 1 MiB per object)."),
        (f"{p}.safetensors", "object", "safetensors header facts."),
        (f"{p}.safetensors.header_length", "integer", "Declared JSON header length."),
        (f"{p}.safetensors.header_valid", "boolean", "The header parsed and its tensors tile the data exactly."),
        (f"{p}.safetensors.tensor_count", "integer", "Tensors in the header."),
        (f"{p}.safetensors.dtypes", "list[string]", "Tensor dtypes used."),
        (f"{p}.safetensors.metadata_keys", "list[string]", "Keys of __metadata__."),
        (f"{p}.gguf", "object", "GGUF header facts."),
        (f"{p}.gguf.version", "integer", "GGUF version."),
        (f"{p}.gguf.tensor_count", "integer", "Declared tensor count."),
        (f"{p}.gguf.metadata_count", "integer", "Declared metadata key/value count."),
        (f"{p}.gguf.metadata_read", "integer", "Metadata pairs read from the seen bytes."),
        (f"{p}.gguf.architecture", "string", "general.architecture."),
        (f"{p}.gguf.name", "string", "general.name."),
        (f"{p}.gguf.chat_template", "string", "tokenizer.chat_template (Jinja; first 2048 characters)."),
        (f"{p}.numpy", "object", ".npy header facts."),
        (f"{p}.numpy.version", "string", "Format version (1.0, 2.0, 3.0)."),
        (f"{p}.numpy.dtype", "string", "descr of the array."),
        (f"{p}.numpy.shape", "list[integer]", "Array shape."),
        (f"{p}.numpy.object_dtype", "boolean", "Object dtype: the data is a pickle."),
        (f"{p}.onnx", "object", "ONNX ModelProto facts."),
        (f"{p}.onnx.ir_version", "integer", "ir_version."),
        (f"{p}.onnx.producer", "string", "producer_name."),
        (f"{p}.onnx.producer_version", "string", "producer_version."),
    ]


__all__ = ["EXTENSION", "EXTENSION_FORMATS", "MAGIC", "ModelFile", "format_from_name", "inspect_model",
           "model_fields"]
