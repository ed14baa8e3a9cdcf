"""Validation and batch-file writing give the same verdicts and the same bytes with the optional JSON
accelerator (orjson, :mod:`doubleword.fastjson`) and without it (``DOUBLEWORD_PURE_JSON=1``, the reference).

orjson is stricter than the standard library in places (NaN, integers past 64 bits, lone surrogates,
invalid UTF-8) and looser in others (it would write NaN as null, datetimes as strings): wherever the two
differ the plain path must decide, so a user without orjson and one with it get the same files and the
same errors.
"""

from __future__ import annotations

import datetime
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doubleword import batchfile, fastjson


def _valid(i: int, content: str = "hello") -> dict:
    return {
        "custom_id": f"r{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 16},
    }


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# Lines where the two decoders could disagree: each must get the same verdict both ways.
TRICKY = [
    _line(_valid(0)),
    _line(_valid(1, "emoji 🎉 and 東京")),
    _line(_valid(2, "paired escape")).replace(b"paired escape", b"\\ud83d\\ude00"),
    _line(_valid(3, "lone escape")).replace(b"lone escape", b"\\ud800"),
    _line(_valid(4)).replace(b'"max_tokens": 16', b'"max_tokens": NaN'),
    _line(_valid(5)).replace(b'"max_tokens": 16', b'"max_tokens": Infinity'),
    _line(_valid(6)).replace(b'"max_tokens": 16', b'"max_tokens": 1e400'),
    _line(_valid(7)).replace(b'"max_tokens": 16', b'"max_tokens": 123456789012345678901234567890'),
    _line(_valid(8)).replace(b"hello", b"caf\xe9"),  # Latin-1, not UTF-8
    b"   " + _line(_valid(9)),  # leading whitespace
    _line(_valid(10)) + b"\r",  # a CRLF file
    _line(_valid(11)).replace(b'"custom_id": "r11"', b'"custom_id": "r11", "custom_id": "r11b"'),
    _line(_valid(12)) + b" trailing",
    b"",
    b"{not json",
    _line(_valid(13)).replace(b'"max_tokens": 16', b'"max_tokens": 16, "temperature": -0'),
]


def test_validation_gives_the_same_report_with_and_without_orjson(tmp_path, h):
    path = tmp_path / "tricky.jsonl"
    path.write_bytes(b"\n".join(TRICKY) + b"\n")
    reports = {}
    for pure in ("0", "1"):
        env = h.script_env(None, DOUBLEWORD_PURE_JSON=pure)
        code, doc, err = h.run_script("validate_batch_file", str(path), "--max-errors", "100", env=env)
        reports[pure] = (code, doc)
    assert reports["0"] == reports["1"]
    code, doc = reports["1"]
    report = doc["files"][0]
    assert code == 4 and not report["valid"]
    flagged = {e["line"] for e in report["errors"]}
    # the lone surrogate, NaN, Infinity, the Latin-1 byte, the trailing text and the broken line
    assert {4, 5, 6, 9, 13, 15} <= flagged, report["errors"]
    assert not flagged & {1, 2, 3, 10, 11}, report["errors"]


def test_batch_lines_are_the_same_bytes_with_and_without_orjson(tmp_path, monkeypatch):
    requests = [_valid(i, f'prompt {i} with 東京, "quotes", a tab\there and a\nnewline') for i in range(200)]
    requests[5]["body"]["stop"] = None  # a null: the plain path writes it
    outputs = []
    for fast in (fastjson.dumps, None):
        monkeypatch.setattr(fastjson, "dumps", fast)
        out = tmp_path / f"batch-{fast is None}.jsonl"
        batchfile.write_batch([json.loads(json.dumps(r)) for r in requests], out)
        outputs.append(out.read_bytes())
    assert fastjson.dumps is None and outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") == 200


@pytest.mark.parametrize(
    "value, error",
    [
        ({"x": math.nan}, ValueError),  # orjson would write null
        ({"x": [1.0, math.inf]}, ValueError),
        ({"x": datetime.date(2026, 1, 2)}, TypeError),  # orjson would write "2026-01-02"
        ({"x": {1, 2}}, TypeError),
        ({"x": "lone \ud800"}, UnicodeEncodeError),
    ],
)
def test_what_the_standard_library_refuses_is_refused_with_orjson_too(value, error):
    assert fastjson.dumps is not None  # the accelerated path is the one under test
    with pytest.raises(error):
        batchfile.encode_line(value)


def test_what_only_the_standard_library_writes_is_written_its_way():
    # integer keys become strings; integers past 64 bits are written whole (orjson refuses both)
    assert batchfile.encode_line({1: 2**70}) == b'{"1":%d}\n' % 2**70
    assert batchfile.encode_line({"a": True, "b": None}) == b'{"a":true,"b":null}\n'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_orjson_lines_decode_to_what_the_standard_library_writes(value):
    """Any JSON value: the accelerated line decodes to the same value as the plain one, and is the same
    bytes whenever it holds no float (orjson writes 1e-7 where the standard library writes 1e-07)."""
    plain = (batchfile._encode(value) + "\n").encode("utf-8", "surrogatepass")
    try:
        line = batchfile.encode_line(value)
    except UnicodeEncodeError:  # a lone surrogate: refused (not valid UTF-8), both ways
        with pytest.raises(UnicodeEncodeError):
            (batchfile._encode(value)).encode("utf-8")
        return
    assert json.loads(line) == json.loads(plain)
    if not any(isinstance(v, float) for v in _leaves(value)):
        assert line == plain


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value
