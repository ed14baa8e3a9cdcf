"""Build request lines for each endpoint, from the endpoint table (where each option goes).

Public API (importable from Python as well as used by create_batch_file.py and submit.py):
    make_request(prompt_or_messages, *, model, custom_id, endpoint="chat", ...) -> dict
    and, from :mod:`doubleword.batchfile` (sharded, atomic, streaming writes):
    write_batch(requests, out_path, *, max_requests=..., max_bytes=...) -> list of shard dicts
    shard_file(path, out_prefix, *, max_requests=..., max_bytes=...) -> list of shard dicts
    shard_paths(out_path, count), rows_path(batch_path), BatchWriter
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from doubleword.batchfile import (  # re-exported: the writing API has always been importable from here
    DUPLICATES,
    BatchWriter,
    rows_path,
    shard_file,
    shard_paths,
    write_batch,
)
from doubleword.endpoints import ENDPOINTS as TABLE
from doubleword.endpoints import REASONING_EFFORTS, Endpoint, endpoint_named
from doubleword.errors import UsageError

__all__ = [
    "DUPLICATES",
    "ENDPOINTS",
    "BatchWriter",
    "endpoint_url",
    "json_schema_format",
    "make_request",
    "rows_path",
    "shard_file",
    "shard_paths",
    "write_batch",
]

# name -> url, kept for callers of this module (the facts live in doubleword.endpoints).
ENDPOINTS = {name: e.url for name, e in TABLE.items()}


def endpoint_url(endpoint: str) -> str:
    """``chat`` -> ``/v1/chat/completions``; a full batchable path is accepted as it is."""
    return endpoint_named(endpoint).url


def json_schema_format(schema: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The ``json_schema`` member of a structured-output request from a schema file's content.

    Accepts either a bare JSON Schema (named after its ``title``, else ``response``) or an object that
    already has ``name`` and ``schema`` (OpenAI's ``json_schema`` shape).
    """
    if not isinstance(schema, dict):
        raise UsageError("the JSON schema must be a JSON object")
    if "schema" in schema and "name" in schema and isinstance(schema["schema"], dict):
        return dict(schema)
    raw = name or str(schema.get("title") or "response")
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in raw)[:64] or "response"
    return {"name": safe, "schema": schema, "strict": True}


