"""Fuzzing every parser: one registry of targets, a mutation engine, seeds from real bytes.

* :mod:`fuzz.targets` -- the registry: each target feeds one parser (or one parser and what
  sits on top of it, records and rules included) with one input and must not raise.
* :mod:`fuzz.seeds` -- starting inputs taken from the shipped captures (`pcaps/`) and from real
  encoders (hpack, gzip, Python's ssl, the protobuf encoder), built at run time, never copied.
* :mod:`fuzz.mutate` -- a small deterministic mutator (bit flips, interesting integers, length
  fields that lie, splices, chunk re-splits).
* ``python -m fuzz.run --budget 100000 [TARGET...]`` -- the dedicated run: per target inputs/s,
  crash count, slowest input; crashing inputs go to ``fuzz/corpus/regressions/<target>/``.
* ``python -m fuzz.atheris_run TARGET`` -- the same targets under atheris, when it is installed.

The CI budget is the hypothesis test `tests/robustness/test_fuzz_targets.py`; the regression
corpus is replayed by `tests/robustness/test_fuzz_regressions.py`. See docs/robustness.md.
"""
