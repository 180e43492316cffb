"""A compiled rule and a loaded rule set: what the engine runs and the CLI lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from inspector.rules.config import Config
from inspector.rules.errors import RuleError
from inspector.rules.hints import IndexHint
from inspector.rules.rate import RateSpec

LEVELS = ("informational", "low", "medium", "high", "critical")
STATUSES = ("stable", "test", "experimental", "deprecated")
ACTIONS = ("alert", "block")

#: Rule level -> EVE alert.severity, Suricata-like: 1 is the most severe, 4 the least
#: (classification.config priorities run 1..4). `informational` shares 4 with `low`;
#: alert.metadata.level keeps the exact level.
SEVERITY = {"critical": 1, "high": 2, "medium": 3, "low": 4, "informational": 4}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One validated, compiled rule."""

    sid: int
    id: str
    rev: int
    title: str
    status: str
    level: str
    events: tuple[str, ...]
    action: str
    #: EVE alert.category: the rule's `category:` or "<events> <level>" (e.g. "triton critical").
    category: str
    condition: str
    description: str = ""
    author: str = ""
    date: str = ""
    modified: str = ""
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    rate: RateSpec | None = None
    file: str = ""
    line: int = 0
    #: The compiled detection: record -> bool.
    match: Callable[[dict], bool] = field(repr=False, compare=False)
    #: Necessary conditions of the detection, for the engine's index (see inspector.rules.dispatch).
    hints: tuple[IndexHint, ...] = field(default=(), repr=False, compare=False)
    #: The fields the detection and the rate key read; None: not known (a rule not built by the
    #: loader), to be taken as any field.
    fields: frozenset[str] | None = field(default=None, repr=False, compare=False)

    @property
    def severity(self) -> int:
        return SEVERITY[self.level]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules that loaded together (sorted by sid) and the config they were resolved with.

    `warnings` are problems that do not stop the set from loading (a `--rules` directory holding
    no rule, a suppression for a sid no rule has), for the commands to print."""

    rules: tuple[Rule, ...]
    config: Config = field(default_factory=Config)
    warnings: tuple[RuleError, ...] = ()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def by_sid(self, sid: int) -> Rule | None:
        for rule in self.rules:
            if rule.sid == sid:
                return rule
        return None
