"""`policy lint`: unreachable and redundant rules, nested and unused zones, risky allows."""

from __future__ import annotations

import json

import pytest
from test_policy_loader import docs_example

from inspector.cli import main
from inspector.policy import load_policy_text
from inspector.policy.lint import lint_policy

ZONES = """\
zones:
  - {name: apps, plane: data, cidrs: [10.50.0.0/16]}
  - {name: inference, plane: data, cidrs: [10.20.0.0/16]}
  - {name: batch, plane: data, cidrs: [10.60.0.0/16]}
  - {name: admin, plane: management, cidrs: [10.99.0.0/24]}
"""


def lint(rules: str, default: str = "deny", zones: str = ZONES) -> list[str]:
    policy = load_policy_text(f"default: {default}\n{zones}rules:\n{rules}", "p.yaml")
    return [str(f) for f in lint_policy(policy) if f.code != "unused-zone"]


def test_the_documented_example_is_clean():
    assert lint_policy(load_policy_text(docs_example(), "docs/policy.md")) == []


def test_a_rule_after_a_broader_rule_of_the_other_action_never_applies():
    assert lint("  - {name: no-mgmt, action: deny, from: any, to: inference, ports: [8081]}\n"
                "  - {name: apps-mgmt, from: apps, to: inference, protocols: [torchserve], ports: [8081]}\n") == [
        "p.yaml:9: error: rule 'apps-mgmt' (apps -> inference torchserve ports 8081) never applies: 'no-mgmt' "
        "decides all its flows first (first match wins) [unreachable-rule]"]


def test_a_rule_covered_by_a_layer_below_is_redundant():
    assert lint("  - {name: web, from: apps, to: inference, protocols: [http]}\n"
                "  - {name: triton, from: apps, to: inference, protocols: [triton, s3]}\n") == [
        "p.yaml:9: warning: rule 'triton' (apps -> inference s3/triton) is redundant: 'web' already allows all its "
        "flows [redundant-rule]"]


def test_coverage_adds_up_across_zones_and_port_ranges():
    assert lint("  - {name: a, from: apps, to: inference, ports: [1000-2000]}\n"
                "  - {name: b, from: batch, to: inference, ports: [1000-3000]}\n"
                "  - {name: c, from: apps, to: inference, ports: [2001-3000]}\n"
                "  - {name: d, from: [apps, batch], to: inference, ports: [1500-2500]}\n") == [
        "p.yaml:11: warning: rule 'd' (apps,batch -> inference ports 1500-2500) is redundant: 'a', 'b', 'c' "
        "already allow all its flows [redundant-rule]"]


@pytest.mark.parametrize("rules", [
    # a port gap
    "  - {name: a, from: apps, to: inference, ports: [1000-2000]}\n"
    "  - {name: d, from: apps, to: inference, ports: [1500-2500]}\n",
    # a zone the earlier rule does not cover
    "  - {name: a, from: apps, to: inference}\n  - {name: d, from: [apps, batch], to: inference}\n",
    # any protocol is more than the earlier rule's protocols
    "  - {name: a, from: apps, to: inference, protocols: [triton, grpc, http]}\n"
    "  - {name: d, from: apps, to: inference}\n",
    # any port is more than every port range
    "  - {name: a, from: apps, to: inference, ports: [1-65535]}\n  - {name: d, from: apps, to: inference}\n",
    # grpc does not cover triton (Triton over REST has no grpc layer)
    "  - {name: a, from: apps, to: inference, protocols: [grpc]}\n"
    "  - {name: d, from: apps, to: inference, protocols: [triton]}\n",
])
def test_rules_that_still_match_some_flow_are_not_reported(rules):
    assert lint(rules) == []


def test_nested_zones_unused_zones_outside_into_management_and_nothing_denied():
    zones = ZONES + "  - {name: jump, plane: management, cidrs: [10.50.7.0/24]}\n"
    policy = load_policy_text(f"default: allow\n{zones}rules:\n"
                              "  - {name: ops, from: [outside, apps], to: [admin, inference]}\n", "p.yaml")
    assert [str(f) for f in lint_policy(policy)] == [
        "p.yaml: warning: default allow and no deny rule: no flow can be a violation [nothing-denied]",
        "p.yaml:5: warning: zone 'batch' is in no rule: only the default (allow) decides its flows [unused-zone]",
        "p.yaml:7: warning: zone 'jump' 10.50.7.0/24 lies inside zone 'apps' 10.50.0.0/16: those addresses are "
        "in 'jump' (longest prefix wins) [nested-zones]",
        "p.yaml:7: warning: zone 'jump' is in no rule: only the default (allow) decides its flows [unused-zone]",
        "p.yaml:9: warning: rule 'ops' allows the unknown-address zone 'outside' into management-plane zone(s) "
        "admin [outside-into-management]"]


def test_lint_command_exit_status_and_output(tmp_path, capsys):
    clean = tmp_path / "clean.yaml"
    clean.write_text(docs_example())
    assert main(["policy", "lint", str(clean)]) == 0
    assert capsys.readouterr().out.strip() == (f"{clean}: policy 'ml-prod', 7 zone(s), 8 rule(s), default deny: "
                                               "0 error(s), 0 warning(s)")

    warned = tmp_path / "warned.yaml"
    warned.write_text(f"default: deny\n{ZONES}rules:\n  - {{name: all, from: any, to: any}}\n"
                      "  - {name: web, from: apps, to: inference, protocols: [http]}\n")
    assert main(["policy", "lint", str(warned)]) == 0
    assert "[redundant-rule]" in capsys.readouterr().out
    assert main(["policy", "lint", str(warned), "--strict"]) == 1
    capsys.readouterr()

    broken = tmp_path / "broken.yaml"
    broken.write_text(f"default: deny\n{ZONES}rules:\n  - {{name: r, from: apps, to: storage}}\n")
    assert main(["policy", "lint", str(broken), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report == {"file": str(broken), "loaded": False, "errors": 1, "warnings": 0, "findings": [
        {"level": "error", "code": "invalid", "file": str(broken), "line": 8,
         "message": "rule 'r': zone 'storage' is not defined (zones: admin, apps, batch, inference, outside)"}]}

    assert main(["policy", "lint", str(tmp_path / "missing.yaml")]) == 2
