"""Line checks: one parsed request line against the line rules, its endpoint's body schema, the server's
reasoning rules and image parts; and the one fast check of a plain, valid line that both the file scan and
the batch writer use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from doubleword.config import BATCH_ENDPOINTS, MAX_CUSTOM_ID_BYTES
from doubleword.endpoints import REASONING_EFFORTS, Endpoint, endpoint_for_url
from doubleword.validation.fast import image_problems
from doubleword.validation.schemas import (
    body_text_chars,
    endpoint_checker,
    shorten,
    similar,
)

# Doubleword's per-line limit on the request body (references/api_reference.md section 10).
MAX_BODY_BYTES = 10 * 1024 * 1024

ERROR_CODES = {
    "file_not_found": "the path does not exist or cannot be read",
    "empty_file": "the file holds no request line",
    "file_too_large": "the file exceeds the size limit (200 MB)",
    "too_many_requests": "the file holds more requests than allowed (50,000)",
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not valid JSON",
    "not_object": "the line is JSON but not an object",
    "missing_field": "custom_id, method, url or body is missing",
    "invalid_type": "custom_id, method or url is not a string, or body is not an object",
    "invalid_custom_id": "custom_id contains control characters",
    "custom_id_too_long": "custom_id is longer than 64 UTF-8 bytes",
    "duplicate_custom_id": "custom_id was already used on an earlier line",
    "invalid_method": "method is not POST",
    "invalid_url": "url is not one of the batchable endpoints",
    "url_mismatch": "url differs from the url of the first line",
    "missing_model": "body.model is missing, empty or not a string",
    "invalid_body": "body does not match the schema of its endpoint",
    "body_too_large": "the request line exceeds the 10 MB per-request limit",
    "unsupported_parameter": "a reasoning field the server refuses (chat_template_kwargs, thinking, ...)",
    "invalid_reasoning_effort": "reasoning effort not a string in none, minimal, low, medium, high, xhigh, max",
    "not_jsonl": "the file is not JSON lines at all (a CSV or a prompts file given instead of a batch file)",
    "rows_file": "the file is a source-rows file (X.rows.jsonl) given instead of its batch file X.jsonl",
    "answers_file": "the file holds answers (output, error or results lines), not requests",
    "invalid_image": "an image part's URL is neither http(s) nor a data:image/...;base64 URI with valid base64",
}
WARNING_CODES = {
    "blank_line": "blank line (the server skips it, but line numbers shift)",
    "stream_enabled": "body.stream is true (it buys nothing in a batch; some endpoints would store SSE text)",
    "empty_content": "a user message's content is empty or blank",
    "priority_ignored": "body.priority is removed by the server",
    "unknown_field": "a body field that is a near-miss of a known field name",
    "method_case": "method is POST in another case",
    "empty_custom_id": "custom_id is the empty string",
}

REQUIRED_FIELDS = ("custom_id", "method", "url", "body")
_IMAGE_PATTERN = "^(https?://|data:image/"  # the schemas' image URL pattern, as it shows in their messages
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def plain_line(obj: Any, url: str | None, fast_check: Callable[[dict[str, Any]], int] | None) -> int:
    """Prompt characters when ``obj`` is the common, valid shape for ``url`` (a printable ASCII custom_id
    of 1-64 bytes, method POST, that url, a body the endpoint's fast check accepts); -1 otherwise, and the
    caller runs :func:`inspect_line` for the details. Uniqueness is the caller's."""
    if fast_check is None or type(obj) is not dict:
        return -1
    cid = obj.get("custom_id")
    body = obj.get("body")
    if (
        type(cid) is str
        and type(body) is dict
        and obj.get("url") == url
        and obj.get("method") == "POST"
        and 0 < len(cid) <= MAX_CUSTOM_ID_BYTES
        and cid.isascii()
        and cid.isprintable()
    ):
        return fast_check(body)
    return -1


def custom_id_problems(cid: str) -> list[tuple[str, str]]:
    problems = []
    size = len(cid.encode("utf-8", "surrogatepass"))
    if size > MAX_CUSTOM_ID_BYTES:
        problems.append(
            (
                "custom_id_too_long",
                f"custom_id is {size} bytes in UTF-8; the limit is {MAX_CUSTOM_ID_BYTES}; use a shorter id",
            )
        )
    bad = _CONTROL_CHARS.search(cid)
    if bad:
        problems.append(
            (
                "invalid_custom_id",
                f"custom_id contains the control character U+{ord(bad.group()):04X}; "
                "remove control characters (tab is allowed)",
            )
        )
    return problems


def _missing_hint(obj: dict[str, Any], field: str) -> str:
    for key in obj:
        if key not in REQUIRED_FIELDS and similar(key, field):
            return f"; found {key!r}, rename it to {field!r}"
    return ""


Problems = list[tuple[str, str]]


def inspect_line(obj: Any) -> tuple[Problems, Problems, int]:
    """Detailed (errors, warnings, text_chars) of one parsed line, without the file-level rules."""
    if not isinstance(obj, dict):
        kind = "an array" if isinstance(obj, list) else type(obj).__name__
        hint = "; put one request object per line" if isinstance(obj, list) else ""
        return [("not_object", f"line is {kind}, not a JSON object{hint}")], [], 0
    errors: Problems = []
    warnings: Problems = []
    for field in REQUIRED_FIELDS:
        if field not in obj:
            errors.append(
                ("missing_field", f"required field {field!r} is missing{_missing_hint(obj, field)}")
            )
    _envelope_problems(obj, errors, warnings)
    body = obj.get("body")
    if "body" not in obj:
        return errors, warnings, 0
    if not isinstance(body, dict):
        errors.append(("invalid_type", f"body must be a JSON object, not {_json_type(body)}"))
        return errors, warnings, 0
    return errors, warnings, _body_problems(endpoint_for_url(obj.get("url")), body, errors, warnings)


def _envelope_problems(obj: dict[str, Any], errors: Problems, warnings: Problems) -> None:
    """custom_id, method and url."""
    cid = obj.get("custom_id")
    if "custom_id" in obj:
        if not isinstance(cid, str):
            errors.append(("invalid_type", f"custom_id must be a string, not {_json_type(cid)}; quote it"))
        else:
            errors.extend(custom_id_problems(cid))
            if cid == "":
                warnings.append(("empty_custom_id", "custom_id is empty; results cannot be matched to it"))
    method = obj.get("method")
    if "method" in obj:
        if not isinstance(method, str):
            errors.append(("invalid_type", f"method must be the string 'POST', not {_json_type(method)}"))
        elif method.upper() != "POST":
            errors.append(("invalid_method", f"method is {method!r}; only 'POST' is supported"))
        elif method != "POST":
            warnings.append(("method_case", f"method {method!r} is accepted but stored as sent; use 'POST'"))
    url = obj.get("url")
    if "url" in obj:
        if not isinstance(url, str):
            errors.append(("invalid_type", f"url must be a string, not {_json_type(url)}"))
        elif url not in BATCH_ENDPOINTS:
            errors.append(
                ("invalid_url", f"url {shorten(url)!r} is not a batchable endpoint; {_url_hint(url)}")
            )


def _body_problems(
    endpoint: Endpoint | None, body: dict[str, Any], errors: Problems, warnings: Problems
) -> int:
    """body.model, then (for a batchable url) the schema, the reasoning rules and image parts; returns the
    prompt characters."""
    model = body.get("model")
    bad_model = "model" not in body or not isinstance(model, str) or not model
    if "model" not in body:
        errors.append(("missing_model", 'body.model is missing; add the model name, e.g. "model": "..."'))
    elif bad_model:
        what = "empty" if model == "" else f"{_json_type(model)}, not a string"
        errors.append(("missing_model", f"body.model is {what}; set it to a model name from GET /models"))
    if endpoint is None:
        return body_text_chars(body)
    checker = endpoint_checker(endpoint.url)
    chars = checker.fast_check(body)
    if chars >= 0:
        return chars
    reasoning = reasoning_problems(endpoint, body)
    refused = {field.split(".")[0] for field in endpoint.refused_reasoning if field.split(".")[0] in body}
    if endpoint.reasoning_effort is not None:
        refused.add(str(endpoint.reasoning_effort[0]))
    images = [f"body.{p}" for key in ("messages", "input") for p in image_problems(body.get(key), key)]
    body_errors, body_warnings = checker.body_problems(body)
    for code, message in body_errors:
        field = message.split(":", 1)[0].removeprefix("body.").split(".", 1)[0].split("[", 1)[0]
        if field == "model" or (bad_model and "'model'" in message):
            continue  # reported above with its own code
        if reasoning and field in refused:
            continue  # reported below with the server's own words
        if images and _IMAGE_PATTERN in message:
            continue  # the image checks below say what is wrong with it
        errors.append((code, message))
    errors.extend(reasoning)
    errors.extend(("invalid_image", message) for message in images)
    warnings.extend(body_warnings)
    return body_text_chars(body)


def reasoning_problems(endpoint: Endpoint, body: dict[str, Any]) -> Problems:
    """The server's reasoning rules (refused fields first, then the effort's type and value)."""
    for field in endpoint.refused_reasoning:
        head, _, sub = field.partition(".")
        value = body.get(head)
        if head in body and (not sub or (isinstance(value, dict) and sub in value)):
            return [("unsupported_parameter", f"body.{field}: {endpoint.reasoning_message_for(field)}")]
    if endpoint.reasoning_effort is None:
        return []
    *parents, last = (str(step) for step in endpoint.reasoning_effort)
    holder: Any = body
    for key in parents:
        if key not in holder:
            return []
        holder = holder[key]
        if holder is not None and not isinstance(holder, dict):
            return [
                ("invalid_reasoning_effort", f"body.{key}: Invalid type for '{key}'. Expected an object.")
            ]
    name = ".".join((*parents, last))
    if not isinstance(holder, dict) or holder.get(last) is None:
        return []
    effort = holder[last]
    if not isinstance(effort, str):
        return [("invalid_reasoning_effort", f"body.{name}: Invalid type for '{name}'. Expected a string.")]
    if effort not in REASONING_EFFORTS:
        return [
            (
                "invalid_reasoning_effort",
                f"body.{name}: {effort!r} is not a reasoning effort; use one of {', '.join(REASONING_EFFORTS)}",
            )
        ]
    return []


def validate_line(obj: Any) -> list[dict[str, str]]:
    """Problems of one parsed request line (everything but uniqueness and one url per file).

    Each problem is ``{"severity": "error" | "warning", "code": ..., "message": ...}``; an empty list means
    the line is valid as it stands.
    """
    errors, warnings, _ = inspect_line(obj)
    return [{"severity": "error", "code": c, "message": m} for c, m in errors] + [
        {"severity": "warning", "code": c, "message": m} for c, m in warnings
    ]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _url_hint(url: str) -> str:
    stripped = url.strip()
    for endpoint in BATCH_ENDPOINTS:
        if stripped.rstrip("/").endswith(endpoint[3:]) and stripped != endpoint:
            return f"use the path {endpoint!r} (no host, no /ai prefix, no query string)"
    return "use one of " + ", ".join(BATCH_ENDPOINTS)
