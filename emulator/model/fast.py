"""The common case at speed: a plain chat request (string messages, no tools, schema, stop or
reasoning) answered straight into the output line's JSON text (keys sorted), without the general
path's objects. It gives byte for byte what `compose` + `shapes.chat` give (tests compare the two).
Batch requests get this answer made once, at upload (emulator/prepared.py)."""

from __future__ import annotations

from ..responses import json_string
from .compose import MAX_REPLY_CHARS

# Body keys that change nothing in a plain answer (sampling settings, metadata).
PLAIN_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "user",
        "frequency_penalty",
        "presence_penalty",
        "stream",
        "n",
    }
)
PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "name"})
_MODEL_JSON: dict[str, str] = {}


def plain_parts(body: dict, model: str) -> tuple[str, str, int, int] | None:
    """The answer to a plain request as (head, tail, prompt tokens, completion tokens), its body being
    head + created + ',"id":"chatcmpl-' + id + tail (the two values a run gives it); None when the
    request is not plain."""
    if not PLAIN_KEYS.issuperset(body):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    size = len(messages) - 1  # the newlines between turns
    last = ""
    for m in messages:
        if not isinstance(m, dict) or not PLAIN_MESSAGE_KEYS.issuperset(m):
            return None
        content = m.get("content")
        role = m.get("role", "user")
        if not isinstance(content, str) or role not in PLAIN_ROLES:
            return None
        size += len(content)
        if role == "user":
            last = content
    budget = body.get("max_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        budget = body.get("max_completion_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            budget = None
    content = f"Echo from {model}: {last}"[:MAX_REPLY_CHARS]
    finish = "stop"
    if budget is not None and len(content) > budget * 4:
        content, finish = content[: budget * 4], "length"
    pt = max(1, -(-size // 4))
    ct = -(-len(content) // 4)
    model_json = _MODEL_JSON.get(model)
    if model_json is None:
        model_json = _MODEL_JSON.setdefault(model, json_string(model))
    head = (
        f'{{"choices":[{{"finish_reason":"{finish}","index":0,"logprobs":null,"message":{{"content":'
        f'{json_string(content)},"role":"assistant"}}}}],"created":'
    )
    tail = (
        f'","model":{model_json},"object":"chat.completion","usage":{{"completion_tokens":{ct},'
        f'"prompt_tokens":{pt},"total_tokens":{pt + ct}}}}}'
    )
    return head, tail, pt, ct
