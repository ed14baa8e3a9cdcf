"""How served lines become records: Doubleword and OpenAI shapes, every endpoint's answer, errors parsed."""

from __future__ import annotations

import json

import pytest

from doubleword import fastjson
from doubleword.answers import ANSWER_KEYS, encode_line, interpret, line_status, normalise_error, usage_tokens
from doubleword.endpoints import ENDPOINTS

DW_ERROR = {
    "id": "batch_req_1",
    "custom_id": "a",
    "response": None,
    "error": {
        "code": None,
        "message": json.dumps(
            {
                "type": "NonRetriableHttpStatus",
                "details": {"status": 400, "body": json.dumps({"error": {"message": "bad temperature"}})},
            }
        ),
    },
}
OPENAI_FAILED = {
    "id": "batch_req_2",
    "custom_id": "b",
    "response": {"status_code": 429, "body": {"error": {"message": "slow down", "type": "rate_limit_error"}}},
    "error": None,
}
OPENAI_EXPIRED = {
    "id": "batch_req_3",
    "custom_id": "c",
    "response": None,
    "error": {"code": "batch_expired", "message": "x"},
}


def _ok(body, shape="doubleword"):
    response = {"status_code": 200, "request_id": None, "body": body}
    if shape == "openai":  # OpenAI puts request_id strings, key order differs, error null
        response = {"status_code": 200, "request_id": "req_abc", "body": body}
    return {"id": "batch_req_9", "custom_id": "z", "response": response, "error": None}


def test_doubleword_error_message_is_parsed():
    assert line_status(DW_ERROR) == "failed"
    assert normalise_error(DW_ERROR) == {
        "type": "NonRetriableHttpStatus",
        "code": None,
        "status": 400,
        "message": "bad temperature",
    }


def test_unparsable_and_free_text_errors_fall_back_to_raw_text():
    line = {
        "custom_id": "a",
        "response": None,
        "error": {"code": None, "message": "Upstream returned 500: boom"},
    }
    assert normalise_error(line)["message"] == "Upstream returned 500: boom"
    assert normalise_error({"custom_id": "a", "response": None, "error": None})["type"] == "no_response"


def test_openai_shapes():
    assert line_status(OPENAI_FAILED) == "failed"
    err = normalise_error(OPENAI_FAILED)
    assert err["type"] == "rate_limit_error" and err["status"] == 429 and err["message"] == "slow down"
    assert line_status(OPENAI_EXPIRED) == "missing"  # not run, not a model failure
    assert normalise_error(OPENAI_EXPIRED)["type"] == "batch_expired"


