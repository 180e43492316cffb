"""inspector.jsonio gives what the standard library's json gives, faster.

Differential: every document is parsed by both, values compared by their repr (so 1 and 1.0,
0.0 and -0.0, an int and a float that equals it are told apart), failures by exception type.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import jsonio

EDGE_DOCUMENTS = [
    b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[0.1,-2.5e-7,3,1e16]}]}',
    b"123456789012345678901234567890",  # past 64 bits: json keeps an int
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" * 4301,  # past the interpreter's digit limit: json raises ValueError
    b'{"a":1,"a":2}',  # duplicate keys: the last wins
    b'"\\ud800"',  # a lone surrogate escape: json accepts it
    b'"\\ud800\\udc00"',
    b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
    b'{"a":"\xff"}',  # invalid UTF-8
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0", b"-0.0", b"0.1e-400", b"1E2",
    b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
    '{"a": 1}'.encode("utf-16"),  # json detects UTF-16 and UTF-32
    '[1, "\u00e9"]'.encode("utf-32-le"),
    b"", b" ", b"[1,]", b'"\x00"', b'"\\u0000"', b"  [1]  ", b"[1] x", b"{'a': 1}",
    b"[" * 100_000 + b"]" * 100_000,  # too deep for both
    b"[" * 500 + b"]" * 500,  # deep, within json's limit
    '{"text": "caf\u00e9 \u2028 \U0001f600"}'.encode(),
]


def _outcome(parse, document):
    try:
        return "value", repr(parse(document))
    except (ValueError, RecursionError) as exc:
        return "error", type(exc).__name__


@pytest.mark.parametrize("document", EDGE_DOCUMENTS, ids=range(len(EDGE_DOCUMENTS)))
def test_loads_matches_json_on_edge_documents(document):
    assert _outcome(jsonio.loads, document) == _outcome(json.loads, document)


def test_loads_matches_json_on_text():
    text = '{"messages": [{"role": "user", "content": "\u00fcber"}], "n": 1e-05}'
    assert repr(jsonio.loads(text)) == repr(json.loads(text))
    with pytest.raises(json.JSONDecodeError):
        jsonio.loads("{")


def test_loads_reports_json_error_message():
    """Callers put the exception's text in anomalies: it is json's, position included."""
    with pytest.raises(json.JSONDecodeError) as caught:
        jsonio.loads(b'{"a": [1, 2,, 3]}')
    assert "line 1 column 13" in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, database=None)
@given(value=json_values, ensure_ascii=st.booleans(), spaced=st.booleans())
def test_loads_matches_json_on_generated_documents(value, ensure_ascii, spaced):
    separators = (", ", ": ") if spaced else (",", ":")
    document = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators).encode()
    assert _outcome(jsonio.loads, document) == _outcome(json.loads, document)


@settings(max_examples=400, deadline=None, database=None)
@given(document=st.binary(max_size=40) | st.text(alphabet='[]{}",:0123456789.eE+-tfrunl \\u', max_size=40))
def test_loads_matches_json_on_arbitrary_input(document):
    assert _outcome(jsonio.loads, document) == _outcome(json.loads, document)


@settings(max_examples=400, deadline=None, database=None)
@given(value=json_values)
def test_dumps_round_trips(value):
    line = jsonio.dumps(value)
    assert "\n" not in line
    assert repr(json.loads(line)) == repr(value)


surrogate_text = st.lists(st.characters() | st.characters(categories=["Cs"]), max_size=12).map("".join)
values_with_surrogates = st.recursive(
    st.integers() | surrogate_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(surrogate_text, children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, database=None)
@given(value=values_with_surrogates)
def test_dumps_lines_always_encode_as_utf8_and_read_back_as_the_value(value):
    """Text with lone surrogates (what `"\\ud800"` in a peer's JSON decodes to) included: the
    line is written with their escapes, so a strict UTF-8 writer takes it."""
    line = jsonio.dumps(value)
    line.encode("utf-8")
    assert repr(json.loads(line)) == repr(_paired(value))


def _paired(value):
    """`value` as JSON can carry it: a high surrogate then a low one are one character there
    (their two escapes read back as the character they pair into)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_paired(item) for item in value]
    if isinstance(value, dict):
        return {_paired(key): _paired(item) for key, item in value.items()}
    return value


def test_dumps_is_compact_utf8_like_the_eve_encoder():
    record = {"event_type": "alert", "alert": {"signature": "caf\u00e9 [x]", "severity": 1}, "n": [1, 2.5]}
    assert jsonio.dumps(record) == ('{"event_type":"alert","alert":{"signature":"caf\u00e9 [x]","severity":1},'
                                    '"n":[1,2.5]}')


def test_dumps_falls_back_to_json_for_what_msgspec_refuses():
    class Name(str):
        pass

    assert jsonio.dumps({"a": Name("x")}) == '{"a":"x"}'
    assert jsonio.dumps({"a": "\ud800"}) == '{"a":"\\ud800"}'  # the escape: a line any UTF-8 writer takes
    assert jsonio.dumps({"big": 2**70}) == f'{{"big":{2**70}}}'


def test_dumps_writes_non_finite_floats_as_null():
    assert json.loads(jsonio.dumps({"x": math.nan, "y": math.inf})) == {"x": None, "y": None}
