"""How many processes a count of `auto` means: `--workers auto` (analyze), `--processes auto` (proxy).

The CPUs this process may run on (its affinity mask, which a container's cpuset or `taskset`
narrows), else the machine's count. An argparse type reads N or `auto` and refuses anything
else, or a count below 1, with a clear message.
"""

from __future__ import annotations

import argparse
import os

AUTO = "auto"


def usable_cpus() -> int:
    """CPUs this process may run on (at least 1)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def process_count(value: str) -> int:
    """argparse type: a whole number >= 1, or `auto` for :func:`usable_cpus`."""
    if value.strip().lower() == AUTO:
        return usable_cpus()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or {AUTO}, not {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count
