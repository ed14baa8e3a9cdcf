"""Schema checking: the JSON Schemas of references/schemas/ compiled once, and per endpoint a checker whose
fast path is derived from its body schema (simple properties become predicates, complex ones get a compiled
validator of that property alone, the hot ones the hand-written checks the endpoint table names) and whose
slow path is the full schema, for the detailed messages.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from doubleword.config import SCHEMA_DIR
from doubleword.endpoints import ENDPOINTS
from doubleword.errors import CliError
from doubleword.validation.fast import (
    FAST_KINDS,
    INTEGER,
    NUMBER,
    OTHER,
    fast_model,
    fast_no_stream,
    first_of,
    image_part_chars,
    image_problems,
    numeric_spec,
    scalar_checker,
)

SCHEMA_FILES = {e.url: e.schema_file for e in ENDPOINTS.values()}
_HOT_PATHS: dict[str, dict[str, Callable[[Any], int]]] = {
    e.url: {key: FAST_KINDS[kind] for key, kind in e.fast_paths} for e in ENDPOINTS.values()
}
# Keys whose string content counts towards the input-token estimate.
TEXT_KEYS = ("messages", "input", "prompt", "system", "instructions")
_IMAGE_KEYS = frozenset({"messages", "input"})
_NONTEXT_KEYS = frozenset(
    {"role", "type", "id", "tool_call_id", "name", "image_url", "input_audio", "file", "file_data"}
    | {"file_id", "file_url", "url", "data", "source", "detail", "format", "tool_use_id"}
)
_MAX_MESSAGE = 300
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One schema from references/schemas/ (found through this file, never the working directory)."""
    path = Path(SCHEMA_DIR) / name
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:  # not the user's file: the skill's folder is missing a part
        raise CliError(
            f"the skill is incomplete: {path} cannot be read ({exc.strerror or exc}); scripts/ needs the "
            "references/ folder that ships beside it: install the whole skill folder again"
        ) from None


@lru_cache(maxsize=1)
def schema_registry() -> Any:
    """A referencing.Registry holding every schema under its $id (so cross-file $refs resolve)."""
    from referencing import Registry, Resource

    resources = []
    for path in sorted(Path(SCHEMA_DIR).glob("*.schema.json")):
        schema = load_schema(path.name)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def schema_validator(name: str, pointer: str = "") -> Any:
    """A compiled Draft 2020-12 validator for a schema file, or for a part of it (JSON pointer)."""
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    target = {"$ref": f"{schema['$id']}#{pointer}"} if pointer else schema
    return Draft202012Validator(target, registry=schema_registry())