CHAT = {
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {
            "message": {"role": "assistant", "content": "hi", "reasoning_content": "think"},
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
}
ANSWERS = {
    "chat": (CHAT, {"content": "hi", "reasoning": "think", "finish_reason": "length"}, "truncated"),
    "completions": (
        {"object": "text_completion", "choices": [{"text": "done", "finish_reason": "stop"}]},
        {"content": "done", "finish_reason": "stop"},
        "completed",
    ),
    "responses": (
        {
            "object": "response",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
                {"type": "message", "content": [{"type": "output_text", "text": "r"}]},
                {"type": "function_call", "name": "f", "arguments": "{}"},
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        },
        {"content": "r", "reasoning": "plan", "finish_reason": "max_output_tokens"},
        "truncated",
    ),
    "messages": (
        {
            "type": "message",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "m"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        },
        {"content": "m", "reasoning": "hmm", "finish_reason": "end_turn"},
        "completed",
    ),
    "embeddings": (
        {"object": "list", "data": [{"embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 2}},
        {"content": None, "embedding": [0.1, 0.2]},
        "completed",
    ),
}


@pytest.mark.parametrize("shape", ["doubleword", "openai"])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_every_endpoint_in_both_shapes(name, shape):
    body, want, want_status = ANSWERS[name]
    for endpoint in (ENDPOINTS[name], None):  # from the batch's endpoint, or recognised by the body
        status, record = interpret(_ok(body, shape), "B1", endpoint)
        assert set(record) == set(ANSWER_KEYS)
        assert status == want_status
        assert {k: record[k] for k in want} == want
        assert record["batch_id"] == "B1" and record["line_id"] == "batch_req_9"
    if name in ("responses", "messages"):
        assert record["tool_calls"] and record["tool_calls"][0]["name"] == "f"
    assert usage_tokens({"input_tokens": 3, "output_tokens": 4}) == (3, 4, 7)


def test_a_body_that_is_not_json_is_the_answer_text():
    status, record = interpret(_ok("not json"), "B1", ENDPOINTS["chat"])
    assert status == "completed" and record["content"] == "not json"


@pytest.fixture(params=["orjson", "json"])
def json_path(request, monkeypatch):
    """Each fast-path test runs with the accelerator and with the standard library alone."""
    if request.param == "orjson":
        orjson = pytest.importorskip("orjson")
        monkeypatch.setattr(fastjson, "loads", orjson.loads)
        monkeypatch.setattr(fastjson, "dumps", orjson.dumps)
    else:
        monkeypatch.setattr(fastjson, "loads", None)
        monkeypatch.setattr(fastjson, "dumps", None)
    return request.param


FAST_CASES = [
    ("plain", "stop", None),
    ('with "quotes" and \\ backslash\\', "stop", None),
    ("emoji 🎉 and 東京 \u2028 \x01", "stop", None),
    ("ends with backslash \\", "length", None),
    ("", "stop", None),
    (None, "stop", None),
    ("thought first", "stop", "because"),
    ("cut", "length", "long reasoning"),
]


@pytest.mark.parametrize("content,finish,reasoning", FAST_CASES)
def test_the_chat_fast_path_encodes_exactly_what_the_plain_path_does(json_path, content, finish, reasoning):
    body = json.loads(json.dumps(CHAT))
    body["choices"][0]["message"]["content"] = content
    body["choices"][0]["finish_reason"] = finish
    if reasoning is not None:
        body["choices"][0]["message"]["reasoning_content"] = reasoning
    for ensure_ascii in (True, False):
        raw = json.dumps(_ok(body), ensure_ascii=ensure_ascii).encode()
        fast = encode_line(raw, "B1", ENDPOINTS["chat"])
        plain = encode_line(raw, "B1", ENDPOINTS["completions"])  # takes the table's path
        assert fast is not None and plain is not None
        assert fast[:6] == plain[:6]
        status, members = interpret(_ok(body), "B1", ENDPOINTS["chat"])
        record = json.loads(fast[6])
        assert list(record) == [
            "custom_id",
            "status",
            "parsed",
            "attempts",
            *ANSWER_KEYS,
        ]  # results.jsonl order
        assert record == {"custom_id": "z", "status": status, "parsed": None, "attempts": 1, **members}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"l1","custom_id":"n","response":{"status_code":200,"body":{"choices":[{"message":'
        b'{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":NaN}}},"error":null}',
        b'{"id":"l2","custom_id":"big","response":{"status_code":200,"body":{"choices":[{"message":'
        b'{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":123456789012345678901234567890}}}}',
        b'{"id":"l3","custom_id":"bad-utf8","response":{"status_code":200,"body":{"choices":[{"message":'
        b'{"content":"caf\xe9"},"finish_reason":"stop"}]}}}',
        b'{"id":"l4","custom_id":7,"response":{"status_code":200,"body":{"choices":[{"message":'
        b'{"content":"a number id"},"finish_reason":"stop"}]}}}',
    ],
)
def test_lines_the_accelerator_refuses_are_decided_by_the_plain_path(json_path, raw):
    encoded = encode_line(raw, "B1", ENDPOINTS["chat"])
    assert encoded is not None
    record = json.loads(encoded[6])
    assert record["status"] == "completed" and record["line_id"] == encoded[0]
    assert isinstance(record["content"], str) and record["content"]


def test_lines_that_are_not_output_lines_are_refused():
    for raw in (b"<!DOCTYPE html>", b"[1, 2]", b'{"id": "x"}', b'"text"'):
        assert encode_line(raw, "B1", None) is None
