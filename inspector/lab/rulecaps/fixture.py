"""One rule's fixture: the builders of its positive and negative captures, and how to write them.

A fixture folder (tests/signatures/<rule-stem>/) holds `positive/` (traffic that must fire the
rule) and `negative/` (its benign twin, one step short of the attack), each with `input.pcap`,
a suricata-verify style `test.yaml` and, when the rule reads site variables, a `site.yaml`
(anomaly rules: a `baseline.json` learned from the fixture's normal traffic); plus a README
saying how the captures were made. Builders get a Capture and a generator seeded from the stem,
so every run writes the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.lab.craft import Capture

Build = Callable[[Capture, random.Random], None]

# The fixtures' network plan (TEST-NET ranges outside, RFC 1918 inside).
OUTSIDE = "198.51.100.23"  # a client in no site network
ATTACKER = "203.0.113.66"  # an attacker-controlled server
SERVER_IP = "10.20.0.5"  # the model server under test
S3_ENDPOINT = "203.0.113.10"  # the object store's address
ADMIN = "10.99.0.5"
ADMIN_NET = "10.99.0.0/24"
RANK0, RANK1 = "10.30.0.10", "10.30.0.11"
TRAINING_NET = "10.30.0.0/16"
PIPELINE_HOST = "10.40.0.7"
PIPELINE_NET = "10.40.0.0/24"
NOTEBOOK = "10.50.0.9"
SUBMITTER_NET = "10.50.0.0/24"


@dataclass(frozen=True, kw_only=True)
class Fixture:
    """What a rule's fixture needs: sid, the two builders, expected counts, site values, notes."""

    sid: int
    positive: Build
    negative: Build
    #: (event_type, records in the positive, records in the negative): the near miss is parsed.
    parsed: tuple[str, int, int]
    positive_count: int = 1
    config: dict[str, Any] | None = None
    notes: str = ""
    #: Normal traffic to learn an anomaly baseline from (inspector.anomaly): written as
    #: baseline.json beside both captures and named in their test.yaml.
    baseline: Build | None = None
    #: An `egress:` section for site.yaml; the captures are analyzed with the allowlists applied.
    egress: dict[str, Any] | None = None
    #: A segmentation policy (YAML text): written as policy.yaml beside both captures and named
    #: in their test.yaml; the baseline is learned with it (zone pairs).
    policy: str | None = None


def _yaml_config(config: dict[str, Any]) -> str:
    lines = ["# Site values for this fixture (laid over the shipped default config).", "vars:"]
    for name, value in config.items():
        lines.append(f"  {name}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _learned_baseline(stem: str, build: Build, policy: str | None = None) -> str:
    """The baseline JSON learned from the traffic `build` makes (its capture is not kept), with
    the segmentation policy `policy` (YAML text) when there is one."""
    import tempfile

    from inspector.anomaly.learn import learn_baseline
    from inspector.policy import load_policy

    cap = Capture()
    build(cap, random.Random(f"{stem}:baseline"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.pcap"
        cap.write(path)
        loaded = None
        if policy is not None:
            (Path(tmp) / "policy.yaml").write_text(policy)
            loaded = load_policy(Path(tmp) / "policy.yaml")
        baseline, _ = learn_baseline([path], policy=loaded)
    return json.dumps(baseline.to_json(), sort_keys=True, indent=1) + "\n"


def write_fixture(root: Path, stem: str, fixture: Fixture, rule_path: str) -> None:
    """Write tests/signatures/<stem>/{positive,negative}/ and the README."""
    event_type, parsed_positive, parsed_negative = fixture.parsed
    baseline_json = _learned_baseline(stem, fixture.baseline, fixture.policy) if fixture.baseline else None
    for kind, build, count, parsed in (("positive", fixture.positive, fixture.positive_count, parsed_positive),
                                       ("negative", fixture.negative, 0, parsed_negative)):
        folder = root / stem / kind
        folder.mkdir(parents=True, exist_ok=True)
        cap = Capture()
        build(cap, random.Random(f"{stem}:{kind}"))
        cap.write(folder / "input.pcap")
        lines = [f"# {kind} fixture for {stem} (sid {fixture.sid}); made by inspector.lab.rulecaps",
                 "pcap: input.pcap",
                 f"rules: [../../../../{rule_path}]"]
        if fixture.config or fixture.egress:
            text = _yaml_config(fixture.config) if fixture.config else "# Site values for this fixture.\n"
            if fixture.egress:
                text += "egress:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in fixture.egress.items())
            (folder / "site.yaml").write_text(text)
            lines.append("config: site.yaml")
        if fixture.egress:
            lines.append("egress: true")
        if fixture.policy is not None:
            (folder / "policy.yaml").write_text(fixture.policy)
            lines.append("policy: policy.yaml")
        if baseline_json is not None:
            (folder / "baseline.json").write_text(baseline_json)
            lines.append("baseline: baseline.json")
        lines += ["checks:",
                  f"  - filter: {{count: {count}, match: {{event_type: alert, alert.signature_id: {fixture.sid}}}}}",
                  f"  - filter: {{count: {parsed}, match: {{event_type: {event_type}}}}}"]
        (folder / "test.yaml").write_text("\n".join(lines) + "\n")
    (root / stem / "README.md").write_text(
        f"# {stem} (sid {fixture.sid})\n\n{fixture.notes}\n\n"
        "Both captures are made by `python -m inspector.lab.rulecaps tests/signatures` "
        "(inspector/lab/rulecaps/, on the traffic library inspector/lab/traffic_*.py; deterministic: "
        "the same bytes every run).\n")
