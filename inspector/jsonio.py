"""JSON on the hot paths: msgspec's C decoder and encoder, with the standard library's results.

Request bodies (Triton REST tensors, LLM chats, web-API calls) are parsed and every EVE record
is encoded per message; ``json`` spent a sixth of an analysis there. msgspec does the same work
in a third of the time (measured in benchmarks/README.md), and this module keeps what callers
get exactly what ``json`` gives them:

- :func:`loads` returns what ``json.loads`` returns for every document msgspec accepts (integers
  of any size stay integers, duplicate keys keep the last value, floats are correctly rounded);
  for anything msgspec refuses (a syntax error, a UTF-16 or BOM-led body, ``NaN``, a lone
  surrogate escape, nesting too deep) it asks ``json.loads``, so the value or the exception
  (``ValueError``, ``RecursionError``) is the standard library's.
- :func:`dumps` writes compact UTF-8 JSON; what msgspec will not encode (a ``str`` subclass, a
  lone surrogate) falls back to ``json``, and a lone surrogate is written as its JSON escape
  (U+D800 as ``\\ud800``), so every line encodes as UTF-8 and reads back as the same value
  (but for a high and a low surrogate side by side, which JSON reads as the one character they
  pair into).
  Floats are written in their shortest form, the exponent without a sign or zero padding
  (``1e16``, ``0.00001``), and NaN/infinity as ``null`` (``json`` writes ``NaN``, not JSON).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["dumps", "loads"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def loads(data: bytes | bytearray | str) -> Any:
    """The JSON value of `data`, as ``json.loads`` gives it (and its exceptions when it does not parse)."""
    try:
        return _decode(data)
    except Exception:
        return json.loads(data)


def dumps(value: Any) -> str:
    """`value` as one compact line of JSON (non-ASCII text kept as UTF-8, no newline) that
    always encodes as UTF-8: a lone surrogate in a string (what a peer's ``"\\ud800"`` escape
    decodes to) is written as that escape again, not as a character no UTF-8 writer takes."""
    try:
        return _encode(value).decode()
    except (TypeError, UnicodeEncodeError, OverflowError):
        line = _json_dumps(value)
    if line.isascii():
        return line
    # Surrogates only occur inside string literals of the line; "backslashreplace" writes each
    # as its JSON escape (U+D800 as \ud800) and leaves every other character as it is.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")
