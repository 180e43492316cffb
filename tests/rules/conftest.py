"""Fixtures for rule-language tests: an isolated field catalogue and a one-rule compiler."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inspector.rules.errors import RuleLoadError
from inspector.rules.layers import known_event_types
from inspector.rules.model import Rule
from inspector.rules.schema import build_rule
from inspector.rules.testing import isolated_catalogue, rule_document


@pytest.fixture
def catalog() -> Iterator[dict]:
    """The sample catalogue (common, http, grpc, triton, anomaly fields), restored afterwards."""
    with isolated_catalogue() as table:
        yield table


@pytest.fixture
def compile_rule(catalog: dict) -> Callable[..., Rule]:
    """compile_rule(detection, event=..., variables=..., **keys) -> Rule (RuleLoadError if invalid)."""

    def compile_(detection: dict, *, variables: dict | None = None, **keys: Any) -> Rule:
        rule, errors = build_rule(rule_document(detection, **keys), "<test>", catalogue=catalog,
                                  variables=variables or {}, known_events=known_event_types(catalog))
        if errors:
            raise RuleLoadError(errors)
        assert rule is not None
        return rule

    return compile_


@pytest.fixture
def rule_errors(catalog: dict) -> Callable[..., list[str]]:
    """rule_errors(detection, **keys) -> the error messages building that rule gives."""

    def errors_(detection: dict, *, variables: dict | None = None, **keys: Any) -> list[str]:
        _, errors = build_rule(rule_document(detection, **keys), "<test>", catalogue=catalog,
                               variables=variables or {}, known_events=known_event_types(catalog))
        return [e.message for e in errors]

    return errors_
