"""Captures that fire each shipped rule, and their near misses, made by code (tests/signatures/).

For every rule stem in `FIXTURES` this writes `tests/signatures/<stem>/positive/` (traffic that
must fire the rule) and `negative/` (the benign twin: the same traffic one step short of the
attack), each with `input.pcap` and a suricata-verify style `test.yaml`, plus a site config
where the rule depends on site variables. The traffic comes from the lab's traffic library
(`inspector.lab.traffic_*`: real TCP conversations carrying bytes made by h2, hyperframe,
tritonclient's protobuf classes, botocore's SigV4 signer, pickle and json); one module here per
protocol family says what each fixture sends.

    python -m inspector.lab.rulecaps tests/signatures
"""

from __future__ import annotations

from pathlib import Path

from inspector.lab.rulecaps import anomaly, core, egress, llm, mlops, s3, training, triton
from inspector.lab.rulecaps.fixture import Fixture, write_fixture

FIXTURES: dict[str, Fixture] = {**core.FIXTURES, **triton.FIXTURES, **s3.FIXTURES, **llm.FIXTURES,
                                **mlops.FIXTURES, **training.FIXTURES, **anomaly.FIXTURES,
                                **egress.FIXTURES}


def rule_paths(signatures: Path) -> dict[str, str]:
    """Rule stem -> path relative to the repository root."""
    return {p.stem: str(p.relative_to(signatures.parent)) for p in sorted(signatures.rglob("*.yml"))}


def generate(root: str | Path, signatures: str | Path = "signatures") -> None:
    """Write every fixture folder under `root` (rule paths are looked up under `signatures`)."""
    root, signatures = Path(root), Path(signatures)
    paths = rule_paths(signatures)
    for stem, fixture in FIXTURES.items():
        write_fixture(root, stem, fixture, paths[stem])


__all__ = ["FIXTURES", "Fixture", "generate", "rule_paths", "write_fixture"]
