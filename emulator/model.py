"""The deterministic built-in model: chat, completions, embeddings, responses and messages."""

from __future__ import annotations

import hashlib
import json
import math
import time

from .config import is_embedding_model
from .outcome import Outcome, error_json

DEFAULT_DIMENSIONS = 8
MAX_REPLY_CHARS = 2000
# Request-body keys a test can use to make the built-in model answer a given status (they are not
# part of any real API): x_emulator_status = N, x_emulator_fail_times = k (fail k attempts, then 200).
STATUS_KEY = "x_emulator_status"
FAIL_TIMES_KEY = "x_emulator_fail_times"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
        return " ".join(parts)
    return "" if content is None else json.dumps(content)


def _last_user_text(messages: object) -> tuple[str, str]:
    """(last user message text, all message text) of a chat/messages/responses input."""
    if isinstance(messages, str):
        return messages, messages
    if not isinstance(messages, list):
        return "", ""
    last, everything = "", []
    for m in messages:
        if not isinstance(m, dict):
            continue
        t = _text_of(m.get("content"))
        everything.append(t)
        if m.get("role", "user") == "user":
            last = t
    return last, "\n".join(everything)


def _reply(model: str, user_text: str, max_tokens: object) -> tuple[str, str]:
    text = f"Echo from {model}: {user_text}"
    if len(text) > MAX_REPLY_CHARS:
        text = text[:MAX_REPLY_CHARS]
    finish = "stop"
    limited = isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0
    if limited and _tokens(text) > max_tokens:  # type: ignore[operator]
        text, finish = text[: max_tokens * 4], "length"
    return text, finish


def _answer(body: dict, model: str, user_text: str, max_tokens: object) -> tuple[str, str]:
    """(text, finish_reason): JSON for a structured-output request, else the echo reply."""
    fmt = _structured_format(body)
    if fmt is not None:
        return _structured_reply(fmt, model, user_text), "stop"
    return _reply(model, user_text, max_tokens)


def _structured_format(body: dict) -> dict | None:
    """The requested JSON output format, if any: chat `response_format` or responses `text.format`."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return fmt
    return None


def _structured_reply(fmt: dict, model: str, user_text: str) -> str:
    """A JSON answer that fits the requested schema, derived from the prompt (like guided decoding)."""
    echo = f"Echo from {model}: {user_text}"[:MAX_REPLY_CHARS]
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": echo}, ensure_ascii=False)
    spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
    schema = spec.get("schema") if isinstance(spec, dict) else None
    seed = int(hashlib.sha256(user_text.encode()).hexdigest()[:8], 16)
    return json.dumps(
        _instance(schema if isinstance(schema, dict) else {}, echo, seed, 0), ensure_ascii=False
    )


def _instance(schema: dict, echo: str, seed: int, depth: int) -> object:
    """A deterministic value valid for the common JSON Schema keywords (enum, const, type, properties...)."""
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key] and isinstance(schema[key][0], dict):
            return _instance(schema[key][0], echo, seed, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if depth > 8:
        return None
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {
            name: _instance(sub if isinstance(sub, dict) else {}, echo, seed + i, depth + 1)
            for i, (name, sub) in enumerate(props.items())
        }
    if kind == "array":
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [_instance(items, echo, seed + i, depth + 1) for i in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 0)) + seed % 10
    if kind == "number":
        return float(schema.get("minimum", 0)) + (seed % 100) / 10
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    return echo


def _digest_id(prefix: str, body: dict) -> str:
    raw = json.dumps(body, sort_keys=True).encode()
    return prefix + hashlib.sha256(raw).hexdigest()[:24]


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from sha256 of the input."""
    vals: list[float] = []
    counter = 0
    while len(vals) < dims:
        h = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        vals.extend((b / 127.5) - 1.0 for b in h)
        counter += 1
    vals = vals[:dims]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [round(v / norm, 6) for v in vals]


