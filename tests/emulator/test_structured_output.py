"""The built-in model honours structured-output requests, as guided decoding on the real service does:
the answer is JSON valid for the requested schema (so dry runs of extraction jobs can parse it)."""

from __future__ import annotations

import json

import jsonschema
from conftest import CHAT

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0},
        "topics": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "flagged": {"type": ["boolean", "null"]},
        "detail": {"type": "object", "properties": {"count": {"type": "integer", "minimum": 1}}},
    },
    "required": ["sentiment", "confidence", "topics"],
}


def _chat(api, prompt: str, response_format: dict) -> str:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": prompt}],
        "response_format": response_format,
    }
    r = api.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_json_schema_answers_validate_and_vary_with_the_prompt(api):
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}
    answers = [json.loads(_chat(api, f"Review number {i}: it was fine", fmt)) for i in range(12)]
    for answer in answers:
        jsonschema.validate(answer, SCHEMA)
    assert len({a["sentiment"] for a in answers}) > 1  # the enum choice follows the prompt


def test_json_object_and_responses_text_format(api):
    assert isinstance(json.loads(_chat(api, "hello", {"type": "json_object"})), dict)
    body = {
        "model": CHAT,
        "input": "hello",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}},
    }
    r = api.post("/responses", json=body)
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["output"][0]["content"][0]["text"]), SCHEMA)
