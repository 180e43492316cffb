"""Ending a finished command without tearing the interpreter down.

When a command returns, CPython finalises the interpreter: it runs the atexit handlers, then
clears every module and collects garbage several times, freeing object by object what the
command loaded (about 200 modules and the rules for `inspector analyze`): 80-90 ms on the
machine of benchmarks/README.md, a sixth of `inspector analyze` on a small capture, for memory
the kernel takes back anyway. :func:`end_process` does the part of that teardown anyone can
observe (the atexit handlers: logging's flush, multiprocessing's clean-up; the standard streams
flushed) and ends the process with `os._exit`.

It is for commands that close what they write themselves (the CLI opts them in): an output file
left open for the teardown to flush would lose its buffer. It falls back to the ordinary exit
while a thread that is not a daemon runs (the interpreter would wait for it) or when a standard
stream cannot be flushed (the ordinary exit reports that as it always has).
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def _other_threads_running() -> bool:
    threading = sys.modules.get("threading")  # never imported: no thread was started
    if threading is None:
        return False
    main = threading.main_thread()
    return any(thread is not main and not thread.daemon and thread.is_alive() for thread in threading.enumerate())


def end_process(code: int) -> NoReturn:
    """Exit with `code` now: atexit handlers run, standard streams flushed, no module teardown."""
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's; elsewhere, the ordinary exit
    if run_exitfuncs is None or _other_threads_running():
        sys.exit(code)
    run_exitfuncs()  # what the interpreter runs first at exit (and then forgets them)
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: the ordinary exit says so
            sys.exit(code)
    os._exit(code)
