"""The endpoint table: one entry per batchable endpoint, and the answer side read from real body shapes."""

from __future__ import annotations

import pytest

from doubleword import endpoints as ep
from doubleword.config import BATCH_ENDPOINTS, SCHEMA_DIR
from doubleword.errors import UsageError


def test_one_entry_per_batchable_endpoint_with_its_schema():
    assert sorted(e.url for e in ep.ENDPOINTS.values()) == sorted(BATCH_ENDPOINTS)
    for endpoint in ep.ENDPOINTS.values():
        assert (SCHEMA_DIR / endpoint.schema_file).is_file()
        assert ep.endpoint_for_url(endpoint.url) is endpoint
        assert ep.endpoint_named(endpoint.name) is endpoint is ep.endpoint_named(endpoint.url)
    assert list(ep.ENDPOINTS)[0] == "chat"
    assert ep.endpoint_for_url("/ai/v1/chat/completions") is None
    with pytest.raises(UsageError, match="chat"):
        ep.endpoint_named("image")


def test_reasoning_effort_goes_where_each_endpoint_takes_it():
    chat: dict = {}
    ep.ENDPOINTS["chat"].place_reasoning_effort(chat, "none")
    responses: dict = {"reasoning": {"summary": "auto"}}
    ep.ENDPOINTS["responses"].place_reasoning_effort(responses, "max")
    assert chat == {"reasoning_effort": "none"}
    assert responses == {"reasoning": {"summary": "auto", "effort": "max"}}
    with pytest.raises(UsageError, match="/v1/completions"):
        ep.ENDPOINTS["completions"].place_reasoning_effort({}, "low")
    assert "max" in ep.REASONING_EFFORTS and len(ep.REASONING_EFFORTS) == 7


CHAT_BODY = {
    "object": "chat.completion",
    "choices": [
        {
            "finish_reason": "length",
            "message": {
                "role": "assistant",
                "content": "hi",
                "reasoning_content": "think",
                "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
RESPONSES_BODY = {
    "object": "response",
    "status": "incomplete",
    "incomplete_details": {"reason": "max_output_tokens"},
    "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "why"}]},
        {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
        {
            "type": "message",
            "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}],
        },
    ],
    "usage": {"input_tokens": 1, "output_tokens": 2},
}
MESSAGES_BODY = {
    "type": "message",
    "stop_reason": "end_turn",
    "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}],
}


@pytest.mark.parametrize(
    "body, name, expected",
    [
        (CHAT_BODY, "chat", ("hi", "think", 1, "length", True, None)),
        (
            {
                "object": "chat.completion",
                "choices": [{"finish_reason": "stop", "message": {"reasoning": "r"}}],
            },
            "chat",
            (None, "r", None, "stop", False, None),
        ),
        (RESPONSES_BODY, "responses", ("ab", "why", 1, "max_output_tokens", True, None)),
        (
            {"object": "text_completion", "choices": [{"text": "t", "finish_reason": "stop"}]},
            "completions",
            ("t", None, None, "stop", False, None),
        ),
        (
            {"object": "list", "data": [{"embedding": [0.5, 1.0]}]},
            "embeddings",
            (None, None, None, None, False, [0.5, 1.0]),
        ),
        (
            {"object": "list", "data": [{"embedding": [1]}, {"embedding": [2]}]},
            "embeddings",
            (None, None, None, None, False, [[1], [2]]),
        ),
        (MESSAGES_BODY, "messages", ("ok", "hmm", None, "end_turn", False, None)),
    ],
)
def test_answer_fields_read_from_each_endpoint_body(body, name, expected):
    endpoint = ep.endpoint_for_body(body)
    assert endpoint is ep.ENDPOINTS[name]
    answer = ep.read_answer(endpoint, body)
    tools = len(answer.tool_calls) if answer.tool_calls else None
    got = (answer.text, answer.reasoning, tools, answer.finish_reason, answer.truncated, answer.embedding)
    assert got == expected
    assert answer.usage == body.get("usage")


def test_pick_walks_keys_indexes_and_typed_items():
    value = {"a": [{"type": "x", "v": 1}, {"type": "y", "v": 2}, 3]}
    assert ep.pick(value, ("a", ep.Each("y"), "v")) == [2]
    assert ep.pick(value, ("a", ep.Each(), "v")) == [1, 2]
    assert ep.pick(value, ("a", 5)) == [] and ep.pick(value, ("b", 0)) == []
    assert ep.endpoint_for_body("text") is None and ep.endpoint_for_body({"object": "?"}) is None
