"""What one served output or error line says: its status, its answer fields, its error, its JSON answer.

Both line shapes are understood (``references/api_reference.md``, output and error lines): Doubleword's
(failures only in the error file, ``error.message`` a JSON string) and OpenAI's
(``response.status_code >= 400`` lines, ``batch_cancelled`` / ``batch_expired`` error lines meaning "never
run"). Where the answer lives in a response body (text, reasoning, tool calls, finish reason, embedding) is
the endpoint table's business (:mod:`doubleword.endpoints`); chat completions, by far the most common, are
read by a direct fast path that a test keeps equal to the table.

A line's own status is ``completed``, ``truncated`` (cut off at the output limit, including an empty answer
because reasoning used the budget), ``failed`` or ``missing`` (OpenAI's "not run" lines). Whether a
completed answer is ``invalid`` depends on the request (did it ask for JSON, with which schema), so that
check, :func:`check_json`, runs where the request is known (:mod:`doubleword.results`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from doubleword import fastjson
from doubleword.endpoints import ENDPOINTS, Endpoint, endpoint_for_body, endpoint_for_url, read_answer

NOT_RUN_CODES = frozenset({"batch_cancelled", "batch_expired"})
USABLE = "completed"
STATUSES = ("completed", "failed", "truncated", "invalid", "pending", "missing")
# The answer members of a record, in order; "custom_id", "status", "parsed" and "attempts" are the join's.
ANSWER_KEYS = (
    "content",
    "reasoning",
    "tool_calls",
    "finish_reason",
    "embedding",
    "usage",
    "error",
    "batch_id",
    "line_id",
    "model",
)
_CHAT = ENDPOINTS["chat"]


# --------------------------------------------------------------------------- one served line


def line_status(line: dict[str, Any]) -> str:
    """``completed``, ``failed`` or ``missing`` (an OpenAI "not run" line): the line before its answer is read."""
    error = line.get("error")
    response = line.get("response")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        return "missing" if code in NOT_RUN_CODES else "failed"
    if not isinstance(response, dict):
        return "failed"
    status_code = response.get("status_code")
    if isinstance(status_code, int) and status_code >= 400:
        return "failed"
    return "completed"


def interpret(
    line: dict[str, Any], batch_id: str | None, endpoint: Endpoint | None
) -> tuple[str, dict[str, Any]]:
    """A served line as ``(status, answer members)`` (every key of :data:`ANSWER_KEYS`)."""
    status = line_status(line)
    record: dict[str, Any] = dict.fromkeys(ANSWER_KEYS)
    record["batch_id"] = batch_id
    record["line_id"] = line.get("id")
    if status != "completed":
        record["error"] = normalise_error(line)
        return status, record
    body = line["response"].get("body")
    if isinstance(body, str):  # the server stored a body that was not JSON: the raw text is the answer
        parsed = _parse_json(body)
        if not isinstance(parsed, dict):
            record["content"] = body
            return status, record
        body = parsed
    if not isinstance(body, dict):
        return status, record
    record["model"] = body.get("model")
    endpoint = endpoint or endpoint_for_body(body) or _by_shape(body)
    if endpoint is _CHAT:
        truncated = _read_chat(body, record)
    else:
        truncated = _read_table(endpoint, body, record)
    if truncated:
        record["error"] = truncation_error(record)
        return "truncated", record
    return status, record


def _by_shape(body: dict[str, Any]) -> Endpoint | None:
    """The endpoint of a body without an ``object`` (a server that leaves it out), by its members."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return _CHAT if "message" in choices[0] else ENDPOINTS["completions"]
    if isinstance(body.get("data"), list):
        return ENDPOINTS["embeddings"]
    if isinstance(body.get("output"), list) or "output_text" in body:
        return ENDPOINTS["responses"]
    if isinstance(body.get("content"), list):
        return ENDPOINTS["messages"]
    return None


def _read_chat(body: dict[str, Any], record: dict[str, Any]) -> bool:
    """The chat entry of the endpoint table, read directly (it is most lines; tests keep the two equal)."""
    record["usage"] = body.get("usage")
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    if not isinstance(message, dict):
        message = {}
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        content = _text_parts(content)
    record["content"] = content
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    record["reasoning"] = None if reasoning is None else str(reasoning)
    record["tool_calls"] = message.get("tool_calls") or None
    finish = first.get("finish_reason")
    record["finish_reason"] = None if finish is None else str(finish)
    return record["finish_reason"] in _CHAT.answer.truncated_when


