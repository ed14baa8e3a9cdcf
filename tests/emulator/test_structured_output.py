"""The built-in model honours structured-output requests, as guided decoding on the real service does:
every answer is JSON valid for the requested schema, whatever keywords the schema uses, realtime and in
batches; a schema nothing satisfies gives a clear error, never invalid JSON."""

from __future__ import annotations

import datetime
import json
import re

import jsonschema
import pytest
from conftest import CHAT, jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:  # jsonschema checks it only with an optional package
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        return False
    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or re.fullmatch(r"[a-z][a-z0-9+.-]*://[^\s]+", value) is not None


def valid(answer: object, schema: dict) -> list[str]:
    """Every problem jsonschema finds (formats checked; the schema's own `$schema` draft, else 2020-12)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    v = cls(schema, format_checker=FORMATS)
    return [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(answer)]


def ask(api, prompt: str, schema: dict) -> dict:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    body = {"model": CHAT, "messages": [{"role": "user", "content": prompt}], "response_format": fmt}
    r = api.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


# -- held-out schemas: what structured-output users write ------------------------------------------
HELD_OUT = {
    "numeric bounds": {
        "type": "object",
        "properties": {
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "score": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
            "price": {"type": "number", "multipleOf": 0.01, "minimum": 1, "maximum": 2},
            "step": {"type": "integer", "multipleOf": 5, "minimum": 12, "maximum": 40},
        },
        "required": ["confidence", "score", "price", "step"],
        "additionalProperties": False,
    },
    "enums and const": {
        "type": "object",
        "properties": {
            "label": {"enum": ["positive", "negative", "neutral"]},
            "version": {"const": 2},
            "lang": {"type": "string", "enum": ["en", "fr", "de"]},
        },
        "required": ["label", "version", "lang"],
    },
    "nested objects": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "address"],
            }
        },
        "required": ["person"],
    },
    "arrays with sizes": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 2,
                "maxItems": 4,
                "uniqueItems": True,
            },
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 3},
                "minItems": 3,
                "maxItems": 3,
            },
            "pair": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "number"}],
                "items": False,
            },
        },
        "required": ["tags", "scores", "pair"],
    },
    "patterns and lengths": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
            "phone": {"type": "string", "pattern": "^\\+?[0-9]{7,12}$"},
            "short": {"type": "string", "maxLength": 5},
            "long": {"type": "string", "minLength": 40, "maxLength": 60},
        },
        "required": ["code", "phone", "short", "long"],
    },
    "anyOf and oneOf": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 100}]},
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"r": {"type": "number"}},
                        "required": ["r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {"w": {"type": "number"}, "h": {"type": "number"}},
                        "required": ["w", "h"],
                        "additionalProperties": False,
                    },
                ]
            },
            "maybe": {"type": ["string", "null"]},
        },
        "required": ["value", "shape", "maybe"],
    },
    "formats": {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "email": {"type": "string", "format": "email"},
            "id": {"type": "string", "format": "uuid"},
            "site": {"type": "string", "format": "uri"},
            "ip": {"type": "string", "format": "ipv4"},
        },
        "required": ["when", "day", "email", "id", "site", "ip"],
    },
    "refs and defs": {
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU[0-9]{3}$"},
                    "qty": {"type": "integer", "minimum": 1},
                },
                "required": ["sku", "qty"],
            }
        },
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1}},
        "required": ["items"],
        "additionalProperties": False,
    },
}
PROMPTS = [f"Extract the data from review {i}: the hotel in Lyon was quiet, staff kind" for i in range(6)]


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_held_out_schemas_get_valid_answers_realtime(api, name):
    schema = HELD_OUT[name]
    answers = []
    for prompt in PROMPTS:
        choice = ask(api, prompt, schema)
        assert choice["finish_reason"] == "stop"
        answer = json.loads(choice["message"]["content"])
        assert valid(answer, schema) == [], (name, answer)
        answers.append(answer)
    assert ask(api, PROMPTS[0], schema)["message"]["content"] == json.dumps(answers[0], ensure_ascii=False)
    assert len({json.dumps(a) for a in answers}) > 1  # the choices follow the prompt


def test_held_out_schemas_get_valid_answers_in_a_batch(api):
    lines = []
    for name, schema in sorted(HELD_OUT.items()):
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
        for i, prompt in enumerate(PROMPTS):
            body = {"model": CHAT, "messages": [{"role": "user", "content": prompt}], "response_format": fmt}
            lines.append(
                {"custom_id": f"{name}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
    b = api.batch(lines)
    done = api.wait(b["id"])
    assert done["request_counts"] == {"total": 48, "completed": 48, "failed": 0}
    schemas = {f"{n}-{i}": s for n, s in HELD_OUT.items() for i in range(len(PROMPTS))}
    for line in api.lines(done["output_file_id"]):
        answer = json.loads(line["response"]["body"]["choices"][0]["message"]["content"])
        assert valid(answer, schemas[line["custom_id"]]) == [], line["custom_id"]


def test_json_object_and_responses_text_format(api):
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "hello"}],
        "response_format": {"type": "json_object"},
    }
    r = api.post("/chat/completions", json=body)
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    schema = HELD_OUT["nested objects"]
    body = {
        "model": CHAT,
        "input": "hello",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": schema}},
    }
    r = api.post("/responses", json=body)
    assert r.status_code == 200, r.text
    message = next(o for o in r.json()["output"] if o["type"] == "message")
    assert valid(json.loads(message["content"][0]["text"]), schema) == []


@pytest.mark.parametrize(
    "schema, reason",
    [
        ({"type": "integer", "minimum": 5, "maximum": 1}, "no integer between 5 and 1"),
        ({"type": "string", "minLength": 4, "maxLength": 2}, "minLength 4 is above maxLength 2"),
        ({"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]}, "enum"),
        ({"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 3, "uniqueItems": True}, "uniqueItems"),
        ({"type": "integer", "minimum": "zero"}, "invalid JSON schema"),
    ],
)
def test_unsatisfiable_schema_gives_a_clear_error_not_invalid_json(api, schema, reason):
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    r = api.post("/chat/completions", json=body)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert message.startswith("The response_format schema cannot be satisfied: ") and reason in message
    b = api.wait(
        api.batch([{"custom_id": "u", "method": "POST", "url": "/v1/chat/completions", "body": body}])["id"]
    )
    assert b["status"] == "failed"
    (line,) = api.lines(b["error_file_id"])
    failure = json.loads(line["error"]["message"])
    assert failure["type"] == "NonRetriableHttpStatus" and failure["details"]["status"] == 400
    assert reason in failure["details"]["body"]


# -- property: generated schemas, every answer checked with jsonschema -------------------------------
WORDS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), min_size=0, max_size=40)
PATTERNS = [
    "^[a-z]{2,6}$",
    "^[A-Z][a-z]+$",
    "^\\d{3}-\\d{2}$",
    "^(yes|no|maybe)$",
    "^[a-f0-9]{8}$",
    "^v\\d+(\\.\\d+){2}$",
]
FORMAT_NAMES = ["date-time", "date", "email", "uuid", "uri", "ipv4", "ipv6", "hostname"]


@st.composite
def integers(draw):
    low = draw(st.integers(-1000, 1000))
    span = draw(st.integers(0, 500))
    s: dict = {"type": "integer"}
    if draw(st.booleans()):
        s["minimum"] = low
    if draw(st.booleans()):
        s["maximum"] = low + span
    if draw(st.booleans()):
        s["exclusiveMinimum"] = low - 1
    if draw(st.booleans()) and span >= 10:
        s["multipleOf"] = draw(st.sampled_from([2, 3, 5]))
    return s


@st.composite
def numbers(draw):
    low = draw(st.floats(-1e4, 1e4, allow_nan=False))
    span = draw(st.floats(0.5, 1e3))
    s: dict = {"type": "number"}
    if draw(st.booleans()):
        s["minimum"] = low
    else:
        s["exclusiveMinimum"] = low
    if draw(st.booleans()):
        s["maximum" if draw(st.booleans()) else "exclusiveMaximum"] = low + span
    if draw(st.booleans()) and span >= 5:
        s["multipleOf"] = draw(st.sampled_from([0.5, 0.25, 1]))
    return s


@st.composite
def strings(draw):
    kind = draw(st.sampled_from(["plain", "pattern", "format"]))
    if kind == "pattern":
        return {"type": "string", "pattern": draw(st.sampled_from(PATTERNS))}
    if kind == "format":
        return {"type": "string", "format": draw(st.sampled_from(FORMAT_NAMES))}
    low = draw(st.integers(0, 30))
    s: dict = {"type": "string"}
    if draw(st.booleans()):
        s["minLength"] = low
    if draw(st.booleans()):
        s["maxLength"] = low + draw(st.integers(0, 30))
    return s


SCALARS = st.sampled_from(["a", "b", "c", 1, 2, 3.5, True, None])
LEAVES = st.one_of(
    integers(),
    numbers(),
    strings(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({"type": ["string", "null"]}),
    st.lists(SCALARS, min_size=1, max_size=5, unique_by=json.dumps).map(lambda v: {"enum": v}),
    SCALARS.map(lambda v: {"const": v}),
)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)


def containers(children):
    objects = st.builds(
        lambda props, req, closed: {
            "type": "object",
            "properties": props,
            "required": [k for k, r in zip(props, req, strict=False) if r],
            **({"additionalProperties": False} if closed else {}),
        },
        st.dictionaries(NAMES, children, min_size=1, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
        st.booleans(),
    )
    arrays = st.builds(
        lambda items, low, extra: {"type": "array", "items": items, "minItems": low, "maxItems": low + extra},
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    unique = st.builds(
        lambda low: {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 1000},
            "minItems": low,
            "uniqueItems": True,
        },
        st.integers(0, 5),
    )
    unions = st.builds(lambda a, b: {"anyOf": [a, b]}, children, children)
    one_of = st.builds(
        lambda a, b: {"oneOf": [a, b]},
        strings(),
        st.one_of(integers(), st.just({"type": "boolean"}), st.just({"type": "null"})),
    )
    extra = {
        "type": "object",
        "required": ["extra"],
        "properties": {"extra": {"type": "integer", "minimum": 1}},
    }
    # open objects only: `additionalProperties: false` in one part and a required key in the other admit nothing
    all_of = objects.map(
        lambda a: {"allOf": [{k: v for k, v in a.items() if k != "additionalProperties"}, extra]}
    )
    return st.one_of(objects, arrays, unique, unions, one_of, all_of)


NESTED = st.recursive(LEAVES, containers, max_leaves=12)
# `$defs` at the root, where `#/$defs/...` points (a nested `$defs` is not reachable by `#`)
WITH_REFS = st.builds(
    lambda part, other: {
        "$defs": {"part": part},
        "type": "object",
        "properties": {
            "p": {"$ref": "#/$defs/part"},
            "list": {"type": "array", "items": {"$ref": "#/$defs/part"}},
            "o": other,
        },
        "required": ["p", "list"],
    },
    NESTED,
    NESTED,
)
SCHEMAS = st.one_of(NESTED, WITH_REFS)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=SCHEMAS, prompt=WORDS)
def test_generated_schemas_always_get_answers_valid_for_them(api, schema, prompt):
    choice = ask(api, prompt, schema)
    assert choice["finish_reason"] == "stop"
    answer = json.loads(choice["message"]["content"])
    assert valid(answer, schema) == [], (schema, answer)


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(examples=st.lists(SCHEMAS, min_size=40, max_size=40))
def test_a_batch_of_generated_schemas_is_valid_line_by_line(api, examples):
    lines = [
        {
            "custom_id": f"g{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": CHAT,
                "messages": [{"role": "user", "content": f"case {i}"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "g", "schema": s}},
            },
        }
        for i, s in enumerate(examples)
    ]
    f = api.upload(jsonl(lines))
    assert f.status_code == 201, f.text
    done = api.wait(api.create(f.json()["id"]).json()["id"])
    assert done["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    seen = 0
    for line in api.lines(done["output_file_id"]):
        schema = examples[int(line["custom_id"][1:])]
        answer = json.loads(line["response"]["body"]["choices"][0]["message"]["content"])
        assert valid(answer, schema) == [], (schema, answer)
        seen += 1
    assert seen == 40


MORE_KEYWORDS = {
    "dependentRequired": {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "dependentRequired": {"a": ["b"]},
    },
    "if/then": {
        "type": "object",
        "properties": {"kind": {"enum": ["x", "y"]}, "n": {"type": "integer"}},
        "required": ["kind"],
        "if": {"properties": {"kind": {"const": "x"}}},
        "then": {"required": ["n"]},
    },
    "not": {"type": "integer", "minimum": 0, "maximum": 10, "not": {"enum": [0, 1, 2, 3, 4, 5]}},
    "minProperties": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3},
    "patternProperties": {
        "type": "object",
        "patternProperties": {"^x_[a-z]+$": {"type": "boolean"}},
        "additionalProperties": False,
        "minProperties": 2,
    },
    "contains": {"type": "array", "items": {"type": "integer"}, "contains": {"const": 7}, "minItems": 2},
    "propertyNames": {"type": "object", "propertyNames": {"pattern": "^[a-z]{3}$"}, "minProperties": 2},
    "maxProperties": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
        "maxProperties": 1,
    },
    "draft-07 definitions": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"p": {"type": "string", "minLength": 3}},
        "type": "array",
        "items": {"$ref": "#/definitions/p"},
        "minItems": 2,
    },
    "draft-04 exclusive bounds": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "exclusiveMinimum": True,
        "exclusiveMaximum": True,
    },
    "tuple items": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "string"}, {"type": "integer"}],
        "additionalItems": False,
        "minItems": 2,
    },
    "pattern with lengths": {"type": "string", "pattern": "^[a-z]+$", "minLength": 20, "maxLength": 25},
    "recursion": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                "required": ["c"],
            }
        },
        "$ref": "#/$defs/node",
    },
}


@pytest.mark.parametrize("name", sorted(MORE_KEYWORDS))
def test_less_common_keywords_get_valid_answers_too(api, name):
    schema = MORE_KEYWORDS[name]
    for prompt in PROMPTS[:4]:
        choice = ask(api, prompt, schema)
        answer = json.loads(choice["message"]["content"])
        assert valid(answer, schema) == [], (name, answer)
