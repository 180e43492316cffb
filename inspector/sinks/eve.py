"""EVE JSON lines output: one compact JSON object per line, to a file or stdout.

Records are written in the order they are produced. The file is opened for append (what a SOC
shipper expects); `reopen()` supports log rotation. Records must already be redacted
(`inspector.redact`): this writer serializes, it does not judge.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from inspector.jsonio import dumps as _dumps

#: One record as its EVE line (without the newline): what `EveWriter.write` writes.
encode_record = _dumps


class EveWriter:
    def __init__(self, target: str | Path | IO[str], append: bool = False) -> None:
        self._path: Path | None = None
        self._append = append
        if isinstance(target, (str, Path)) and str(target) == "-":
            self._fh: IO[str] = sys.stdout
            self._owned = False
        elif isinstance(target, (str, Path)):
            self._path = Path(target)
            self._fh = self._open()
            self._owned = True
        else:
            self._fh = target
            self._owned = False
        self.written = 0

    def _open(self) -> IO[str]:
        assert self._path is not None
        if self._path.parent and not self._path.parent.exists():
            self._path.parent.mkdir(parents=True, exist_ok=True)
        return open(self._path, "a" if self._append else "w", encoding="utf-8", buffering=1 << 16)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(_dumps(record))
        self._fh.write("\n")
        self.written += 1

    def write_encoded(self, line: str) -> None:
        """Write a record already made by :func:`encode_record` (a worker of a sharded run)."""
        self._fh.write(line)
        self._fh.write("\n")
        self.written += 1

    def flush(self) -> None:
        self._fh.flush()

    def reopen(self) -> None:
        """Close and reopen the file (after rotation), appending."""
        if self._path is None:
            return
        self._fh.close()
        self._append = True
        self._fh = self._open()

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()
