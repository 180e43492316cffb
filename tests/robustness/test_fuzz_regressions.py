"""Every input the fuzzers ever crashed a parser with, replayed: fuzz/corpus/regressions/<target>/.

Each `.bin` is the input as the target takes it; the `.txt` beside it holds the crash site and
traceback from when it was found. Fixed parsers must run them clean.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "regressions"
CASES = sorted(REGRESSIONS.glob("*/*.bin"))


def test_regression_corpus_names_only_known_targets():
    assert REGRESSIONS.is_dir()
    unknown = {path.name for path in REGRESSIONS.iterdir() if path.is_dir()} - set(TARGETS)
    assert unknown == set()
    assert all(case.with_suffix(".txt").is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.stem}" for c in CASES])
def test_regression_input_runs_clean(case):
    TARGETS[case.parent.name].run(case.read_bytes())
