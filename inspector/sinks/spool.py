"""EVE output that survives a full or unwritable disk: the live sidecar's writer.

Records are serialized at once and held in a bounded in-memory spool until a flush writes them
with unbuffered `write` calls, so exactly what reached the file is known even when the disk
fills mid-line (a partial write leaves the rest of the line in the spool). A failed write or
open is counted (`write_errors`), logged once per outage, and retried at the next flush (the
sidecar flushes at once after alerts and at least every half second): nothing is lost while
the spool has room. When it is full, the oldest records that are not alerts are dropped first
(`dropped`, by event type); alerts go only when the spool holds nothing else.

`-` writes to stdout the same way (its file descriptor).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Any

from inspector import jsonio

logger = logging.getLogger("inspector.live")


#: Records held while the output cannot be written (about 1 KiB each: some tens of MiB at most).
DEFAULT_SPOOL_RECORDS = 50_000
_BATCH_BYTES = 256 * 1024  # written per write() call


class SpoolingEveWriter:
    def __init__(self, target: str | Path, *, max_records: int = DEFAULT_SPOOL_RECORDS) -> None:
        self._path = None if str(target) == "-" else Path(target)
        self.max_records = max_records
        self._fd: int | None = None
        self._spool: deque[tuple[bool, bytes]] = deque()  # (is_alert, line)
        self._partial = 0  # bytes of the spool's first line already written
        self._alerts_spooled = 0
        self.written = 0
        self.write_errors = 0
        self.dropped: Counter[str] = Counter()
        self.failing = False
        self._last_error = ""
        self._open()
        if self._fd is None and self._path is not None:
            raise OSError(f"cannot open {self._path}: {self._last_error}")

    # -- public API (EveWriter's) ---------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        is_alert = record.get("event_type") == "alert"
        self._spool.append((is_alert, (jsonio.dumps(record) + "\n").encode("utf-8", "backslashreplace")))
        self._alerts_spooled += is_alert
        if len(self._spool) > self.max_records:
            self._drop_one()

    def flush(self) -> None:
        """Write what the spool holds; on an error keep the rest for the next flush."""
        if not self._spool:
            return
        if self._fd is None and not self._open():
            return
        try:
            while self._spool:
                batch = []
                size = 0
                for _, line in itertools.islice(self._spool, 0, 1024):
                    batch.append(line)
                    size += len(line)
                    if size >= _BATCH_BYTES:
                        break
                data = memoryview(b"".join(batch))[self._partial:]
                self._consume(os.write(self._fd, data) + self._partial)  # type: ignore[arg-type]
        except OSError as exc:
            self._failed(f"cannot write: {exc}")
            return
        if self.failing:
            self.failing = False
            logger.warning("inspector: EVE output %s writable again", self._name())

    def reopen(self) -> None:
        """After log rotation: close, reopen (appending), then flush."""
        if self._path is None:
            return
        self._close_fd()
        if self._open():
            self.flush()

    def close(self) -> None:
        self.flush()
        if self._spool:
            logger.error("inspector: %d EVE records (%d alerts) could not be written to %s at exit",
                         len(self._spool), self._alerts_spooled, self._name())
        self._close_fd()

    def _consume(self, count: int) -> None:
        """`count` bytes from the start of the spool's first line reached the file."""
        spool = self._spool
        self._partial = 0
        while count and spool:
            is_alert, line = spool[0]
            if count < len(line):
                self._partial = count
                return
            spool.popleft()
            count -= len(line)
            self._alerts_spooled -= is_alert
            self.written += 1

    @property
    def backlog(self) -> int:
        """Records waiting in the spool."""
        return len(self._spool)

    # -- internals ------------------------------------------------------------------------------

    def _name(self) -> str:
        return "stdout" if self._path is None else str(self._path)

    def _open(self) -> bool:
        if self._path is None:
            self._fd = sys.stdout.fileno()
            return True
        try:
            if not self._path.parent.exists():
                self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._last_error = str(exc)
            self._failed(f"cannot open: {exc}")
            return False
        return True

    def _close_fd(self) -> None:
        if self._fd is not None and self._path is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def _failed(self, reason: str) -> None:
        self.write_errors += 1
        if not self.failing:
            self.failing = True
            logger.error("inspector: EVE output %s failing (%s): records are held in memory (up to %d) "
                         "and written when it works again", self._name(), reason, self.max_records)

    def _drop_one(self) -> None:
        """The spool is full: drop the oldest record that is not an alert (or, when only alerts
        are left, the oldest alert). A line already partly written is never dropped."""
        start = 1 if self._partial else 0
        if self._alerts_spooled < len(self._spool) - start:
            for index in range(start, len(self._spool)):
                is_alert, line = self._spool[index]
                if not is_alert:
                    del self._spool[index]
                    self.dropped[_event_type(line)] += 1
                    return
        if len(self._spool) > start:
            is_alert, line = self._spool[start]
            del self._spool[start]
            self._alerts_spooled -= is_alert
            self.dropped[_event_type(line)] += 1


def _event_type(line: bytes) -> str:
    try:
        return str(json.loads(line).get("event_type") or "unknown")
    except ValueError:
        return "unknown"
