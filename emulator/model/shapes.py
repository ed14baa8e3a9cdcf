"""The response body of each endpoint for one Completion: chat completions (vLLM's shape, with
`reasoning_content`), completions, responses and Anthropic-style messages."""

from __future__ import annotations

import json

from .compose import Completion

MESSAGE_STOPS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def usage_chat(c: Completion, reasoning: bool) -> dict:
    usage: dict = {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": c.reasoning_tokens}
    return usage


def chat(c: Completion, rid: str, model: str, created: int, reasoning: bool) -> dict:
    message: dict = {"role": "assistant", "content": c.content}
    if c.reasoning is not None:
        message["reasoning_content"] = c.reasoning
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": t.call_id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in c.tool_calls
        ]
    return {
        "id": "chatcmpl-" + rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": c.finish}],
        "usage": usage_chat(c, reasoning),
    }


def completion(c: Completion, rid: str, model: str, created: int, reasoning: bool) -> dict:
    return {
        "id": "cmpl-" + rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": c.content or "", "logprobs": None, "finish_reason": c.finish}],
        "usage": usage_chat(c, False),
    }


def response(c: Completion, rid: str, model: str, created: int, reasoning: bool) -> dict:
    output: list[dict] = []
    if c.reasoning is not None:
        output.append(
            {
                "type": "reasoning",
                "id": "rs_" + rid,
                "summary": [],
                "content": [{"type": "reasoning_text", "text": c.reasoning}],
            }
        )
    for i, t in enumerate(c.tool_calls):
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{rid}_{i}",
                "call_id": t.call_id,
                "name": t.name,
                "arguments": t.arguments,
                "status": "completed",
            }
        )
    if c.content is not None and (c.content or not c.tool_calls):
        output.append(
            {
                "type": "message",
                "id": "msg_" + rid,
                "status": "completed" if c.finish != "length" else "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": c.content, "annotations": []}],
            }
        )
    cut = c.finish == "length"
    usage: dict = {
        "input_tokens": c.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": c.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": c.reasoning_tokens},
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }
    return {
        "id": "resp_" + rid,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "model": model,
        "output": output,
        "usage": usage,
    }


def message(c: Completion, rid: str, model: str, created: int, reasoning: bool) -> dict:
    content: list[dict] = []
    if c.reasoning is not None:
        content.append({"type": "thinking", "thinking": c.reasoning, "signature": ""})
    if c.content:
        content.append({"type": "text", "text": c.content})
    for t in c.tool_calls:
        try:
            args = json.loads(t.arguments)
        except ValueError:  # cut short by the budget
            args = {}
        content.append({"type": "tool_use", "id": "toolu_" + t.call_id[5:], "name": t.name, "input": args})
    return {
        "id": "msg_" + rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "stop_sequence" if c.stop_sequence else MESSAGE_STOPS[c.finish],
        "stop_sequence": c.stop_sequence,
        "usage": {"input_tokens": c.prompt_tokens, "output_tokens": c.completion_tokens},
    }


SHAPES = {
    "/chat/completions": chat,
    "/completions": completion,
    "/responses": response,
    "/messages": message,
}