def make_request(
    prompt_or_messages: str | list[Any],
    *,
    model: str,
    custom_id: str,
    endpoint: str = "chat",
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stop: str | list[str] | None = None,
    json_schema: dict[str, Any] | None = None,
    images: list[str] | None = None,
    reasoning_effort: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request line as a dict, for ``endpoint`` chat (default), embeddings, responses, completions
    or messages (Anthropic). A string is the user prompt; a list is used as the messages (chat, responses,
    messages) or as the input/prompt list (embeddings, completions). ``images`` (http(s) URLs or data URIs)
    become image parts after the text of the user message; ``reasoning_effort`` goes where the endpoint
    takes it. ``extra`` sets any other body field and wins over the named arguments. Where each option
    goes is the endpoint table's (:mod:`doubleword.endpoints`).
    """
    ep = endpoint_named(endpoint)
    if not isinstance(model, str) or not model:
        raise UsageError("a model is required (e.g. --model Qwen/Qwen3.5-9B)")
    _refuse_options(
        ep.name,
        (
            temperature is not None,
            top_p is not None,
            max_tokens is not None,
            bool(stop),
            json_schema is not None,
            system is not None,
            bool(images),
        ),
        reasoning_effort,
        bool(extra) and ep.max_tokens_field in extra,  # type: ignore[operator]
    )
    body: dict[str, Any] = {"model": model}
    body[ep.prompt_field] = _prompt_value(ep, prompt_or_messages, images or ())
    if system is not None:
        if ep.system_field == "messages":
            body["messages"].insert(0, {"role": "system", "content": system})
        else:
            body[str(ep.system_field)] = system
    _place_options(ep, body, temperature, top_p, max_tokens, stop, json_schema)
    if reasoning_effort is not None:
        ep.place_reasoning_effort(body, reasoning_effort)
    if extra:
        body.update(extra)
    return {"custom_id": custom_id, "method": "POST", "url": ep.url, "body": body}


def _place_options(
    ep: Endpoint,
    body: dict[str, Any],
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: str | list[str] | None,
    json_schema: dict[str, Any] | None,
) -> None:
    """Sampling, output limit, stop sequences and structured output, where the endpoint takes them."""
    for key, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None:
            body[key] = value
    if max_tokens is not None:
        body[str(ep.max_tokens_field)] = max_tokens
    if stop:
        body[str(ep.stop_field)] = [stop] if isinstance(stop, str) else list(stop)
    if json_schema is not None:
        fmt = json_schema_format(json_schema)
        if ep.json_schema_field == "response_format":
            body["response_format"] = {"type": "json_schema", "json_schema": fmt}
        else:
            body["text"] = {"format": {"type": "json_schema", **fmt}}


# option -> the endpoint-table member that must be set for the option to apply
_NEEDS = {
    "system": "system_field",
    "max_tokens": "max_tokens_field",
    "stop": "stop_field",
    "json_schema": "json_schema_field",
    "images": "image_part",
    "reasoning_effort": "reasoning_effort",
}


_OPTIONS = ("temperature", "top_p", "max_tokens", "stop", "json_schema", "system", "images")


@lru_cache(maxsize=256)
def _refuse_options(name: str, flags: tuple[bool, ...], effort: str | None, limit_in_extra: bool) -> None:
    """A usage error for an option the endpoint has no place for (the table says where each goes);
    ``flags`` says which of ``_OPTIONS`` are given. Cached: every request of a batch asks the same."""
    ep = TABLE[name]
    given = {option for option, flag in zip(_OPTIONS, flags, strict=True) if flag}
    if not ep.sampling:
        sampling = [k for k in ("temperature", "top_p", "max_tokens", "stop", "json_schema") if k in given]
        if sampling:
            named = ", ".join("--" + k.replace("_", "-") for k in sampling)
            raise UsageError(
                f"{named} {'does' if len(sampling) == 1 else 'do'} not apply to the {ep.name} endpoint "
                f"({ep.url}): it takes no sampling options, output limit or JSON schema"
            )
    for option, member in _NEEDS.items():
        if (option in given or (option == "reasoning_effort" and effort is not None)) and getattr(
            ep, member
        ) is None:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} does not apply to the {ep.name} endpoint ({ep.url})")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise UsageError(f"--reasoning-effort {effort!r}: use one of {', '.join(REASONING_EFFORTS)}")
    if ep.max_tokens_required and "max_tokens" not in given and not limit_in_extra:
        raise UsageError(f"the {ep.name} endpoint requires max_tokens (--max-tokens N)")


def _prompt_value(ep: Endpoint, prompt: str | list[Any], images: Sequence[str]) -> Any:
    """What goes in the endpoint's prompt field: the text (with its image parts), or the given list."""
    if not isinstance(prompt, str):
        return list(prompt)
    if not images:
        return [{"role": "user", "content": prompt}] if ep.prompt_in_messages else prompt
    parts = [_text_part(ep, prompt)] if prompt else []
    parts.extend(_image_part(ep, url) for url in images)
    return [{"role": "user", "content": parts}]


def _text_part(ep: Endpoint, text: str) -> dict[str, Any]:
    return {"type": "input_text" if ep.image_part == "input_image" else "text", "text": text}


def _image_part(ep: Endpoint, url: str) -> dict[str, Any]:
    if ep.image_part == "image_url":
        return {"type": "image_url", "image_url": {"url": url}}
    if ep.image_part == "input_image":
        return {"type": "input_image", "image_url": url}
    if url.startswith("data:"):  # Anthropic: base64 source blocks
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def set_overrides(images: list[str] | None, **options: Any) -> list[str]:
    """Warnings for ``--set`` fields that replace what a named option put in the body (--set max_tokens=99
    beside --max-tokens 10 sends 99): ``options`` are :func:`make_request`'s, ``extra`` the --set fields."""
    extra = options.get("extra") or {}
    if not extra:
        return []
    plain = make_request("probe", custom_id="probe", images=images, **{**options, "extra": None})["body"]
    return [
        f"set_overrides: --set {key} replaces the {key} the other options give "
        f"({json.dumps(plain[key], ensure_ascii=False)[:60]}); the --set value is sent"
        for key in extra
        if key in plain and plain[key] != extra[key]
    ]
