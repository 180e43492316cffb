"""Coverage-guided fuzzing of one target under atheris (libFuzzer), when atheris is installed.

    python -m fuzz.atheris_run TARGET [-runs=100000] [-max_total_time=600] [CORPUS_DIR ...]

The target and its seeds are the ones `python -m fuzz.run` uses (fuzz.targets): the seeds are
written to a scratch corpus directory that libFuzzer starts from and grows, so coverage-guided
mutation begins at real bytes. Arguments after TARGET go to libFuzzer as they are. A target that
raises is a crash: libFuzzer stops and writes the input as `crash-<sha1>`; put it in
`fuzz/corpus/regressions/<target>/` so CI replays it.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install atheris); `python -m fuzz.run` needs nothing extra",
              file=sys.stderr)
        return 2
    from fuzz.targets import TARGETS

    if not args or args[0] not in TARGETS:
        print(f"usage: python -m fuzz.atheris_run TARGET [libFuzzer options]; targets: {', '.join(sorted(TARGETS))}",
              file=sys.stderr)
        return 2
    target = TARGETS[args.pop(0)]
    atheris.instrument_all()  # coverage feedback from every loaded module (the parsers included)
    corpus = Path(tempfile.mkdtemp(prefix=f"atheris-{target.name}-"))
    for seed in target.seeds():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    regressions = Path(__file__).resolve().parent / "corpus" / "regressions" / target.name
    for path in sorted(regressions.glob("*.bin")) if regressions.is_dir() else ():
        (corpus / path.stem).write_bytes(path.read_bytes())
    print(f"atheris: {target.name} ({target.parser}), corpus {corpus}", file=sys.stderr)

    def one_input(data: bytes) -> None:
        target.run(data)

    atheris.Setup([sys.argv[0], *args, str(corpus)], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