def _read_table(endpoint: Endpoint | None, body: dict[str, Any], record: dict[str, Any]) -> bool:
    if endpoint is None:  # an answer of an unknown kind: keep what is recognisable
        record["usage"] = body.get("usage")
        return False
    answer = read_answer(endpoint, body)
    record["content"] = answer.text
    record["reasoning"] = answer.reasoning
    record["tool_calls"] = answer.tool_calls
    record["finish_reason"] = answer.finish_reason
    record["embedding"] = answer.embedding
    record["usage"] = answer.usage
    return answer.truncated


def _text_parts(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "output_text")
        )
    return str(content)


def truncation_error(record: dict[str, Any]) -> dict[str, Any]:
    """Why a cut-off answer is not usable, and what to change."""
    empty = not record.get("content")
    if empty and record.get("reasoning"):
        message = (
            "the answer is empty: the reasoning used the whole output-token budget; raise max_tokens "
            "or lower reasoning_effort"
        )
    else:
        message = "the answer was cut off at the output-token limit; raise max_tokens"
    reason = record.get("finish_reason")
    return {
        "type": "truncated",
        "code": reason,
        "status": None,
        "message": f"{message} (finish_reason {reason})",
    }


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return None


def _message_from_body(body: Any) -> str | None:
    """An upstream error body (JSON text, an object or plain text) reduced to its message."""
    if body is None:
        return None
    parsed = body if isinstance(body, dict) else _parse_json(body)
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if parsed.get("message"):
            return str(parsed["message"])
        return json.dumps(parsed, ensure_ascii=False)
    return str(body)


def normalise_error(line: dict[str, Any]) -> dict[str, Any] | None:
    """A uniform ``{type, code, status, message}`` for a failed line (the JSON-string message parsed)."""
    error = line.get("error")
    response = line.get("response")
    if error:
        if not isinstance(error, dict):
            return {"type": "error", "code": None, "status": None, "message": str(error)}
        code = error.get("code")
        raw = error.get("message")
        parsed = _parse_json(raw)
        if isinstance(parsed, dict):  # Doubleword: a serialised failure reason
            details: dict[str, Any] = parsed["details"] if isinstance(parsed.get("details"), dict) else {}
            message = _message_from_body(details.get("body")) or details.get("error") or parsed.get("type")
            return {
                "type": str(parsed.get("type") or code or "error"),
                "code": code,
                "status": details.get("status"),
                "message": message,
            }
        return {"type": str(code or "error"), "code": code, "status": None, "message": raw}
    if isinstance(response, dict):
        status_code = response.get("status_code")
        if isinstance(status_code, int) and status_code >= 400:
            body = response.get("body")
            parsed_body = body if isinstance(body, dict) else _parse_json(body)
            err = parsed_body.get("error") if isinstance(parsed_body, dict) else None
            kind = err.get("type") if isinstance(err, dict) else None
            code = err.get("code") if isinstance(err, dict) else None
            return {
                "type": str(kind or code or f"http_{status_code}"),
                "code": code,
                "status": status_code,
                "message": _message_from_body(body),
            }
        return None
    return {"type": "no_response", "code": None, "status": None, "message": "the line has no response"}


def usage_tokens(usage: Any) -> tuple[int, int, int]:
    """(input, output, total) tokens from chat/completions/embeddings/responses/messages usage."""
    if not isinstance(usage, dict):
        return 0, 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    total = usage.get("total_tokens") or (prompt + completion)
    try:
        return int(prompt), int(completion), int(total)
    except (TypeError, ValueError):
        return 0, 0, 0


# --------------------------------------------------------------------------- JSON answers


def endpoint_of_request(request: dict[str, Any]) -> Endpoint | None:
    return endpoint_for_url(request.get("url"))


def json_request(request: dict[str, Any]) -> tuple[bool, Any]:
    """Whether a request line asked for JSON output, and its schema (None for ``json_object``)."""
    endpoint = endpoint_of_request(request) or _CHAT
    body = request.get("body")
    field = endpoint.json_schema_field
    if not isinstance(body, dict) or not field:
        return False, None
    spec = body.get(field)
    if field == "text":  # responses: text.format
        spec = spec.get("format") if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return False, None
    kind = spec.get("type")
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        return False, None
    holder = spec.get("json_schema") if field == "response_format" else spec
    schema = holder.get("schema") if isinstance(holder, dict) else None
    return True, schema if isinstance(schema, dict) else None


_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL)


