"""Ending a finished command without interpreter teardown (inspector.fastexit), in real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PCAPS = REPO / "pcaps"

#: An object whose finaliser runs only if the interpreter is torn down.
_MARK_TEARDOWN = (
    "import sys\n"
    "class _Teardown:\n"
    "    def __del__(self):\n"
    "        sys.stderr.write('torn down\\n')\n"
    "_mark = _Teardown()\n"
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _ending_with_end_process(body: str, code: int) -> subprocess.CompletedProcess[str]:
    """A process that runs `body`, then `end_process(code)`."""
    return _python(f"{_MARK_TEARDOWN}{body}from inspector.fastexit import end_process\nend_process({code})\n")


def test_end_process_runs_atexit_handlers_and_flushes_without_teardown(tmp_path: Path) -> None:
    handled = tmp_path / "atexit"
    result = _ending_with_end_process(
        "import atexit, pathlib\n"
        f"atexit.register(pathlib.Path({str(handled)!r}).write_text, 'ran')\n"
        "sys.stdout.write('buffered, no newline')\n", 3)
    assert result.returncode == 3
    assert result.stdout == "buffered, no newline"
    assert handled.read_text() == "ran"
    assert "torn down" not in result.stderr


def test_end_process_waits_for_a_running_thread_like_the_ordinary_exit(tmp_path: Path) -> None:
    written = tmp_path / "thread"
    result = _ending_with_end_process(
        "import pathlib, threading, time\n"
        f"out = pathlib.Path({str(written)!r})\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), out.write_text('done'))).start()\n", 4)
    assert result.returncode == 4
    assert written.read_text() == "done"  # os._exit would have killed the thread first
    assert "torn down" in result.stderr  # the ordinary exit


def test_analyze_ends_without_teardown_and_its_output_is_whole(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    run = _MARK_TEARDOWN + "sys.argv[0] = 'inspector'\nfrom inspector.cli import run\nrun()\n"
    result = _python(run, "analyze", str(PCAPS), "-q", "--eve", str(eve))
    assert result.returncode == 0, result.stderr
    assert "torn down" not in result.stderr
    lines = eve.read_text().splitlines()
    assert json.loads(lines[-1])["event_type"] == "stats"  # the last record, written whole
    assert all(json.loads(line) for line in lines)

    to_stdout = _python(run, "analyze", str(PCAPS), "-q", "--eve", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout.splitlines() == lines  # what the buffered stdout held is flushed

    # a command that does not opt in ends the ordinary way
    other = _python(run, "fields", "--json")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)
    assert "torn down" in other.stderr
