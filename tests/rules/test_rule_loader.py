"""Loading rule sets and configs: every error with its file and line; all or nothing."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from inspector import fields
from inspector.rules import (
    Config,
    RuleError,
    RuleLoadError,
    fields_table,
    load_config,
    load_rules,
    rules_table,
    validate_paths,
)

GOOD = """\
title: Triton log file redirected
id: 9a1e6a8e-0000-4000-8000-000000000001
sid: 3100001
rev: 2
status: stable
level: critical
description: A client asked Triton to write its log somewhere.
tags: [atlas.aml.t0049]
event: triton
detection:
  selection:
    triton.api: log_settings
    triton.log_settings.log_file|exists: true
  filter_admin:
    src_ip|cidr: $ADMIN_NETS
  condition: selection and not filter_admin
action: block
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def good(sid: int, uid: int) -> str:
    return GOOD.replace("3100001", str(sid)).replace("000000000001", f"{uid:012d}")


def errors_of(paths, config: Config | None = None) -> list[RuleError]:
    with pytest.raises(RuleLoadError) as info:
        load_rules(paths, config or Config(variables={"ADMIN_NETS": []}))
    return list(info.value.errors)


def located(errors: list[RuleError]) -> list[tuple[str, int, str]]:
    return [(Path(e.file).name, e.line, e.message) for e in errors]


def test_loads_a_directory_recursively_sorted_by_sid(catalog, tmp_path):
    write(tmp_path, "b/second.yml", good(3100002, 2))
    write(tmp_path, "a/first.yaml", good(3100001, 1))
    write(tmp_path, "notes.txt", "not a rule")
    ruleset = load_rules(tmp_path, Config(variables={"ADMIN_NETS": ["10.0.0.0/8"]}))
    assert [r.sid for r in ruleset] == [3100001, 3100002]
    assert [Path(r.file).name for r in ruleset] == ["first.yaml", "second.yml"]
    assert rules_table(ruleset)[0] == {"sid": 3100001, "title": "Triton log file redirected", "level": "critical",
                                       "event": "triton", "action": "block", "rate": "",
                                       "file": str(tmp_path / "a/first.yaml")}


def test_a_rule_knows_the_fields_its_detection_and_rate_key_read(catalog, tmp_path):
    write(tmp_path, "a.yml", good(3100001, 1))
    write(tmp_path, "b.yml", """\
        title: Many inferences of one model
        id: 9a1e6a8e-0000-4000-8000-000000000002
        sid: 3100002
        status: test
        level: low
        event: triton
        detection:
          calls:
            - triton.api: infer
            - http.url|startswith: /v2/models/
          condition: calls
        rate:
          by: [src_ip, triton.model]
          count: 3
          window: 60s
        """)
    first, second = load_rules(tmp_path, Config(variables={"ADMIN_NETS": ["10.0.0.0/8"]}))
    assert first.fields == {"triton.api", "triton.log_settings.log_file", "src_ip"}
    assert second.fields == {"triton.api", "http.url", "src_ip", "triton.model"}


def test_a_configmap_volume_is_read_once_and_hidden_files_are_skipped(catalog, tmp_path):
    """A Kubernetes ConfigMap volume: the files live in `..<timestamp>/`, `..data` points there and
    each file is a symlink at the top. Each rule is read once; editors' hidden files are skipped."""
    version = tmp_path / "..2026_11_26_01_00_00.123456789"
    write(version, "triton_first.yml", good(3100001, 1))
    write(version, "triton_second.yml", good(3100002, 2))
    (tmp_path / "..data").symlink_to(version.name)
    for name in ("triton_first.yml", "triton_second.yml"):
        (tmp_path / name).symlink_to(Path("..data") / name)
    write(tmp_path, ".triton_first.yml.swp", "not: [a rule")
    ruleset = load_rules(tmp_path, Config(variables={"ADMIN_NETS": ["10.0.0.0/8"]}))
    assert [r.sid for r in ruleset] == [3100001, 3100002]
    assert [Path(r.file).name for r in ruleset] == ["triton_first.yml", "triton_second.yml"]
    assert all("..data" not in r.file and "..2026" not in r.file for r in ruleset)  # named as mounted