def check_json(content: Any, schema: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(parsed, None)`` for a JSON answer that parses (after removing a surrounding code fence) and fits
    ``schema``; ``(None, error)`` otherwise, the error naming the failing path and why."""
    if not isinstance(content, str) or not content.strip():
        return None, _invalid("$", "the answer is empty where JSON was asked for")
    text = content
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, _invalid("$", f"the answer is not valid JSON ({exc})")
    if schema is None:
        if not isinstance(parsed, dict):
            return None, _invalid("$", f"a JSON object was asked for, got {type(parsed).__name__}")
        return parsed, None
    last_schema, validator = _LAST_VALIDATOR
    if schema != last_schema:  # most jobs send one schema: compared, not re-encoded, on every line
        validator = _validator(json.dumps(schema, sort_keys=True))
        _LAST_VALIDATOR[:] = [schema, validator]
    if validator is None:
        return parsed, None  # the request's own schema is not a valid schema: nothing to check against
    error = next(iter(sorted(validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return parsed, None
    return None, _invalid(error.json_path, error.message)


def _invalid(path: str, why: str) -> dict[str, Any]:
    return {"type": "invalid_json", "code": None, "status": None, "path": path, "message": f"{path}: {why}"}


_LAST_VALIDATOR: list[Any] = [None, None]


@lru_cache(maxsize=64)
def _validator(schema_text: str) -> Any:
    import jsonschema  # only JSON-output requests pay for the import

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


# --------------------------------------------------------------------------- one served line, encoded

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode


def record_bytes(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8. A string holding a lone surrogate (half an emoji, which a
    server's JSON can only send escaped, as ``\\ud83d``: a token limit cut the pair) has no UTF-8: the
    whole value is then ASCII JSON, the escape kept as sent (read back, the same string)."""
    text = _encode(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(value).encode("ascii")


_CONTENT_KEY = b'"content":"'
_PLACEHOLDER = b'"\\u0000"'
Encoded = tuple[Any, Any, str, tuple[int, int, int], Any, Any, bytes]
HEAD_KEYS = ("custom_id", "status", "parsed", "attempts")  # the join's keys, before ANSWER_KEYS


def encode_line(raw: bytes, batch_id: str | None, endpoint: Endpoint | None) -> Encoded | None:
    """A served line as ``(line_id, custom_id, status, tokens, error type, error status, record)``, where
    record is the line's results.jsonl line as it stands when nothing else is known (one attempt, no JSON
    check: UTF-8 JSON, every key of SPEC section 4); None when the bytes are not an output line.

    Decoded once. Chat answers, most lines, take a direct path: with orjson (:mod:`doubleword.fastjson`)
    the line is decoded and the record encoded by it; without, the answer text, the bulk of a line, is not
    decoded at all: its JSON string is copied as served into the record and only the rest of the line is
    parsed (the placement is checked). Anything unusual takes the plain path, which decides."""
    if endpoint is _CHAT or endpoint is None:
        fast = _encode_chat(raw, batch_id)
        if fast is not None:
            return fast
    line = decode_line(raw)
    if line is None:
        return None
    status, members = interpret(line, batch_id, endpoint)
    record = {"custom_id": line.get("custom_id"), "status": status, "parsed": None, "attempts": 1, **members}
    return _pack(line, status, members, record_bytes(record))


def _chat_parts(line: Any) -> tuple[Any, Any, Any, Any] | None:
    """(response, body, first choice, message) of a successful chat line, else None (the plain path)."""
    try:
        response = line["response"]
        body = response["body"]
        choice = body["choices"][0]
        message = choice["message"]
        code = response.get("status_code", 200)
    except (KeyError, IndexError, TypeError):
        return None
    if line.get("error") or "custom_id" not in line or not isinstance(code, int) or code >= 400:
        return None
    if not isinstance(message, dict) or not isinstance(choice, dict) or not isinstance(body, dict):
        return None
    return response, body, choice, message


def _chat_members(line: Any, body: Any, choice: Any, message: Any, batch_id: str | None) -> tuple[str, dict]:
    """The line's status and its answer members after ``content`` (the plain path's values)."""
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    finish = choice.get("finish_reason")
    finish = None if finish is None else str(finish)
    members = {
        "reasoning": None if reasoning is None else str(reasoning),
        "tool_calls": message.get("tool_calls") or None,
        "finish_reason": finish,
        "embedding": None,
        "usage": body.get("usage"),
        "error": None,
        "batch_id": batch_id,
        "line_id": line.get("id"),
        "model": body.get("model"),
    }
    if finish in _TRUNCATED:
        members["error"] = truncation_error({"content": "x", "finish_reason": finish})
        return "truncated", members
    return "completed", members


def _encoded(line: Any, status: str, members: dict, record: bytes) -> Encoded:
    usage = members["usage"]
    line_id = line.get("id")
    return (
        None if line_id is None else str(line_id),
        line["custom_id"],
        status,
        usage_tokens(usage) if usage else (0, 0, 0),
        "truncated" if status == "truncated" else None,
        None,
        record,
    )


def _encode_chat(raw: bytes, batch_id: str | None) -> Encoded | None:
    """:func:`encode_line` for a chat answer (it runs once per line of most jobs)."""
    if fastjson.loads is not None:
        return _encode_chat_accelerated(raw, batch_id)
    start = raw.find(_CONTENT_KEY)
    if start < 0:
        return None
    first = start + len(_CONTENT_KEY)  # the first byte inside the string
    end = _string_end(raw, first)
    if end <= first:  # unterminated, or an empty answer (the placeholder would hide that it is empty)
        return None
    literal = raw[first - 1 : end + 1]
    if not literal.isascii():
        try:
            literal.decode("utf-8")  # results.jsonl stays valid UTF-8; a sloppy server takes the plain path
        except UnicodeDecodeError:
            return None
    try:
        line = json.loads(raw[: first - 1] + _PLACEHOLDER + raw[end + 1 :])
    except (ValueError, RecursionError):
        return None
    parts = _chat_parts(line)
    if parts is None or parts[3].get("content") != "\x00":
        return None  # not where the placeholder went, or a failure: the plain path decides
    status, members = _chat_members(line, *parts[1:], batch_id)
    head = (
        b'{"custom_id":'
        + record_bytes(line["custom_id"])
        + f',"status":"{status}","parsed":null,"attempts":1,"content":'.encode()
    )
    record = head + literal + b"," + record_bytes(members)[1:]
    return _encoded(line, status, members, record)


def _encode_chat_accelerated(raw: bytes, batch_id: str | None) -> Encoded | None:
    """The chat path with orjson, in one function (no helper calls: it runs once per line)."""
    assert fastjson.loads is not None and fastjson.dumps is not None
    try:
        line = fastjson.loads(raw)
        response = line["response"]
        body = response["body"]
        choice = body["choices"][0]
        message = choice["message"]
        content = message["content"]
        code = response.get("status_code", 200)
        custom_id = line["custom_id"]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None  # orjson refuses what the standard library may accept, or not a plain answer
    if type(content) is not str or not content or line.get("error") or type(code) is not int or code >= 400:
        return None  # the plain path decides
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    finish = choice.get("finish_reason")
    finish = None if finish is None else str(finish)
    usage = body.get("usage")
    line_id = line.get("id")
    status, error = "completed", None
    if finish in _TRUNCATED:
        status = "truncated"
        error = truncation_error({"content": content, "finish_reason": finish})
    record = {
        "custom_id": custom_id,
        "status": status,
        "parsed": None,
        "attempts": 1,
        "content": content,
        "reasoning": None if reasoning is None else str(reasoning),
        "tool_calls": message.get("tool_calls") or None,
        "finish_reason": finish,
        "embedding": None,
        "usage": usage,
        "error": error,
        "batch_id": batch_id,
        "line_id": line_id,
        "model": body.get("model"),
    }
    return (
        None if line_id is None else str(line_id),
        custom_id,
        status,
        usage_tokens(usage) if usage else (0, 0, 0),
        None if error is None else "truncated",
        None,
        fastjson.dumps(record),
    )


_TRUNCATED = _CHAT.answer.truncated_when


def _string_end(raw: bytes, start: int) -> int:
    """The index of the quote that ends the JSON string starting at ``start`` (-1 if none)."""
    end = raw.find(b'"', start)
    while end > 0:
        k = end - 1
        while raw[k] == 92:  # backslash
            k -= 1
        if (end - 1 - k) % 2 == 0:
            return end
        end = raw.find(b'"', end + 1)
    return -1


def _pack(line: dict[str, Any], status: str, record: dict[str, Any], encoded: bytes) -> Encoded:
    error = record["error"]
    line_id = record["line_id"]
    return (
        None if line_id is None else str(line_id),
        line.get("custom_id"),
        status,
        usage_tokens(record["usage"]),
        error.get("type") if error else None,
        error.get("status") if error else None,
        encoded,
    )


def decode_line(raw: bytes) -> dict[str, Any] | None:
    """A served line as an object if it looks like an output or error line, else None. Bytes that are not
    UTF-8 (a sloppy server) become U+FFFD, so the answer still counts instead of being resubmitted."""
    try:
        line = json.loads(raw)
    except UnicodeDecodeError:
        try:
            line = json.loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        return None
    if not isinstance(line, dict) or "custom_id" not in line or not ("response" in line or "error" in line):
        return None
    return line