class EndpointChecker:
    """Validation of one endpoint's body: a fast path derived from the schema, and the full schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema_file = SCHEMA_FILES[url]
        schema = load_schema(self.schema_file)
        self._validator: Any = None
        self.required = tuple(schema.get("required", ()))
        properties: dict[str, Any] = schema.get("properties", {})
        self.known = tuple(properties)
        self.checks: dict[str, Callable[[Any], int]] = {}
        hot = _HOT_PATHS.get(url, {})
        for name, sub in properties.items():
            scalar = scalar_checker(sub)
            fast = fast_model if name == "model" else hot.get(name)
            if name == "stream" and scalar is not None:
                self.checks[name] = fast_no_stream
            elif scalar is not None:
                self.checks[name] = scalar if fast is None else first_of(fast, scalar)
            else:
                # Complex property: try the hand-written hot path, then that property's own schema.
                self.checks[name] = self._with_fallback(name, fast)
        self.specs: dict[str, tuple[Any, ...]] = {}
        for name, check in self.checks.items():
            numeric = numeric_spec(properties[name])
            self.specs[name] = numeric if numeric is not None and name not in hot else (OTHER, check)

    @property
    def validator(self) -> Any:
        """The full body validator, compiled on first use (importing jsonschema costs time)."""
        if self._validator is None:
            self._validator = schema_validator(self.schema_file)
        return self._validator

    def _with_fallback(self, name: str, fast: Callable[[Any], int] | None) -> Callable[[Any], int]:
        counts_text = name in TEXT_KEYS
        checks_images = name in _IMAGE_KEYS
        compiled: list[Any] = []

        def check(value: Any) -> int:
            if fast is not None:
                result = fast(value)
                if result >= 0:
                    return result
            if not compiled:
                compiled.append(schema_validator(self.schema_file, f"/properties/{name}"))
            if not compiled[0].is_valid(value):
                return -1
            if checks_images and image_problems(value, name):
                return -1  # the schema cannot check a data URI's base64; the line checks say why
            if name == "messages" and _empty_prompts(value):
                return -1  # valid, but worth a warning: the line checks give it
            return text_chars(value) if counts_text else 0

        return check

    def fast_check(self, body: dict[str, Any]) -> int:
        """Characters of prompt text when ``body`` is valid and warrants no warning; -1 otherwise."""
        chars = 0
        specs = self.specs
        for key, value in body.items():
            spec = specs.get(key)
            if spec is None:
                if near_miss(key, self.url) is not None:
                    return -1
                continue
            kind = spec[0]
            # Numeric ranges are inlined: this loop runs for every line of every file.
            if kind == NUMBER:
                kind_of = type(value)
                if (kind_of is float or kind_of is int) and spec[1] <= value <= spec[2]:
                    continue
                if value is None and spec[3]:
                    continue
                return -1
            if kind == INTEGER:
                if type(value) is int and spec[1] <= value <= spec[2]:
                    continue
                if value is None and spec[3]:
                    continue
                return -1
            result = spec[1](value)
            if result < 0:
                return -1
            chars += result
        for key in self.required:
            if key not in body:
                return -1
        return chars

    def body_problems(self, body: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Detailed (errors, warnings) for a body, from the full schema."""
        from jsonschema.exceptions import best_match, relevance

        errors: list[tuple[str, str]] = []
        warnings: list[tuple[str, str]] = []
        unknown = [k for k in body if k not in self.checks]
        found = sorted(self.validator.iter_errors(body), key=relevance)
        for error in found[:3]:
            error = best_match([error]) or error
            where = "body" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            message = shorten(error.message)
            hint = ""
            if error.validator == "required":
                missing = re.findall(r"'([^']+)' is a required property", error.message)
                for k in unknown:
                    if missing and similar(k, missing[0]):
                        hint = f"; did you misspell it as {k!r}?"
            errors.append(
                (
                    "invalid_body",
                    f"{where}: {message}{hint} (endpoint {self.url}; see references/schemas/{self.schema_file})",
                )
            )
        if len(found) > 3:
            errors.append(("invalid_body", f"... and {len(found) - 3} more problems in this body"))
        if body.get("stream") is True:
            warnings.append(
                (
                    "stream_enabled",
                    "body.stream is true: it buys nothing in a batch (the answer is stored whole, and on some "
                    "endpoints as SSE text); remove it or set false",
                )
            )
        warnings.extend(_empty_prompts(body.get("messages")))
        for key in unknown:
            target = near_miss(key, self.url)
            if key == "priority":
                warnings.append(
                    (
                        "priority_ignored",
                        "body.priority is removed by the server and has no effect; remove it",
                    )
                )
            elif target is not None:
                warnings.append(
                    (
                        "unknown_field",
                        f"body.{key} is not a known {self.url} field; did you mean {target!r}? "
                        "Unknown fields are passed to the model as they are",
                    )
                )
        return errors, warnings


def _empty_prompts(messages: Any) -> list[tuple[str, str]]:
    """A warning per user message whose text is empty or blank (the model gets no prompt from it)."""
    found = []
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str) and not content.strip():
            found.append(
                (
                    "empty_content",
                    f"body.messages[{index}].content is empty: the model gets no prompt from it; "
                    "fill it in or leave the line out",
                )
            )
    return found


def similar(a: str, b: str) -> bool:
    return _norm(a) == _norm(b) or difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.8


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "").replace(" ", "")


@lru_cache(maxsize=4096)
def near_miss(key: str, url: str) -> str | None:
    """The known field ``key`` probably meant (``max_token`` -> ``max_tokens``), else None.

    ``priority`` is reported as itself: the server silently drops it.
    """
    if key == "priority":
        return "priority"
    known = [k for k in load_schema(SCHEMA_FILES[url]).get("properties", {}) if k != key]
    normalised = _norm(key)
    for k in known:
        if _norm(k) == normalised:
            return k
    match = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.85)
    return match[0] if match else None


@cache
def endpoint_checker(url: str) -> EndpointChecker:
    return EndpointChecker(url)


def text_chars(value: Any) -> int:
    """Characters of prompt text inside a body value, an image counted by its tokens (for the input-token
    estimate; as the fast checks count)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    if isinstance(value, dict):
        chars = sum(text_chars(v) for k, v in value.items() if k not in _NONTEXT_KEYS)
        if value.get("type") in _IMAGE_PARTS:
            chars += image_part_chars(value)
        return chars
    return 0


def body_text_chars(body: dict[str, Any]) -> int:
    return sum(text_chars(body[k]) for k in TEXT_KEYS if k in body)


def shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
