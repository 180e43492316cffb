"""The live EVE writer when the disk is full or the file unwritable: nothing it could write is
lost, alerts are the last to go, every failure is counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inspector.sinks.spool import SpoolingEveWriter

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full is Linux-only")


def record(n: int, event_type: str = "http") -> dict:
    return {"event_type": event_type, "n": n, "text": "é"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_dev_full
def test_disk_full_spools_and_counts():
    writer = SpoolingEveWriter("/dev/full")
    for n in range(5):
        writer.write(record(n))
    writer.flush()
    writer.flush()
    assert writer.failing and writer.write_errors == 2 and writer.backlog == 5 and writer.written == 0


def test_unwritable_then_writable_again_loses_nothing(tmp_path):
    """Rotation finds the path unopenable (a directory sits there: this works as root too, where
    file modes do not stop writes); records wait and reach the file once it can be opened."""
    path = tmp_path / "eve.json"
    writer = SpoolingEveWriter(path)
    path.unlink()
    path.mkdir()
    writer.reopen()
    for n in range(3):
        writer.write(record(n, "alert"))
    writer.flush()
    assert writer.failing and writer.backlog == 3 and writer.write_errors == 2  # the reopen, the flush
    path.rmdir()
    writer.flush()
    assert not writer.failing and writer.backlog == 0
    assert [r["n"] for r in lines(path)] == [0, 1, 2]


def test_a_partial_write_keeps_the_rest_of_the_line(tmp_path, monkeypatch):
    """The disk fills in the middle of a line: the bytes that reached the file are not written
    twice, the rest follows once there is room."""
    path = tmp_path / "eve.json"
    writer = SpoolingEveWriter(path)
    real_write = os.write
    room = [25]

    def short_write(fd, data):
        if room[0] <= 0:
            raise OSError(28, "No space left on device")
        count = real_write(fd, bytes(data[:room[0]]))
        room[0] -= count
        return count

    monkeypatch.setattr(os, "write", short_write)
    for n in range(3):
        writer.write(record(n))
    writer.flush()
    assert writer.failing and writer.backlog == 3 and path.stat().st_size == 25
    room[0] = 10_000
    writer.flush()
    assert [r["n"] for r in lines(path)] == [0, 1, 2] and writer.written == 3


@needs_dev_full
def test_full_spool_drops_other_records_before_alerts():
    writer = SpoolingEveWriter("/dev/full", max_records=4)
    writer.write(record(0, "alert"))
    for n in range(1, 4):
        writer.write(record(n))
    writer.write(record(4, "alert"))
    writer.write(record(5, "alert"))
    assert writer.backlog == 4 and writer.dropped == {"http": 2}
    writer.write(record(6, "alert"))
    writer.write(record(7, "alert"))
    assert writer.dropped == {"http": 3, "alert": 1}  # only alerts left: the oldest alert goes


def test_stdout(capfd):
    writer = SpoolingEveWriter("-")
    writer.write(record(1))
    writer.flush()
    assert json.loads(capfd.readouterr().out) == record(1)


def test_a_file_that_cannot_be_opened_at_start_is_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        SpoolingEveWriter(tmp_path / "dir")