def test_errors_carry_file_and_line(catalog, tmp_path):
    path = write(tmp_path, "bad.yml", """\
        title: Bad rule
        id: 9a1e6a8e-0000-4000-8000-00000000000b
        sid: 3100009
        status: stable
        level: critical
        event: triton
        priority: 5
        detection:
          selection:
            triton.api: log_settings
            triton.modle: resnet
            http.url|re:
              - ok
              - "(broken"
          filter:
            src_ip|cidr: [10.0.0.0/8, $NOPE]
          condition: selection and not filtr
        rate:
          count: 10
          window: 10 minutes
        """)
    assert located(errors_of(path)) == [
        ("bad.yml", 7, "unknown key 'priority'"),
        ("bad.yml", 11, "unknown field 'triton.modle' (did you mean 'triton.model'?); `inspector fields` lists them"),
        ("bad.yml", 14, "http.url|re: bad regular expression '(broken': missing ), unterminated subpattern "
                        "at position 0"),
        ("bad.yml", 16, "unknown variable $NOPE; define it under vars: in the config"),
        ("bad.yml", 17, "condition: unknown selection 'filtr' (selections: selection, filter) (at character 19)"),
        ("bad.yml", 20, "rate window '10 minutes' is not a duration like 60s, 5m, 1h (or seconds)"),
    ]
    assert str(errors_of(path)[0]) == f"{path}:7: unknown key 'priority'"


def test_yaml_problems_have_lines(catalog, tmp_path):
    syntax = write(tmp_path, "syntax.yml", "title: x\ndetection:\n  sel: [a, b\n  condition: sel\n")
    dup = write(tmp_path, "dup.yml", good(3100001, 1) + "level: low\n")
    empty = write(tmp_path, "empty.yml", "# nothing\n")
    two = write(tmp_path, "two.yml", "a: 1\n---\nb: 2\n")
    listed = write(tmp_path, "list.yml", "- title: x\n")
    got = {name: (line, message) for name, line, message in located(errors_of([syntax, dup, empty, two, listed]))}
    assert got["syntax.yml"][0] == 4 and got["syntax.yml"][1].startswith("YAML syntax error")
    assert got["dup.yml"] == (18, "duplicate key 'level' (first at line 6)")
    assert got["empty.yml"] == (0, "empty file")
    assert got["two.yml"][0] == 2 and "expected a single document" in got["two.yml"][1]
    assert got["list.yml"] == (1, "a rule file holds one map (title:, id:, sid:, ...)")


def test_not_utf8_and_missing_path(catalog, tmp_path):
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"title: \xff\xfe\n")
    got = {name: (line, message) for name, line, message in located(errors_of([binary, tmp_path / "absent"]))}
    assert got["bin.yml"][0] == 0 and got["bin.yml"][1].startswith("not UTF-8 text")
    assert got["absent"] == (0, "no such file or directory")


def test_duplicate_sid_and_id_across_files(catalog, tmp_path):
    write(tmp_path, "a.yml", good(3100001, 1))
    write(tmp_path, "b.yml", good(3100001, 2))
    write(tmp_path, "c.yml", good(3100003, 1))
    assert located(errors_of(tmp_path)) == [
        ("b.yml", 3, f"duplicate sid 3100001 (also in {tmp_path / 'a.yml'}:3)"),
        ("c.yml", 2, f"duplicate id 9a1e6a8e-0000-4000-8000-000000000001 (also in {tmp_path / 'a.yml'}:2)"),
    ]


def test_broken_set_never_half_loads(catalog, tmp_path):
    write(tmp_path, "a_good.yml", good(3100001, 1))
    write(tmp_path, "b_bad.yml", good(3100002, 2).replace("level: critical", "level: severe"))
    with pytest.raises(RuleLoadError) as info:
        load_rules(tmp_path, Config(variables={"ADMIN_NETS": []}))
    assert located(list(info.value.errors)) == [
        ("b_bad.yml", 6, "level must be one of informational, low, medium, high, critical; got 'severe'")]
    assert "1 error in rules:" in str(info.value)


def test_unknown_variable_without_config_vars(catalog, tmp_path):
    path = write(tmp_path, "r.yml", good(3100001, 1))
    assert located(errors_of(path, Config())) == [
        ("r.yml", 15, "unknown variable $ADMIN_NETS; define it under vars: in the config")]


def test_default_config_defines_documented_variables(catalog):
    config = load_config()
    assert config.variables["ADMIN_NETS"] == []
    assert config.variables["MAX_TENSOR_ELEMENTS"] == 100000000
    assert config.rate_max_keys == 100_000
    text = Path(fields.__file__).parent.joinpath("data", "default-config.yaml").read_text()
    for name in config.variables:  # every variable has a comment block above it
        before = text.split(f"  {name}:")[0].rstrip().splitlines()
        assert before[-1].lstrip().startswith("#") or before[-1].lstrip().startswith(tuple(config.variables)), name


