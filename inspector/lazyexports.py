"""A package's public names imported on first use (PEP 562), not when the package is.

The field catalogue (inspector/fields.py) imports every module that declares fields, among them
`inspector.policy.fields` and `inspector.anomaly.fields`; importing those runs their package's
`__init__`, which re-exports the package's API. Done eagerly, that loaded the policy loader and
monitor and the anomaly baseline into every `inspector analyze` (about 25 ms of its start-up,
benchmarks/README.md) whether or not it was given a policy or a baseline. A package whose
`__init__` sets `__getattr__ = lazy_exports(__name__, {...})` imports each name's module when
the name is first asked for (`from inspector.policy import load_policy` still works), and keeps
it as an ordinary attribute from then on.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` for `package`: each name in `exports` (name -> module that
    defines it) imported from its module at first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