def builtin(path: str, body: object, attempt: int = 0, now: int | None = None) -> Outcome:
    """Answer one request as a deterministic model would. `path` is e.g. /v1/chat/completions."""
    if not isinstance(body, dict):
        return Outcome(400, error_json("Request body must be a JSON object"))
    forced = body.get(STATUS_KEY)
    fail_times = body.get(FAIL_TIMES_KEY)
    if (
        isinstance(forced, int)
        and forced >= 400
        and (not isinstance(fail_times, int) or attempt < fail_times)
    ):
        return Outcome(forced, error_json(f"Emulated upstream status {forced}", "emulated_error"))
    model = body.get("model")
    if not isinstance(model, str):
        return Outcome(400, error_json("you must provide a model parameter"))
    created = int(time.time()) if now is None else now
    endpoint = path.removeprefix("/ai").removeprefix("/v1")
    if endpoint == "/embeddings":
        return _embeddings(body, model)
    if is_embedding_model(model):
        return Outcome(400, error_json(f"Model '{model}' does not support {endpoint}"))
    answer = ANSWERS.get(endpoint)
    if answer is None:
        return Outcome(404, error_json(f"Unknown endpoint {path}", "not_found_error"))
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", body.get("max_output_tokens")))
    resp, pt, ct = answer(body, model, max_tokens, created)
    return Outcome(200, prompt_tokens=pt, completion_tokens=ct, obj=resp)


def _chat(body: dict, model: str, max_tokens: object, created: int) -> tuple[dict, int, int]:
    user, whole = _last_user_text(body.get("messages"))
    text, finish = _answer(body, model, user, max_tokens)
    pt, ct = _tokens(whole), _tokens(text)
    resp = {
        "id": _digest_id("chatcmpl-", body),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }
    return resp, pt, ct


def _completion(body: dict, model: str, max_tokens: object, created: int) -> tuple[dict, int, int]:
    prompt = body.get("prompt", "")
    ptext = prompt if isinstance(prompt, str) else _text_of(prompt)
    text, finish = _reply(model, ptext, max_tokens)
    pt, ct = _tokens(ptext), _tokens(text)
    resp = {
        "id": _digest_id("cmpl-", body),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }
    return resp, pt, ct


def _response(body: dict, model: str, max_tokens: object, created: int) -> tuple[dict, int, int]:
    user, whole = _last_user_text(body.get("input"))
    text, finish = _answer(body, model, user, max_tokens)
    pt, ct = _tokens(whole), _tokens(text)
    resp = {
        "id": _digest_id("resp_", body),
        "object": "response",
        "created_at": created,
        "status": "completed" if finish == "stop" else "incomplete",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": _digest_id("msg_", body),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": pt, "output_tokens": ct, "total_tokens": pt + ct},
    }
    return resp, pt, ct


def _message(body: dict, model: str, max_tokens: object, created: int) -> tuple[dict, int, int]:
    user, whole = _last_user_text(body.get("messages"))
    text, finish = _reply(model, user, max_tokens)
    pt, ct = _tokens(whole), _tokens(text)
    resp = {
        "id": _digest_id("msg_", body),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": pt, "output_tokens": ct},
    }
    return resp, pt, ct


ANSWERS = {
    "/chat/completions": _chat,
    "/completions": _completion,
    "/responses": _response,
    "/messages": _message,
}


def _embeddings(body: dict, model: str) -> Outcome:
    if not is_embedding_model(model):
        return Outcome(400, error_json(f"Model '{model}' does not support embeddings"))
    inp = body.get("input")
    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        inputs = [inp]
    elif isinstance(inp, list):
        inputs = inp
    else:
        return Outcome(400, error_json("'input' must be a string or an array"))
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192:
        return Outcome(400, error_json("'dimensions' must be a positive integer"))
    data = []
    pt = 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        pt += _tokens(text)
        data.append({"object": "embedding", "index": i, "embedding": embedding_vector(text, dims)})
    resp = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": pt, "total_tokens": pt},
    }
    return Outcome(200, prompt_tokens=pt, completion_tokens=0, obj=resp)