def test_site_config_overlays_defaults(catalog, tmp_path):
    site = write(tmp_path, "site.yaml", """\
        vars:
          ADMIN_NETS: [10.9.0.0/16]
          MY_MODELS: [resnet50]
        suppress:
          - sid: 3100001
            src_ip: 10.9.1.0/24
            reason: jump host
        engine:
          rate_max_keys: 50
        """)
    config = load_config(site)
    assert config.variables["ADMIN_NETS"] == ["10.9.0.0/16"]
    assert config.variables["MY_MODELS"] == ["resnet50"]
    assert config.variables["TRAINING_NETS"] == []
    assert config.rate_max_keys == 50
    assert len(config.suppressions) == 1
    assert config.suppressions.silences(3100001, {"src_ip": "10.9.1.7"})
    assert not config.suppressions.silences(3100001, {"src_ip": "10.9.2.7"})
    assert not config.suppressions.silences(3100002, {"src_ip": "10.9.1.7"})


def test_config_errors_have_lines(catalog, tmp_path):
    site = write(tmp_path, "site.yaml", """\
        vars:
          GOOD: [a]
          bad-name: 1
          NESTED: [[a]]
          NOTHING:
        suppress:
          - sid: 0
          - sid: 5
            src_ip: 10.0.0.0/40
          - sid: 6
            http.uri: /x
          - src_ip: 10.0.0.1
        engine:
          rate_max_keys: 0
          shards: 2
        extra: 1
        """)
    with pytest.raises(RuleLoadError) as info:
        load_config(site)
    assert [(e.line, e.message) for e in info.value.errors] == [
        (16, "unknown config key 'extra' (known: vars, suppress, engine, egress)"),
        (3, "bad variable name 'bad-name' (letters, digits, _)"),
        (4, "$NESTED: list items must be strings or numbers"),
        (5, "$NOTHING: a variable is a scalar or a list, not null (use [] for an empty list)"),
        (14, "rate_max_keys must be a positive integer, got 0"),
        (15, "unknown engine setting 'shards' (known: rate_max_keys)"),
        (7, "sid must be a positive integer or a list of them, got 0"),
        (9, "src_ip|cidr: bad CIDR '10.0.0.0/40': '10.0.0.0/40' does not appear to be an IPv4 or IPv6 network"),
        (11, "unknown field 'http.uri' (did you mean 'http.url'?); `inspector fields` lists them"),
        (12, "suppress entry without sid"),
    ]
    assert {Path(e.file).name for e in info.value.errors} == {"site.yaml"}


def test_validate_paths_reports_config_then_rules(catalog, tmp_path):
    rules = write(tmp_path, "rules/r.yml", good(3100001, 1).replace("triton.api", "triton.apii"))
    assert [(Path(e.file).name, e.line) for e in validate_paths(rules.parent)] == [("r.yml", 12)]
    broken = write(tmp_path, "site.yaml", "vars: 5\n")
    assert [(Path(e.file).name, e.line, e.message) for e in validate_paths(rules.parent, broken)] == [
        ("site.yaml", 1, "vars: must be a map of NAME: value")]
    write(tmp_path, "rules/r.yml", good(3100001, 1))
    assert validate_paths(rules.parent) == []


def test_fields_table_lists_the_catalogue(catalog):
    rows = fields_table()
    assert rows[0] == {"name": "anomaly.event", "type": "string", "events": "anomaly", "description": "Anomaly name"}
    assert {"name": "src_ip", "type": "ip", "events": "*", "description": "Client address"} in rows
    assert len(rows) == len(catalog)
    triton = {row["name"].split(".")[0] for row in fields_table(event="triton")}
    assert triton == {"triton", "grpc", "http", "timestamp", "event_type", "flow_id", "community_id", "src_ip",
                      "src_port", "dest_ip", "dest_port", "proto", "app_proto"}
    assert {row["name"].split(".")[0] for row in fields_table(event="grpc")} == triton - {"triton"}


def test_isolated_catalogue_restores_the_real_one(catalog):
    fields.declare("testonly", [("testonly.x", "string", "scratch")])
    assert "testonly.x" in fields.catalogue()


def test_isolated_catalogue_left_nothing_behind():
    assert "testonly.x" not in fields._CATALOGUE


@pytest.mark.skipif(importlib.util.find_spec("inspector.records") is None
                    or importlib.util.find_spec("inspector.protocols.http") is None,
                    reason="the real field catalogue needs inspector.records and inspector.protocols.http")
def test_rule_over_real_catalogue(tmp_path):
    path = write(tmp_path, "r.yml", """\
        title: Model repository control from outside the admin networks
        id: 9a1e6a8e-0000-4000-8000-0000000000aa
        sid: 3100100
        status: test
        level: high
        event: http
        detection:
          selection:
            http.http_method: POST
            http.url|startswith: /v2/repository/
          condition: selection
        """)
    ruleset = load_rules(path)
    assert [r.sid for r in ruleset] == [3100100]


