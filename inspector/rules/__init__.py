"""The rule language: Sigma-shaped YAML rules over EVE field names, loaded strictly, compiled once.

Theory of operation:

* ``loader`` finds rule files and loads a whole set or nothing (``RuleLoadError`` with every
  problem, file and line); ``yamlsource`` keeps line numbers; ``schema`` validates one rule
  document; ``config`` reads site variables and suppressions.
* ``matchers`` validates each selection and compiles it into small predicates (``predicates``:
  field paths pre-split by ``access``, regexes compiled, constants lower-cased); ``condition``
  parses the condition and composes them; ``hints`` notes the values each match requires.
* ``layers`` says which event types a record carries (a Triton-over-gRPC record also carries
  ``grpc`` and ``http``), for validation and dispatch; ``dispatch`` narrows the rules a record
  is offered (by layer, then an index on values the rules require).
* ``rate`` keeps sliding windows for rate rules; ``suppress`` silences matches per site.
* ``inspector.engine.Engine`` ties them together: record + timestamp in, verdict out.

``tables`` and ``fixtures`` serve the CLI (`inspector rules list|validate|test`, `inspector
fields`); ``testing`` helps tests swap in a sample field catalogue. docs/rules.md is the user's
guide.
"""

from inspector.rules.condition import compile_condition, parse_condition
from inspector.rules.config import Config, load_config
from inspector.rules.errors import ConditionError, RuleError, RuleLoadError
from inspector.rules.fixtures import FixtureResult, run_rule_tests
from inspector.rules.layers import LAYER_PARENTS
from inspector.rules.loader import load_rules, validate_paths
from inspector.rules.model import SEVERITY, Rule, RuleSet
from inspector.rules.rate import MemoryRateStore, RateResult, RateStore
from inspector.rules.suppress import Suppressions
from inspector.rules.tables import fields_table, rules_table

__all__ = [
    "LAYER_PARENTS",
    "SEVERITY",
    "ConditionError",
    "Config",
    "FixtureResult",
    "MemoryRateStore",
    "RateResult",
    "RateStore",
    "Rule",
    "RuleError",
    "RuleLoadError",
    "RuleSet",
    "Suppressions",
    "compile_condition",
    "fields_table",
    "load_config",
    "load_rules",
    "parse_condition",
    "rules_table",
    "run_rule_tests",
    "validate_paths",
]
