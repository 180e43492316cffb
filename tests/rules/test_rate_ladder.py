"""A rate-rule threshold ladder over one capture (the suricata-verify habit).

The capture holds 25 ModelInfer calls from one client, 0.1 s apart (and 25 REST calls from a
second client, which these gRPC rules do not count). Rules with counts 1..26
over a 10 s window: every rung up to 25 alerts exactly once (once per window per key), rung 26
never. A window ladder with count 2 shows the once-per-window re-arming.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.rules import load_rules

CAPTURE = Path(__file__).resolve().parents[1] / "signatures" / "triton_inference_rate" / "positive" / "input.pcap"

RULE = """title: ladder rung {n}
id: 00000000-0000-4000-8000-{n:012d}
sid: {sid}
rev: 1
status: test
level: low
description: ladder
references: []
tags: []
event: grpc
detection:
  selection:
    grpc.method: ModelInfer
  condition: selection
rate:
  by: [src_ip]
  count: {count}
  window: {window}
"""


def alerts_by_sid(tmp_path: Path, rungs: list[tuple[int, str]]) -> dict[int, int]:
    for n, (count, window) in enumerate(rungs):
        (tmp_path / f"rung_{n}.yml").write_text(RULE.format(n=n, sid=9000000 + n, count=count, window=window))
    records: list[dict] = []
    Analyzer(records.append, engine=Engine(load_rules([tmp_path]))).analyze_file(CAPTURE)
    counts = {9000000 + n: 0 for n in range(len(rungs))}
    for record in records:
        if record["event_type"] == "alert":
            counts[record["alert"]["signature_id"]] += 1
    return counts


def test_count_ladder(tmp_path):
    counts = alerts_by_sid(tmp_path, [(k, "10s") for k in range(1, 27)])
    assert [counts[9000000 + k - 1] for k in range(1, 27)] == [1] * 25 + [0]


@pytest.mark.parametrize(("window", "expected"), [("0.05", 0), ("1s", 3), ("10s", 1)])
def test_window_ladder_count_two(tmp_path, window, expected):
    """Calls 0.1 s apart over about 2.5 s, count 2: a 50 ms window never holds two; a 1 s window
    alerts, stays quiet for a second, re-arms (three alerts); a 10 s window alerts once."""
    assert alerts_by_sid(tmp_path, [(2, window)])[9000000] == expected