def test_a_bad_value_in_a_site_variable_is_the_config_lines_error(catalog, tmp_path):
    """`ADMIN_NETS: [10.0.0.0/33]` is the site config's mistake: the error is at its line and names
    the variable, and the rule line using it; each item of a block list has its own line."""
    site = write(tmp_path, "site.yaml", """\
        vars:
          ADMIN_NETS:
            - 10.0.0.0/8
            - 10.0.0.0/33
          SCANNER: [10.1.0.0/99]
        """)
    rule = write(tmp_path, "rules/r.yml", good(3100001, 1))
    assert located(errors_of(rule.parent, load_config(site))) == [
        ("site.yaml", 4, f"$ADMIN_NETS: src_ip|cidr: bad CIDR '10.0.0.0/33': '10.0.0.0/33' does not appear to be "
                         f"an IPv4 or IPv6 network (used at {rule}:15)")]
    assert located(errors_of(rule.parent, Config(variables={"ADMIN_NETS": ["nope"]}))) == [
        ("r.yml", 15, "src_ip|cidr: bad CIDR 'nope': 'nope' does not appear to be an IPv4 or IPv6 network "
                      "(from $ADMIN_NETS)")]  # a config built in code has no lines to point at


def test_a_bad_rate_count_from_a_site_variable_is_the_config_lines_error(catalog, tmp_path):
    site = write(tmp_path, "site.yaml", 'vars:\n  ADMIN_NETS: []\n  FLOOD: "ten"\n')
    rule = write(tmp_path, "rules/r.yml", good(3100001, 1) + "rate:\n  count: $FLOOD\n  window: 1m\n")
    assert located(errors_of(rule.parent, load_config(site))) == [
        ("site.yaml", 3, f"$FLOOD: rate count must be an integer from 1 to 1000000, got '$FLOOD' ($FLOOD is 'ten') "
                         f"(used at {rule}:19)")]


def test_a_timestamp_shaped_variable_is_a_string(catalog, tmp_path):
    site = write(tmp_path, "site.yaml", "vars:\n  RELEASE: 2026-02-30\n  WHEN: 2026-01-02\n")
    assert {k: v for k, v in load_config(site).variables.items() if k in ("RELEASE", "WHEN")} == {
        "RELEASE": "2026-02-30", "WHEN": "2026-01-02"}


def test_a_suppression_for_a_sid_no_rule_has_is_a_warning(catalog, tmp_path):
    """A site config serves several rule sets: the set loads, the entry is reported at its line."""
    site = write(tmp_path, "site.yaml", """\
        suppress:
          - sid: 3100001
            src_ip: 10.9.1.0/24
          - sid: [3100001, 9999999]
            reason: typo
        """)
    rule = write(tmp_path, "rules/r.yml", good(3100001, 1))
    ruleset = load_rules(rule.parent, load_config(site))
    assert [r.sid for r in ruleset] == [3100001]
    assert located(list(ruleset.warnings)) == [
        ("site.yaml", 4, "suppress: no loaded rule has sid 9999999 (1 rule(s) loaded); the entry silences nothing "
                         "for it")]


def test_a_rules_directory_without_rules_is_a_warning_and_upper_case_suffixes_load(catalog, tmp_path):
    write(tmp_path, "rules/A.YML", good(3100001, 1))
    write(tmp_path, "rules/sub/B.Yaml", good(3100002, 2))
    write(tmp_path, "empty/notes.txt", "no rules here")
    ruleset = load_rules([tmp_path / "rules", tmp_path / "empty"], Config(variables={"ADMIN_NETS": []}))
    assert [r.sid for r in ruleset] == [3100001, 3100002]
    assert [(w.file, w.line, w.message) for w in ruleset.warnings] == [
        (str(tmp_path / "empty"), 0, "no rule files (*.yml, *.yaml) in this directory: it adds no rule")]


def test_analyze_says_how_many_rules_ran_and_warns_about_an_empty_rules_directory(tmp_path):
    import subprocess
    import sys

    (tmp_path / "rules").mkdir()
    capture = Path(__file__).resolve().parents[2] / "pcaps" / "core" / "http1.pcap"
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", str(capture), "--rules",
                           str(tmp_path / "rules"), "--eve", str(tmp_path / "eve.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'rules'}: warning: no rule files" in done.stderr
    assert [line.split() for line in done.stdout.splitlines() if "│ rules " in line] == [["│", "rules", "│", "0", "│"]]
