"""Rule fixtures in the suricata-verify style: captures, and checks over the EVE they produce.

Each fixture is a folder holding a `test.yaml` (and usually its captures)::

    pcap: positive.pcap              # or a list; paths relative to the folder
    rules: [../../signatures/triton/triton_log_redirect.yml]   # optional: else the given set
    config: site.yaml                # optional site config for these rules
    policy: policy.yaml              # optional segmentation policy (inspector.policy) for the run
    baseline: baseline.json          # optional anomaly baseline (inspector.anomaly) for the run
    egress: true                     # optional: apply the config's egress allowlists (inspector.egress)
    checks:
      - filter: {count: 1, match: {event_type: alert, alert.signature_id: 3100001}}
      - filter: {count: 0, match: {event_type: alert, alert.signature_id: 3100002}}

A filter counts the EVE records whose dotted paths equal the given values (a number segment
indexes a list; a scalar expected where the record holds a list matches an element) and
compares with `count` exactly; `count: 0` is how a negative is written. Running the captures
is the caller's `analyze_fn(pcap_paths, ruleset) -> EVE records` (the offline pipeline), called
with `policy=<path>` / `baseline=<path>` / `egress=True` as well when the fixture asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.rules.config import load_config
from inspector.rules.errors import RuleLoadError
from inspector.rules.loader import load_rules
from inspector.rules.model import RuleSet
from inspector.rules.yamlsource import load_yaml_file

#: `analyze_fn(pcap_paths, ruleset[, policy=path]) -> EVE records`
AnalyzeFn = Callable[..., Iterable[Mapping[str, Any]]]

TEST_FILE = "test.yaml"
_KEYS = ("pcap", "rules", "config", "policy", "baseline", "egress", "checks", "description")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class FixtureResult:
    """One fixture folder: how many checks ran, and why any failed."""

    path: Path
    checks: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def fixture_dirs(root: str | Path) -> list[Path]:
    """Folders under `root` (itself included) that hold a test.yaml, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(TEST_FILE) if p.is_file())


def run_rule_tests(root: str | Path, analyze_fn: AnalyzeFn,
                   ruleset: RuleSet | None = None) -> list[FixtureResult]:
    """Run every fixture under `root`; never raises for a broken fixture (it fails instead)."""
    return [run_fixture(folder, analyze_fn, ruleset) for folder in fixture_dirs(root)]


def run_fixture(folder: Path, analyze_fn: AnalyzeFn, ruleset: RuleSet | None = None) -> FixtureResult:
    spec, problems = load_yaml_file(folder / TEST_FILE)
    if problems:
        return FixtureResult(folder, 0, tuple(str(p) for p in problems))
    if not isinstance(spec, dict):
        return FixtureResult(folder, 0, (f"{TEST_FILE} must be a map with pcap: and checks:",))
    failures = [f"unknown key {key!r} in {TEST_FILE}" for key in spec if key not in _KEYS]
    pcaps = _paths(folder, spec.get("pcap"), "pcap", failures)
    checks = spec.get("checks")
    if not isinstance(checks, list) or not checks:
        failures.append("checks: must be a non-empty list")
        checks = []
    rules = _fixture_rules(folder, spec, ruleset, failures)
    policy = _paths(folder, spec["policy"], "policy", failures) if "policy" in spec else []
    baseline = _paths(folder, spec["baseline"], "baseline", failures) if "baseline" in spec else []
    if failures or rules is None:
        return FixtureResult(folder, 0, tuple(failures))
    options = {"policy": policy[0]} if policy else {}
    if baseline:
        options["baseline"] = baseline[0]
    if spec.get("egress") is True:
        options["egress"] = True
    try:
        records = list(analyze_fn(pcaps, rules, **options))
    except Exception as exc:  # a fixture's failure, not the runner's
        return FixtureResult(folder, 0, (f"analysis failed: {type(exc).__name__}: {exc}",))
    for index, check in enumerate(checks, 1):
        problem = _run_check(check, records)
        if problem:
            failures.append(f"check {index}: {problem}")
    return FixtureResult(folder, len(checks), tuple(failures))


def _paths(folder: Path, value: Any, key: str, failures: list[str]) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    if value is None or not values or not all(isinstance(v, str) for v in values):
        failures.append(f"{key}: must be a file name or a list of them")
        return []
    paths = [(folder / v) for v in values]
    failures.extend(f"{key}: {p} does not exist" for p in paths if not p.exists())
    return paths


def _fixture_rules(folder: Path, spec: dict, ruleset: RuleSet | None, failures: list[str]) -> RuleSet | None:
    if "rules" not in spec:
        if ruleset is None:
            failures.append("no rules: the fixture names none and none were given")
        return ruleset
    paths = _paths(folder, spec["rules"], "rules", failures)
    config_paths = _paths(folder, spec["config"], "config", failures) if "config" in spec else []
    if failures:
        return None
    try:
        config = load_config(config_paths[0]) if config_paths else None
        return load_rules(paths, config)
    except RuleLoadError as exc:
        failures.extend(str(e) for e in exc.errors)
        return None


def _run_check(check: Any, records: list[Mapping[str, Any]]) -> str | None:
    if not isinstance(check, dict) or set(check) != {"filter"} or not isinstance(check["filter"], dict):
        return "a check is {filter: {count: N, match: {...}}}"
    spec = check["filter"]
    count, match = spec.get("count"), spec.get("match", {})
    unknown = set(spec) - {"count", "match"}
    if unknown:
        return f"unknown filter key(s) {', '.join(sorted(map(str, unknown)))}"
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return "filter count: must be an integer >= 0"
    if not isinstance(match, dict):
        return "filter match: must be a map of dotted.path: value"
    found = sum(1 for record in records if all(_matches(record, str(k), v) for k, v in match.items()))
    if found != count:
        return f"expected {count} record(s) matching {dict(match)}, found {found}"
    return None


def _matches(record: Mapping[str, Any], path: str, expected: Any) -> bool:
    value: Any = record
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isascii() and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False
        if value is _MISSING:
            return False
    if _same(value, expected):
        return True
    if isinstance(value, list) and not isinstance(expected, list):
        return any(_same(v, expected) for v in value)
    return False


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return bool(actual == expected)
