"""Policy files: what loads, and every way one does not (file:line: reason, all at once)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.policy import PolicyLoadError, known_protocols, load_policy, load_policy_text

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
default: deny
zones:
  - name: training
    plane: data
    cidrs: [10.10.0.0/16]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as raised:
        load_policy_text(text, "p.yaml")
    return [str(e) for e in raised.value.errors]


def docs_example() -> str:
    text = (REPO / "docs" / "policy.md").read_text()
    return re.search(r"## The policy file\n\n```yaml\n(.*?)```", text, re.S).group(1)


def test_the_documented_example_loads_as_described():
    policy = load_policy_text(docs_example(), "docs/policy.md")
    assert policy.name == "ml-prod" and policy.default == "deny" and policy.unknown_zone == "outside"
    assert [z.name for z in policy.zones] == ["training", "inference", "feature-store", "storage", "mlops",
                                              "admin", "apps"]
    training = policy.zones[0]
    assert training.plane == "data" and training.namespace == "training"
    assert training.cidrs == (ipaddress.ip_network("10.10.0.0/16"), ipaddress.ip_network("fd00:10::/48"))
    assert training.labels == {"app.kubernetes.io/part-of": "trainer"}
    assert policy.zone_names[-1] == "outside"
    deny = policy.rules[5]
    assert (deny.name, deny.action, deny.sources, deny.destinations, deny.protocols, deny.ports) == (
        "no-torchserve-management-from-apps", "deny", frozenset({"apps"}), frozenset({"inference"}), frozenset(),
        ((8081, 8081),))
    last = policy.rules[-1]
    assert last.sources == frozenset({"admin"}) and last.destinations is None and last.action == "allow"


def test_minimal_policy_and_defaults(tmp_path):
    path = tmp_path / "site-policy.yaml"
    path.write_text(MINIMAL)
    policy = load_policy(path)
    assert policy.name == "site-policy" and policy.rules == () and policy.unknown_zone == "outside"
    assert policy.source == str(path)
    assert {"triton", "grpc", "http", "s3", "tcpstore", "nccl", "llm", "http2", "failed"} <= policy.protocols


def test_ports_and_ranges():
    policy = load_policy_text(MINIMAL + "rules:\n  - name: r\n    from: training\n    to: training\n"
                              "    ports: [29500, 40000-40100, '8080']\n", "p.yaml")
    assert policy.rules[0].ports == ((8080, 8080), (29500, 29500), (40000, 40100))


def test_the_unknown_zone_may_be_defined_without_cidrs_and_used_in_rules():
    policy = load_policy_text(MINIMAL + "  - name: internet\n    description: the rest\n"
                              "unknown_zone: internet\nrules:\n  - {name: r, from: internet, to: training, "
                              "protocols: [triton], action: deny}\n", "p.yaml")
    assert policy.unknown_zone == "internet" and policy.zone("internet").cidrs == ()
    assert policy.rules[0].action == "deny"


@pytest.mark.parametrize(("text", "expected"), [
    ("zones: []\n", ["p.yaml:1: policy: default is required",
                     "p.yaml:1: zones: must be a non-empty list of zones"]),
    (MINIMAL.replace("deny", "block"), ["p.yaml:1: default must be deny or allow, not 'block'"]),
    (MINIMAL + "colour: red\n", ["p.yaml:6: unknown key 'colour' in the policy (expected: name, description, "
                                 "default, unknown_zone, zones, rules)"]),
    (MINIMAL.replace("plane: data", "plane: gpu"),
     ["p.yaml:4: zone 'training': plane must be one of control, data, management, not 'gpu'"]),
    (MINIMAL.replace("10.10.0.0/16", "10.10.0.1/16"),
     ["p.yaml:5: zone 'training': '10.10.0.1/16' is not a network (10.10.0.1/16 has host bits set); "
      "did you mean 10.10.0.0/16?"]),
    (MINIMAL.replace("[10.10.0.0/16]", "[10.10.0.0/33]"),
     ["p.yaml:5: zone 'training': '10.10.0.0/33' is not a network ('10.10.0.0/33' does not appear to be an IPv4 "
      "or IPv6 network)"]),
    (MINIMAL.replace("    cidrs: [10.10.0.0/16]\n", ""),
     ["p.yaml:3: zone 'training': cidrs is required (a list of networks)"]),
    (MINIMAL + "  - name: training\n    plane: data\n    cidrs: [10.11.0.0/16]\n",
     ["p.yaml:6: zone 'training' is defined twice (first at line 3)"]),
    (MINIMAL + "  - name: copy\n    plane: data\n    cidrs: [10.10.0.0/16]\n",
     ["p.yaml:6: zone 'copy': 10.10.0.0/16 is also in zone 'training' (line 3): an address can be in one "
      "zone only"]),
    (MINIMAL + "  - name: any\n    plane: data\n    cidrs: [10.11.0.0/16]\n",
     ["p.yaml:6: zone 'any': name must be letters, digits, '_', '-' or '.' (and not 'any')"]),
    (MINIMAL + "rules:\n  - name: r\n    from: trainnig\n    to: training\n",
     ["p.yaml:8: rule 'r': zone 'trainnig' is not defined; did you mean 'training'?"]),
    (MINIMAL + "rules:\n  - name: r\n    from: training\n    to: [training, storage]\n",
     ["p.yaml:9: rule 'r': zone 'storage' is not defined (zones: outside, training)"]),
    (MINIMAL + "rules:\n  - name: r\n    from: training\n    to: training\n    protocols: [trition]\n",
     [f"p.yaml:10: rule 'r': unknown protocol 'trition'; did you mean 'triton'? "
      f"(known: {', '.join(sorted(known_protocols()))})"]),
    (MINIMAL + "rules:\n  - name: r\n    from: [any, training]\n    to: training\n",
     ["p.yaml:8: rule 'r': from lists 'any' with other zones: 'any' alone covers them"]),
    (MINIMAL + "rules:\n  - name: r\n    to: training\n    ports: [0, 70000, 9-8, http]\n",
     ["p.yaml:7: rule 'r': from is required (a zone, a list of zones, or any)",
      "p.yaml:9: rule 'r': 0 is not a port (1-65535) or a range such as 40000-40100",
      "p.yaml:9: rule 'r': 70000 is not a port (1-65535) or a range such as 40000-40100",
      "p.yaml:9: rule 'r': '9-8' is not a port (1-65535) or a range such as 40000-40100",
      "p.yaml:9: rule 'r': 'http' is not a port (1-65535) or a range such as 40000-40100"]),
    (MINIMAL + "rules:\n  - name: r\n    from: training\n    to: training\n    action: block\n    via: x\n",
     ["p.yaml:10: rule 'r': action must be allow or deny, not 'block'",
      "p.yaml:11: unknown key 'via' in a rule (expected: name, from, to, protocols, ports, action, description)"]),
    (MINIMAL + "rules:\n  - {name: r, from: training, to: training}\n  - {name: r, from: training, to: any}\n",
     ["p.yaml:8: rule 'r' is defined twice (first at line 7)"]),
    (MINIMAL + "rules:\n  - {name: r, from: training, to: nope}\n  - {name: r, from: training, to: any}\n",
     ["p.yaml:7: rule 'r': zone 'nope' is not defined (zones: outside, training)",
      "p.yaml:8: rule 'r' is defined twice (first at line 7)"]),  # told even when the first has errors
    (MINIMAL + "default: allow\n", ["p.yaml:6: duplicate key 'default' (first at line 1)"]),
    ("- just\n- a list\n", ["p.yaml:1: a policy is a mapping with default:, zones: and rules:"]),
    ("", ["p.yaml: empty file"]),
    ("default: [\n", ["p.yaml:2: YAML syntax error: while parsing a flow node did not find expected node content"]),
])
def test_invalid_policies_report_every_problem_with_its_line(text, expected):
    assert errors_of(text) == expected


def test_missing_file_is_an_error_not_an_exception(tmp_path):
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(tmp_path / "nope.yaml")
    assert str(raised.value.errors[0]).startswith(f"{tmp_path / 'nope.yaml'}: cannot read:")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mangled_policies_fail_with_located_errors_never_an_exception(data):
    """Property: whatever a mangled policy holds, loading it returns a Policy or raises
    PolicyLoadError whose every error has the file name."""
    text = docs_example()
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    replacement = data.draw(st.text(alphabet=st.sampled_from(list("ab1:-[]{},/ \n'\"&*!")), max_size=12))
    mangled = text[:start] + replacement + text[end:]
    try:
        load_policy_text(mangled, "m.yaml")
    except PolicyLoadError as exc:
        assert exc.errors and all(str(e).startswith("m.yaml") for e in exc.errors)
