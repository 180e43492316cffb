"""Load a rule set from files and directories: all of it, or nothing and every error.

`load_rules(paths, config)` reads each file (directories recursively, `*.yml` / `*.yaml` in
any case), validates and compiles every rule, then checks the set as a whole (duplicate ids and
sids). A set with any problem raises RuleLoadError listing them all, with file and line: a
broken set never half-loads, so a typo can't silently drop a rule from a running sensor.

What does not stop a set from loading but is probably a mistake comes back as the set's
`warnings`: a directory given that holds no rule file, and a suppression for a sid no rule of
the set has (a site config is shared across rule sets, so that is not an error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from inspector import fields
from inspector.fields import FieldSpec
from inspector.rules.config import Config, load_config
from inspector.rules.errors import RuleError, RuleLoadError
from inspector.rules.layers import known_event_types
from inspector.rules.model import Rule, RuleSet
from inspector.rules.schema import build_rule
from inspector.rules.yamlsource import load_yaml_file

RULE_SUFFIXES = (".yml", ".yaml")

#: YAML files a rule directory may hold that are not rules (the pack's list of known alerts of
#: the benign baseline, signatures/known-false-positives.yaml). Named explicitly, they are
#: still loaded as rules.
NOT_RULE_FILES = frozenset({"known-false-positives.yaml"})

PathArg = str | Path | Iterable[str | Path]


def rule_files(paths: PathArg, empty: list[str | Path] | None = None) -> tuple[list[Path], list[RuleError]]:
    """The rule files under `paths` (sorted per directory), and the paths that do not exist;
    directories that hold no rule file are added to `empty` when it is given.

    In a directory, hidden files and directories are skipped: editors' temporary files, and the
    `..data` / `..<timestamp>` directories a Kubernetes ConfigMap volume keeps its files in
    (each file is also there as a symlink at the top). A file reached twice (a symlink and its
    target) is read once."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    errors: list[RuleError] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in RULE_SUFFIXES and p.name not in NOT_RULE_FILES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and p.is_file())
            if not found and empty is not None:
                empty.append(entry)  # as given
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleError(str(path), 0, "no such file or directory"))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values()), errors


def load_rules(paths: PathArg, config: Config | None = None, *,
               catalogue: Mapping[str, FieldSpec] | None = None) -> RuleSet:
    """Every rule under `paths`, compiled, sorted by sid; RuleLoadError lists all problems.

    `config` gives the variables (default: the shipped default config); `catalogue` the known
    fields (default: inspector.fields.catalogue()).
    """
    if catalogue is None:
        catalogue = fields.catalogue()
    if config is None:
        config = load_config(catalogue=catalogue)
    if isinstance(paths, str | Path):
        paths = [paths]
    paths = list(paths)
    empty: list[str | Path] = []
    files, errors = rule_files(paths, empty)
    known_events = known_event_types(catalogue)
    rules: list[Rule] = []
    for file in files:
        doc, problems = load_yaml_file(file)
        if problems:
            errors.extend(problems)
            continue
        rule, problems = build_rule(doc, str(file), catalogue=catalogue, variables=config.variables,
                                    known_events=known_events, variable_sources=config.variable_sources)
        errors.extend(problems)
        if rule is not None:
            rules.append(rule)
    errors.extend(_duplicates(rules))
    if errors:
        raise RuleLoadError(errors)
    warnings = _empty_directories(empty) + _unknown_suppressed_sids(config, rules)
    return RuleSet(tuple(sorted(rules, key=lambda r: r.sid)), config, tuple(warnings))


def _empty_directories(directories: list[str | Path]) -> list[RuleError]:
    """A warning for each directory given that holds no rule file (a wrong path runs no rule)."""
    return [RuleError(str(path), 0, f"no rule files ({', '.join('*' + s for s in RULE_SUFFIXES)}) in this "
                                    "directory: it adds no rule")
            for path in directories]


def _unknown_suppressed_sids(config: Config, rules: list[Rule]) -> list[RuleError]:
    """A warning for each suppressed sid no rule of the set has (a typo silences nothing)."""
    sids = {rule.sid for rule in rules}
    return [RuleError(entry.file, entry.line, f"suppress: no loaded rule has sid {sid} "
                                              f"({len(rules)} rule(s) loaded); the entry silences nothing for it")
            for entry in config.suppressions.entries for sid in entry.sids if sid not in sids]


def _duplicates(rules: list[Rule]) -> list[RuleError]:
    errors = []
    seen_sids: dict[int, Rule] = {}
    seen_ids: dict[str, Rule] = {}
    for rule in rules:
        first = seen_sids.setdefault(rule.sid, rule)
        if first is not rule:
            where = f"{first.file}:{_key_line(first, 'sid')}"
            message = f"duplicate sid {rule.sid} (also in {where})"
            errors.append(RuleError(rule.file, _key_line(rule, "sid"), message))
        first = seen_ids.setdefault(rule.id, rule)
        if first is not rule:
            where = f"{first.file}:{_key_line(first, 'id')}"
            message = f"duplicate id {rule.id} (also in {where})"
            errors.append(RuleError(rule.file, _key_line(rule, "id"), message))
    return errors


def _key_line(rule: Rule, key: str) -> int:
    """The line of a top-level key in the rule's file (re-read: duplicates are rare)."""
    doc, _ = load_yaml_file(rule.file)
    if isinstance(doc, dict) and hasattr(doc, "line_of"):
        return doc.line_of(key)
    return rule.line


def validate_paths(paths: PathArg, config_path: str | Path | None = None, *,
                   catalogue: Mapping[str, FieldSpec] | None = None) -> list[RuleError]:
    """Every problem in the config and the rules under `paths`; empty when all is well.

    For `inspector rules validate`. When the config itself does not load, its errors are
    returned alone (the rules could not be checked against its variables).
    """
    if catalogue is None:
        catalogue = fields.catalogue()
    try:
        config = load_config(config_path, catalogue=catalogue)
    except RuleLoadError as exc:
        return list(exc.errors)
    try:
        load_rules(paths, config, catalogue=catalogue)
    except RuleLoadError as exc:
        return list(exc.errors)
    return []
