"""The fuzz targets under hypothesis: a CI-sized budget of the dedicated run (fuzz/run.py).

Each target gets mutated seeds (the same mutator as the dedicated run, driven by a
hypothesis-chosen RNG seed) and raw random bytes. A target raising is a parser bug: the
parsers turn malformed input into anomalies. `python -m fuzz.run --budget 100000` is the
dedicated run; see docs/robustness.md.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import run as fuzz_run
from fuzz.harness import decode_chunks, encode_chunks, serialize_like_eve
from fuzz.mutate import mutate
from fuzz.targets import TARGETS

EXAMPLES = 60  # per target and strategy: about 2 x 21 x 60 inputs, a few seconds in all

_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_seed_runs_clean_and_reaches_its_parser(name):
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, f"{name} has no seeds"
    reached = sum((target.run(seed) for seed in seeds), start=type(target.run(b""))())
    assert reached, f"{name}: the seeds reached nothing"


@pytest.mark.parametrize("name", list(TARGETS))
@_SETTINGS
@given(rng_seed=st.integers(0, 2**32 - 1), pick=st.integers(0, 10_000))
def test_mutated_seeds_never_raise(name, rng_seed, pick):
    target = TARGETS[name]
    seeds = target.seeds()
    rng = random.Random(rng_seed)
    target.run(mutate(seeds[pick % len(seeds)], rng, seeds))


@pytest.mark.parametrize("name", list(TARGETS))
@_SETTINGS
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_raise(name, data):
    TARGETS[name].run(data)


@given(chunks=st.lists(st.tuples(st.integers(0, 1), st.binary(min_size=1, max_size=300)), max_size=8))
@settings(max_examples=100, deadline=None, database=None)
def test_conversation_encoding_round_trips(chunks):
    assert decode_chunks(encode_chunks(chunks)) == chunks


def test_dedicated_runner_reports_per_target(capsys):
    assert fuzz_run.main(["--budget", "40", "--no-save", "protobuf", "hpack"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["target", "inputs", "inputs/s", "crashes"]
    rows = {line.split()[0]: line.split() for line in out[1:3]}
    assert set(rows) == {"protobuf", "hpack"}
    assert all(row[1] == "40" and row[3] == "0" for row in rows.values())
    assert out[-1].startswith("total: 80 inputs, 0 crashes")


def test_runner_saves_a_crashing_input_once_per_site(tmp_path, monkeypatch):
    """A target that raises: the input is saved with its traceback, one file per crash site."""
    from fuzz.targets import Target

    def broken(data: bytes):
        if data[:1] == b"!":
            raise ValueError("boom")
        return {}

    monkeypatch.setattr(fuzz_run, "REGRESSIONS", tmp_path)
    result = fuzz_run.fuzz_target(Target("broken", "test", broken, lambda: [b"!a", b"!b", b"ok"]), 3, 1, 10.0)
    assert result.crashes == 2 and result.crash_sites == [f"ValueError at {__file__.rsplit('/', 1)[1]}:"
                                                          f"{broken.__code__.co_firstlineno + 2}"]
    saved = sorted(p.name for p in (tmp_path / "broken").iterdir())
    assert len(saved) == 2 and saved[0].endswith(".bin") and saved[1].endswith(".txt")
    assert (tmp_path / "broken" / saved[0]).read_bytes() == b"!a"


def test_the_harness_serializes_as_the_eve_writer_and_refuses_what_is_not_json():
    """Records are checked with the writer's encoder (a lone surrogate is written as its escape)
    and against JSON's own types (bytes would otherwise pass as msgspec's base64)."""
    serialize_like_eve({"event_type": "llm", "llm": {"model": "m\ud800"}})
    with pytest.raises(TypeError):
        serialize_like_eve({"event_type": "llm", "llm": {"model": b"m"}})
