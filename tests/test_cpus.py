"""`--workers auto` and `--processes auto`: one process per CPU this process may run on."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from inspector.cpus import process_count, usable_cpus


def test_numbers_and_auto_are_read():
    assert process_count("3") == 3
    assert process_count(" AUTO ") == process_count("auto") == usable_cpus() >= 1


@pytest.mark.parametrize(("value", "message"), [("0", "at least 1"), ("-2", "at least 1"), ("lots", "number or auto")])
def test_bad_counts_are_refused_with_the_reason(value, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        process_count(value)


def test_auto_follows_the_affinity_mask_a_container_or_taskset_sets():
    if not hasattr(os, "sched_setaffinity"):  # no affinity on this system: the machine's count
        assert usable_cpus() == max(1, os.cpu_count() or 1)
        return
    code = ("import os; from inspector.cpus import usable_cpus; "
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(usable_cpus())")
    narrowed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert narrowed.stdout.strip() == "1"
    assert usable_cpus() == len(os.sched_getaffinity(0))
