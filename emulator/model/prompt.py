"""What the built-in model reads from a request: the conversation's text, the last user turn, the image
parts, whether the last turn is a tool result, and the output-token budget."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

IMAGE_PART_TYPES = ("image_url", "input_image", "image")
TOOL_RESULT_TYPES = ("tool_result", "function_call_output")
BUDGET_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass
class Prompt:
    last_user: str = ""
    text: str = ""  # every turn's text, for the prompt token count
    images: int = 0
    after_tool: bool = False  # the last turn is a tool's result: answer it in words


def tokens(text: str) -> int:
    """The built-in tokenizer: one token per 4 characters (started)."""
    return math.ceil(len(text) / 4)


def cut(text: str, budget: int) -> str:
    """The longest start of `text` within `budget` tokens."""
    return text[: max(0, budget) * 4]


def budget_of(body: dict) -> int | None:
    """The output-token limit the request sets (first of max_tokens, max_completion_tokens,
    max_output_tokens); None when it sets none."""
    for name in BUDGET_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def read_prompt(endpoint: str, body: dict) -> Prompt:
    if endpoint == "/completions":
        raw = body.get("prompt", "")
        text = raw if isinstance(raw, str) else " ".join(_part_texts(raw))
        return Prompt(last_user=text, text=text)
    turns = body.get("input") if endpoint == "/responses" else body.get("messages")
    prompt = Prompt()
    if isinstance(turns, str):
        prompt.last_user = prompt.text = turns
    elif isinstance(turns, list):
        _read_turns(turns, prompt)
    system = body.get("instructions") if endpoint == "/responses" else body.get("system")
    if system is not None:
        prompt.text = " ".join(_part_texts(system)) + "\n" + prompt.text
    return prompt


def _read_turns(turns: list, prompt: Prompt) -> None:
    texts = []
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        if turn.get("type") in TOOL_RESULT_TYPES:  # a responses-API tool result item
            texts.append(str(turn.get("output", "")))
            prompt.after_tool = True
            continue
        content = turn.get("content")
        parts = content if isinstance(content, list) else [content]
        prompt.images += sum(1 for p in parts if isinstance(p, dict) and p.get("type") in IMAGE_PART_TYPES)
        text = " ".join(_part_texts(content))
        texts.append(text)
        role = turn.get("role", "user")
        is_tool = role == "tool" or any(
            isinstance(p, dict) and p.get("type") in TOOL_RESULT_TYPES for p in parts
        )
        prompt.after_tool = is_tool
        if role == "user" and not is_tool:
            prompt.last_user = text
    prompt.text = "\n".join(texts)


def _part_texts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                out.append(p["text"])
            elif isinstance(p, dict) and p.get("type") in TOOL_RESULT_TYPES:
                out.append(json.dumps(p.get("content", p.get("output", "")), ensure_ascii=False))
        return out
    return [] if content is None else [json.dumps(content, ensure_ascii=False)]
