"""Conditions: Sigma precedence, parentheses, `x of`, errors; property tests against Python's eval."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.rules.condition import (
    compile_condition,
    parse_condition,
    referenced_names,
    required_names,
    resolve,
)
from inspector.rules.errors import ConditionError

NAMES = ["sel_a", "sel_b", "filter_x", "filter_y", "_helper"]


def evaluate(text: str, truth: dict[str, bool]) -> bool:
    """Compile `text` over selections that return fixed truth values, and run it."""
    selections = {name: (lambda _record, value=value: value) for name, value in truth.items()}
    tree = resolve(parse_condition(text), list(truth))
    return compile_condition(tree, selections)(None)


def all_assignments(names=NAMES):
    for values in itertools.product([False, True], repeat=len(names)):
        yield dict(zip(names, values))


@pytest.mark.parametrize(("condition", "python"), [
    ("sel_a or sel_b and filter_x", "sel_a or (sel_b and filter_x)"),  # and binds tighter than or
    ("not sel_a and sel_b", "(not sel_a) and sel_b"),  # not binds tighter than and
    ("not sel_a or sel_b", "(not sel_a) or sel_b"),
    ("not (sel_a or sel_b)", "not (sel_a or sel_b)"),
    ("(sel_a or sel_b) and not filter_x", "(sel_a or sel_b) and not filter_x"),
    ("not not sel_a", "sel_a"),
    ("((sel_a))", "sel_a"),
    ("1 of sel_* and not 1 of filter_*", "(sel_a or sel_b) and not (filter_x or filter_y)"),
    ("all of sel_* or filter_x", "(sel_a and sel_b) or filter_x"),
    ("not 1 of filter_* and sel_a", "(not (filter_x or filter_y)) and sel_a"),  # x of binds tighter than not
    ("1 of them", "sel_a or sel_b or filter_x or filter_y"),  # _helper is left out of them
    ("all of them", "sel_a and sel_b and filter_x and filter_y"),
    ("1 of *", "sel_a or sel_b or filter_x or filter_y or _helper"),
    ("1 of sel_a", "sel_a"),
    ("all of *_x and _helper", "filter_x and _helper"),
    ("sel_a and sel_b or filter_x and filter_y", "(sel_a and sel_b) or (filter_x and filter_y)"),
])
def test_precedence_and_quantifiers(condition, python):
    for truth in all_assignments():
        assert evaluate(condition, truth) is eval(python, {}, dict(truth)), (condition, truth)


@pytest.mark.parametrize(("condition", "message", "position"), [
    ("", "empty condition", 0),
    ("sel_a and", "condition ends where a selection was expected", 9),
    ("sel_a sel_b", "unexpected 'sel_b': expected 'and', 'or' or the end", 6),
    ("(sel_a or sel_b", "missing ')' for '(' at character 1, found the end", 15),
    ("sel_a)", "unexpected ')': expected 'and', 'or' or the end", 5),
    ("sel_a AND sel_b", "keywords are lower-case: write 'and', not 'AND'", 6),
    ("sel_a && sel_b", "unexpected character '&'", 6),
    ("2 of sel_*", "'2 of' is not supported: use '1 of' or 'all of'", 0),
    ("1 sel_a", "expected 'of' after '1', found 'sel_a'", 2),
    ("1 of (sel_a)", "expected 'them' or a selection pattern after 'of', found '('", 5),
    ("sel_*", "wildcard 'sel_*' needs '1 of' or 'all of' before it", 0),
    ("and sel_a", "unexpected 'and': expected a selection name", 0),
    ("sel_a or nope", "unknown selection 'nope'", 9),
    ("1 of nope_*", "'nope_*' matches no selection", 0),
])
def test_condition_errors(condition, message, position):
    with pytest.raises(ConditionError) as info:
        resolve(parse_condition(condition), NAMES)
    assert message in str(info.value)
    assert info.value.position == position


def test_them_without_public_selections():
    with pytest.raises(ConditionError, match="'of them' but no selection"):
        resolve(parse_condition("1 of them"), ["_only_helper"])


def test_depth_and_length_are_capped():
    with pytest.raises(ConditionError, match="nested deeper than 100"):
        parse_condition("(" * 150 + "sel_a" + ")" * 150)
    with pytest.raises(ConditionError, match="longer than 4096"):
        parse_condition("sel_a or " * 600 + "sel_a")
    with pytest.raises(ConditionError, match="must be a string"):
        parse_condition(5)  # type: ignore[arg-type]


def test_referenced_and_required_names():
    tree = resolve(parse_condition("sel_a and (sel_b or filter_x) and not filter_y"), NAMES)
    assert referenced_names(tree) == {"sel_a", "sel_b", "filter_x", "filter_y"}
    assert required_names(tree) == {"sel_a"}
    assert required_names(resolve(parse_condition("all of sel_*"), NAMES)) == {"sel_a", "sel_b"}
    assert required_names(resolve(parse_condition("(sel_a and sel_b) or (sel_a and filter_x)"), NAMES)) == {"sel_a"}
    assert required_names(resolve(parse_condition("not sel_a"), NAMES)) == set()


# --------------------------------------------------------------------------- property tests

SHORT = ["sel_a", "sel_b", "filter_x", "filter_y"]
QUANTIFIED = {  # condition text -> the Python expression it stands for
    "1 of sel_*": "(sel_a or sel_b)",
    "all of sel_*": "(sel_a and sel_b)",
    "1 of filter_*": "(filter_x or filter_y)",
    "all of filter_*": "(filter_x and filter_y)",
    "1 of them": "(sel_a or sel_b or filter_x or filter_y)",
    "all of them": "(sel_a and sel_b and filter_x and filter_y)",
}


def conditions(max_leaves: int = 12) -> st.SearchStrategy[str]:
    """Well-formed condition strings, parenthesized only sometimes (precedence must carry them)."""
    leaf = st.sampled_from(SHORT + list(QUANTIFIED))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda a: f"not {a}", inner),
            st.builds(lambda a, b: f"{a} and {b}", inner, inner),
            st.builds(lambda a, b: f"{a} or {b}", inner, inner),
            st.builds(lambda a: f"({a})", inner),
            st.builds(lambda a: f"( {a} )", inner),
        ),
        max_leaves=max_leaves,
    )


def as_python(condition: str) -> str:
    """The same boolean expression for Python (whose and/or/not precedence is Sigma's)."""
    pattern = "|".join(re.escape(k) for k in sorted(QUANTIFIED, key=len, reverse=True))
    return re.sub(pattern, lambda m: QUANTIFIED[m.group(0)], condition)


@settings(max_examples=400, deadline=None)
@given(conditions(), st.lists(st.booleans(), min_size=5, max_size=5))
def test_compiled_condition_equals_python_eval(condition, values):
    truth = dict(zip([*SHORT, "_helper"], values))
    python = as_python(condition)
    expected = eval(python, {"__builtins__": {}}, dict(truth))
    assert evaluate(condition, truth) is expected, (condition, python, truth)


TOKENS = ["sel_a", "sel_b", "filter_x", "and", "or", "not", "(", ")", "1", "all", "of", "them", "sel_*",
          "2", "AND", "*", "_helper", "nope", "&", "|", "'", "\t", "é", ""]


@settings(max_examples=600, deadline=None)
@given(st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    st.text(max_size=40),
))
def test_garbage_raises_only_condition_error(text):
    truth = {name: False for name in NAMES}
    try:
        result = evaluate(text, truth)
    except ConditionError:
        return
    assert isinstance(result, bool)
