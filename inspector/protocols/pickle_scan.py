"""Pickle content scanning with picklescan: which globals a pickle imports, which are dangerous.

A pickle runs code when it is loaded: its GLOBAL / STACK_GLOBAL opcodes import any callable
(`posix.system`, `builtins.eval`) and REDUCE calls it. picklescan 1.0.5
(`picklescan.scanner.scan_pickle_bytes`) disassembles the opcode stream with `pickletools.genops`
and classifies each imported global against its safe and unsafe lists. It never unpickles, and
neither does anything here: the bytes are only disassembled.

:func:`scan_pickle` scans at most :data:`PICKLE_SCAN_BYTES` and reports, besides the globals,
how much it could see (`status`):

* ``complete`` the whole pickle stream was disassembled;
* ``partial``  the bytes scanned are a prefix of the pickle (body cap, Range, cut capture):
  globals after the cut are unknown;
* ``error``    the stream does not disassemble (corrupt, not a pickle after all, or data a
  pickler wrote between opcodes, as joblib does with numpy arrays); globals before the error are
  listed.

Cost (measured here on one core): dense pickles of small objects disassemble at about 4 MB/s
with about 40 bytes of Python objects per opcode byte held during the scan; pickles made of large
byte strings (tensors, arrays) go at memory speed. The cap bounds both.
"""

from __future__ import annotations

import io
import logging
import pickletools
import warnings
from dataclasses import dataclass
from types import ModuleType

#: Bytes of pickle data scanned per object (all pickles of one archive together).
PICKLE_SCAN_BYTES = 1024 * 1024
#: Globals listed per kind in a record, and the longest "module.name" kept.
MAX_GLOBALS = 64
MAX_GLOBAL_CHARS = 256

COMPLETE, PARTIAL, ERROR = "complete", "partial", "error"
_STATUS_ORDER = {COMPLETE: 0, PARTIAL: 1, ERROR: 2}

# picklescan logs a line per finding and per parse failure (text an attacker chose) on the
# "picklescan" logger, which propagates to the application's (mitmproxy's) handlers. Our output
# is the record: the logger is silenced unless someone chose a level for it.
_LOG = logging.getLogger("picklescan")
if _LOG.level == logging.NOTSET:
    _LOG.setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PickleScan:
    """What scanning one or more pickles found. Lists are sorted and capped."""

    status: str
    #: Protocol from the first pickle's PROTO opcode (None: protocol 0/1, or not seen).
    protocol: int | None
    #: Every imported global as "module.name".
    globals: tuple[str, ...]
    #: The globals picklescan classes as dangerous (os, posix, subprocess, builtins.eval, ...).
    dangerous: tuple[str, ...]
    #: Globals on neither list (a model's own classes, or something to look at).
    suspicious: tuple[str, ...]
    scanned_bytes: int

    def record(self) -> dict[str, object]:
        """The EVE object (`<layer>.model.pickle`)."""
        obj: dict[str, object] = {"scan": self.status, "scanned_bytes": self.scanned_bytes,
                                  "globals": list(self.globals), "dangerous": list(self.dangerous)}
        if self.suspicious:
            obj["suspicious"] = list(self.suspicious)
        if self.protocol is not None:
            obj["protocol"] = self.protocol
        return obj


def preload() -> None:
    """Import picklescan now (the sidecar does at load, so that no request waits for it).

    It is otherwise imported by the first scan: it brings http.client, email, tarfile and zipfile
    with it, about 35 ms of every command's start-up, for runs that may never meet a pickle."""
    _scanner()


def _scanner() -> ModuleType:
    import picklescan.scanner

    return picklescan.scanner


def pickle_protocol(data: bytes) -> int | None:
    """The protocol named by a leading PROTO opcode (`\\x80 N`), when there is one."""
    if len(data) >= 2 and data[0] == 0x80:
        return data[1]
    return None


def scan_pickle(data: bytes, *, truncated: bool, cap: int = PICKLE_SCAN_BYTES) -> PickleScan:
    """Scan a pickle stream (or several concatenated) without loading it. Never raises.

    `truncated` says `data` is a prefix of the stream; bytes past `cap` are not scanned and also
    make the scan partial.
    """
    if len(data) > cap:
        data = data[:cap]
        truncated = True
    scanner = _scanner()
    try:
        with warnings.catch_warnings():  # pickletools warns about odd escapes in peer STRING opcodes
            warnings.simplefilter("ignore")
            result = scanner.scan_pickle_bytes(io.BytesIO(data), "body", multiple_pickles=True)
    except Exception:  # picklescan raises ValueError and others on crafted opcode streams
        return PickleScan(status=ERROR, protocol=pickle_protocol(data), globals=(), dangerous=(),
                          suspicious=(), scanned_bytes=len(data))
    level = scanner.SafetyLevel
    found: dict[object, set[str]] = {level.Dangerous: set(), level.Suspicious: set(), level.Innocuous: set()}
    for item in result.globals:
        name = f"{item.module}.{item.name}"[:MAX_GLOBAL_CHARS]
        found[item.safety].add(name)
    every = set().union(*found.values())
    if result.scan_err:
        status = PARTIAL if truncated else ERROR
    elif every:
        status = COMPLETE  # picklescan disassembled every pickle to the end of the bytes
    elif truncated:
        status = PARTIAL
    else:
        status = COMPLETE if _disassembles(data) else ERROR
    return PickleScan(status=status, protocol=pickle_protocol(data), globals=_capped(every),
                      dangerous=_capped(found[level.Dangerous]),
                      suspicious=_capped(found[level.Suspicious]), scanned_bytes=len(data))


def merge_scans(scans: list[PickleScan]) -> PickleScan | None:
    """One result for several pickles (the entries of an archive): the worst status wins."""
    if not scans:
        return None
    if len(scans) == 1:
        return scans[0]
    status = max((s.status for s in scans), key=_STATUS_ORDER.__getitem__)
    return PickleScan(
        status=status,
        protocol=next((s.protocol for s in scans if s.protocol is not None), None),
        globals=_capped({g for s in scans for g in s.globals}),
        dangerous=_capped({g for s in scans for g in s.dangerous}),
        suspicious=_capped({g for s in scans for g in s.suspicious}),
        scanned_bytes=sum(s.scanned_bytes for s in scans),
    )


def _capped(names: set[str]) -> tuple[str, ...]:
    return tuple(sorted(names)[:MAX_GLOBALS])


def _disassembles(data: bytes) -> bool:
    """True when `data` is a sequence of whole pickles (picklescan is silent about a pickle with
    no globals that fails to parse; this tells the two apart)."""
    stream = io.BytesIO(data)
    end = len(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while stream.tell() < end:
                start = stream.tell()
                for _ in pickletools.genops(stream):
                    pass
                if stream.tell() == start:
                    return False
    except Exception:
        return False
    return end > 0


def pickle_sequence_end(data: bytes, count: int) -> int | None:
    """Offset just past the `count`-th consecutive pickle in `data`, or None when they do not all
    disassemble within it (legacy torch files: five pickles, then raw tensor storage)."""
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(count):
                start = stream.tell()
                for _ in pickletools.genops(stream):
                    pass
                if stream.tell() == start:
                    return None
    except Exception:
        return None
    return stream.tell()
