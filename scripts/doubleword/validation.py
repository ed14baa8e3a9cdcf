"""Local validation of batch input files against references/schemas/ and the file-level rules.

The JSON Schemas are the single source of truth. Running jsonschema on every line would be far too slow for
50,000-line files, so each endpoint gets a compiled checker *derived from its schema*: simple properties
(type, range, enum) become small Python predicates, complex ones (tools, response_format, ...) get a
compiled validator for that property alone, and the hot paths (chat messages with string content,
embeddings input, ...) have a hand-written check that only ever accepts what the schema accepts (the
tests compare the two on generated bodies). Anything the fast path does not accept goes through the full
schema validator, which produces the detailed messages.

Public API:
    validate_batch_file(path, *, max_errors=20, max_bytes=..., max_requests=...) -> report dict
    validate_line(obj) -> list of problems ({"severity", "code", "message"})
    ERROR_CODES, WARNING_CODES
"""

from __future__ import annotations

import difflib
import json
import json.scanner
import math
import re
import sys
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from doubleword.config import (
    BATCH_ENDPOINTS,
    MAX_CUSTOM_ID_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    SCHEMA_DIR,
)
from doubleword.endpoints import ENDPOINTS

# Doubleword's default per-line limit on the request body (doubleword-api.md section 1).
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
}
WARNING_CODES = {
    "blank_line": "blank line (the server skips it, but line numbers shift)",
    "stream_enabled": "body.stream is true (batch results would be SSE text)",
    "priority_ignored": "body.priority is removed by the server",
    "unknown_field": "a body field that is a near-miss of a known field name",
    "method_case": "method is POST in another case",
    "empty_custom_id": "custom_id is the empty string",
}

SCHEMA_FILES = {e.url: e.schema_file for e in ENDPOINTS.values()}
REQUIRED_FIELDS = ("custom_id", "method", "url", "body")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_MESSAGE = 300
# A \uD800-\uDFFF escape: Python accepts a lone one, the server does not. This finds candidates (with a
# literal prefix, so it is a fast scan); _has_lone_surrogate settles whether one is unpaired.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_BLOCK_SIZE = 1 << 20


# --------------------------------------------------------------------------- schemas


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One schema from references/schemas/ (found through this file, never the working directory)."""
    with open(Path(SCHEMA_DIR) / name, encoding="utf-8") as handle:
        return json.load(handle)


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


# --------------------------------------------------------------------------- fast checkers per endpoint

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "null": (type(None),),
}
_SIMPLE_KEYS = {"type", "minimum", "maximum", "enum", "description", "minLength", "examples"}


def _scalar_checker(sub: dict[str, Any]) -> Callable[[Any], int] | None:
    """A predicate equivalent to a simple property schema (type/range/enum), or None if not simple.

    Returns 0 when the value is valid and -1 when it is not (or when unsure: the schema decides then).
    ``type(v) in types`` is deliberately strict: bool is not a number here, and 1.0 for an integer falls
    back to the schema (which accepts it).
    """
    if set(sub) - _SIMPLE_KEYS or not ("type" in sub or "enum" in sub):
        return None
    names = sub.get("type", [])
    names = [names] if isinstance(names, str) else list(names)
    if any(n not in _PY_TYPES for n in names):
        return None
    types = frozenset(t for n in names for t in _PY_TYPES[n])
    enum = sub.get("enum")
    enum_set = frozenset(v for v in enum if isinstance(v, str)) if enum is not None else frozenset()
    enum_null = enum is not None and None in enum
    lo, hi, min_len = sub.get("minimum"), sub.get("maximum"), sub.get("minLength")

    def check(value: Any) -> int:
        if enum is not None:
            if value is None:
                return 0 if enum_null else -1
            if type(value) is not str or value not in enum_set:
                return -1
            if not types:
                return 0
        if type(value) not in types:
            return -1
        if value is None or type(value) is bool:
            return 0
        if type(value) is str:
            return -1 if min_len is not None and len(value) < min_len else 0
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return -1
        return 0

    return check


_SIMPLE_ROLES = frozenset({"system", "developer", "user", "assistant"})
_ANTHROPIC_ROLES = frozenset({"user", "assistant"})


def _fast_messages(roles: frozenset[str]) -> Callable[[Any], int]:
    """Messages whose items are {"role": R, "content": "<text>"} (plus an optional string name)."""

    def check(messages: Any) -> int:
        if type(messages) is not list or not messages:
            return -1
        chars = 0
        for message in messages:
            if type(message) is not dict:
                return -1
            content = message.get("content")
            if type(content) is not str or message.get("role") not in roles:
                return -1
            if len(message) != 2 and not (len(message) == 3 and type(message.get("name")) is str):
                return -1
            chars += len(content)
        return chars

    return check


def _fast_text_input(value: Any) -> int:
    """A non-empty string, or a non-empty list of strings (embeddings input, completions prompt)."""
    if type(value) is str:
        return len(value)
    if type(value) is not list or not value:
        return -1
    chars = 0
    for item in value:
        if type(item) is not str:
            return -1
        chars += len(item)
    return chars


def _fast_string(value: Any) -> int:
    return len(value) if type(value) is str else -1


def _fast_model(value: Any) -> int:
    return 0 if type(value) is str and value else -1


def _fast_no_stream(value: Any) -> int:
    # stream: true is valid but deserves a warning, which only the detailed path produces.
    return 0 if value is False or value is None else -1


_NUMBER, _INTEGER, _OTHER = 0, 1, 2


def _numeric_spec(sub: dict[str, Any]) -> tuple[Any, ...] | None:
    """(kind, low, high, nullable) for a plain number/integer property with an optional range."""
    if set(sub) - {"type", "minimum", "maximum", "description"}:
        return None
    names = sub.get("type", [])
    names = [names] if isinstance(names, str) else list(names)
    nullable = "null" in names
    rest = [n for n in names if n != "null"]
    if rest not in (["number"], ["integer"]):
        return None
    low = sub.get("minimum", -math.inf)
    high = sub.get("maximum", math.inf)
    return (_NUMBER if rest == ["number"] else _INTEGER, low, high, nullable)


def _first_of(fast: Callable[[Any], int], scalar: Callable[[Any], int]) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        result = fast(value)
        return result if result >= 0 else scalar(value)

    return check


# The fast-check kinds named by the endpoint table (Endpoint.fast_paths).
_FAST_KINDS: dict[str, Callable[[Any], int]] = {
    "chat_messages": _fast_messages(_SIMPLE_ROLES),
    "anthropic_messages": _fast_messages(_ANTHROPIC_ROLES),
    "text_input": _fast_text_input,
    "string": _fast_string,
}
_HOT_PATHS: dict[str, dict[str, Callable[[Any], int]]] = {
    e.url: {key: _FAST_KINDS[kind] for key, kind in e.fast_paths} for e in ENDPOINTS.values()
}
# Keys whose string content counts towards the input-token estimate.
_TEXT_KEYS = ("messages", "input", "prompt", "system", "instructions")
_NON_TEXT_KEYS = frozenset(
    {"role", "type", "id", "tool_call_id", "name", "image_url", "input_audio", "file", "file_data"}
    | {"file_id", "file_url", "url", "data", "source", "detail", "format", "tool_use_id"}
)


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
            scalar = _scalar_checker(sub)
            fast = _fast_model if name == "model" else hot.get(name)
            if name == "stream" and scalar is not None:
                self.checks[name] = _fast_no_stream
            elif scalar is not None:
                self.checks[name] = scalar if fast is None else _first_of(fast, scalar)
            else:
                # Complex property: try the hand-written hot path, then that property's own schema.
                self.checks[name] = self._with_fallback(name, fast)
        self.specs: dict[str, tuple[Any, ...]] = {}
        for name, check in self.checks.items():
            numeric = _numeric_spec(properties[name])
            self.specs[name] = numeric if numeric is not None and name not in hot else (_OTHER, check)

    @property
    def validator(self) -> Any:
        """The full body validator, compiled on first use (importing jsonschema costs time)."""
        if self._validator is None:
            self._validator = schema_validator(self.schema_file)
        return self._validator

    def _with_fallback(self, name: str, fast: Callable[[Any], int] | None) -> Callable[[Any], int]:
        counts_text = name in _TEXT_KEYS
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
            if kind == _NUMBER:
                kind_of = type(value)
                if (kind_of is float or kind_of is int) and spec[1] <= value <= spec[2]:
                    continue
                if value is None and spec[3]:
                    continue
                return -1
            if kind == _INTEGER:
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
            message = _shorten(error.message)
            hint = ""
            if error.validator == "required":
                missing = re.findall(r"'([^']+)' is a required property", error.message)
                for k in unknown:
                    if missing and _similar(k, missing[0]):
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
                    "body.stream is true: batch results would be stored as SSE text; remove it or set false",
                )
            )
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


def _similar(a: str, b: str) -> bool:
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
    """Characters of prompt text inside a body value (for the input-token estimate)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(text_chars(v) for k, v in value.items() if k not in _NON_TEXT_KEYS)
    return 0


def _body_text_chars(body: dict[str, Any]) -> int:
    return sum(text_chars(body[k]) for k in _TEXT_KEYS if k in body)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


# --------------------------------------------------------------------------- one line


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
        if key not in REQUIRED_FIELDS and _similar(key, field):
            return f"; found {key!r}, rename it to {field!r}"
    return ""


def inspect_line(obj: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """Detailed (errors, warnings, text_chars) of one parsed line, without the file-level rules."""
    if not isinstance(obj, dict):
        kind = "an array" if isinstance(obj, list) else type(obj).__name__
        hint = "; put one request object per line" if isinstance(obj, list) else ""
        return [("not_object", f"line is {kind}, not a JSON object{hint}")], [], 0
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    for field in REQUIRED_FIELDS:
        if field not in obj:
            errors.append(
                ("missing_field", f"required field {field!r} is missing{_missing_hint(obj, field)}")
            )
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
                ("invalid_url", f"url {_shorten(url)!r} is not a batchable endpoint; {_url_hint(url)}")
            )
    body = obj.get("body")
    chars = 0
    if "body" in obj:
        if not isinstance(body, dict):
            errors.append(("invalid_type", f"body must be a JSON object, not {_json_type(body)}"))
        else:
            model = body.get("model")
            if "model" not in body:
                errors.append(
                    ("missing_model", 'body.model is missing; add the model name, e.g. "model": "..."')
                )
            elif not isinstance(model, str) or not model:
                what = "empty" if model == "" else f"{_json_type(model)}, not a string"
                errors.append(
                    ("missing_model", f"body.model is {what}; set it to a model name from GET /models")
                )
            if isinstance(url, str) and url in SCHEMA_FILES:
                checker = endpoint_checker(url)
                chars = checker.fast_check(body)
                if chars < 0:
                    body_errors, body_warnings = checker.body_problems(body)
                    # model problems are already reported with their own code
                    body_errors = [e for e in body_errors if not e[1].startswith("body.model:")]
                    if "model" not in body or not isinstance(model, str) or not model:
                        body_errors = [e for e in body_errors if "'model'" not in e[1]]
                    errors.extend(body_errors)
                    warnings.extend(body_warnings)
                    chars = _body_text_chars(body)
            else:
                chars = _body_text_chars(body)
    return errors, warnings, chars


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


# --------------------------------------------------------------------------- a whole file


class _Collector:
    """Problems with a bounded list and a total count."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.items: list[dict[str, Any]] = []
        self.total = 0

    def add(self, line: int, custom_id: Any, code: str, message: str) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            cid = _printable(custom_id) if isinstance(custom_id, str) else None
            self.items.append({"line": line, "custom_id": cid, "code": code, "message": _printable(message)})


def _printable(text: str) -> str:
    """``text`` without lone surrogates (from a \\ud800 escape), which no output stream can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _open_input(path: str) -> Any:
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def validate_batch_file(
    path: str,
    *,
    max_errors: int = 20,
    max_bytes: int = MAX_FILE_BYTES,
    max_requests: int = MAX_REQUESTS_PER_FILE,
) -> dict[str, Any]:
    """Validate one batch file (``-`` for stdin), streaming, and return its report.

    Line numbers are physical (1-based, blank lines counted); file-level problems (file_not_found,
    empty_file) use line 0. Memory holds only the custom_ids seen (for the uniqueness check).
    """
    errors = _Collector(max_errors)
    warnings = _Collector(max_errors)
    stats: dict[str, Any] = {
        "requests": 0,
        "bytes": 0,
        "endpoint": None,
        "models": {},
        "estimated_input_tokens": 0,
        "blank_lines": 0,
    }
    report = {"file": str(path), "valid": False, "errors": errors.items, "warnings": warnings.items}
    try:
        handle = _open_input(str(path))
    except OSError as exc:
        reason = (
            "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
        )
        errors.add(0, None, "file_not_found", f"{path} {reason}; check the path")
        return _finish(report, errors, warnings, stats)
    try:
        _scan(handle, errors, warnings, stats, max_bytes, max_requests)
    except OSError as exc:
        errors.add(
            0, None, "file_not_found", f"{path} cannot be read ({exc.strerror or exc}); check the path"
        )
    finally:
        if path != "-":
            handle.close()
    return _finish(report, errors, warnings, stats)


def _finish(
    report: dict[str, Any], errors: _Collector, warnings: _Collector, stats: dict[str, Any]
) -> dict[str, Any]:
    report["valid"] = errors.total == 0
    report["errors_total"] = errors.total
    report["errors_omitted"] = errors.total - len(errors.items)
    report["warnings_total"] = warnings.total
    report["warnings_omitted"] = warnings.total - len(warnings.items)
    report["stats"] = stats
    return report


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a finite number)")


_NOT_JSON = object()
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _DECODER.decode
# The C scanner without decode()'s two whitespace regex passes; decode() still gives the error messages.
_scan_once = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # the decoder is its context


def _scan(
    handle: Any,
    errors: _Collector,
    warnings: _Collector,
    stats: dict[str, Any],
    max_bytes: int,
    max_requests: int,
) -> None:
    seen: dict[str, int] = {}
    models: dict[str, int] = stats["models"]
    first_url: str | None = None
    first_url_line = 0
    fast_check: Callable[[dict[str, Any]], int] | None = None
    total_bytes = 0
    requests = 0
    blank = 0
    chars_total = 0
    size_reported = False
    scan_once = _scan_once
    lineno = 0
    pending = b""
    # Read 1 MiB blocks and split them on LF (as the server does, so physical line numbers match): faster
    # than a readline per line, and the rare surrogate-escape check can then run once per block.
    while True:
        block = handle.read(_BLOCK_SIZE)
        if block:
            if pending:
                block = pending + block
            lines = block.split(b"\n")
            pending = lines.pop()
            newline = 1
            escapes = _SURROGATE_ESCAPE_BYTES.search(block) is not None
        elif pending:
            lines, pending, newline, escapes = [pending], b"", 0, True
        else:
            break
        for raw in lines:
            lineno += 1
            size = len(raw) + newline
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                total_bytes += size
                requests += 1
                errors.add(
                    lineno,
                    None,
                    "invalid_utf8",
                    f"invalid UTF-8 at byte {exc.start + 1} of the line (file offset {total_bytes - size + exc.start});"
                    " re-save the file as UTF-8",
                )
                continue
            total_bytes += size
            if total_bytes > max_bytes and not size_reported:
                size_reported = True
                errors.add(
                    lineno,
                    None,
                    "file_too_large",
                    f"the file passes {max_bytes:,} bytes at this line; split it into several files "
                    "(create_batch_file.py --max-bytes, or submit.py shards automatically)",
                )
            try:
                obj, end = scan_once(text, 0)
                if end != len(text) and not text[end:].isspace():
                    raise ValueError("extra data")
                problem = None
            except (ValueError, StopIteration, RecursionError):
                obj, problem = _slow_parse(text)
            if problem is not None:
                if not text.strip():
                    blank += 1
                    warnings.add(lineno, None, "blank_line", "blank line; the server skips it (remove it)")
                    continue
                requests += 1
                if requests == max_requests + 1:
                    _too_many(errors, lineno, max_requests)
                message = str(problem)
                if text.startswith("\ufeff"):
                    message = "the file starts with a UTF-8 byte-order mark; save it without BOM"
                errors.add(
                    lineno,
                    None,
                    "invalid_json",
                    f"not valid JSON: {_shorten(message)}; one JSON object per line",
                )
                continue
            requests += 1
            if requests == max_requests + 1:
                _too_many(errors, lineno, max_requests)
            if size > MAX_BODY_BYTES:
                errors.add(
                    lineno,
                    obj.get("custom_id") if type(obj) is dict else None,
                    "body_too_large",
                    f"the line is {size:,} bytes; a request may be at most {MAX_BODY_BYTES:,}; shorten the prompt",
                )
            # Fast path: the common, valid shape.
            if type(obj) is dict:
                cid = obj.get("custom_id")
                body = obj.get("body")
                if (
                    fast_check is not None
                    and type(cid) is str
                    and type(body) is dict
                    and obj.get("url") == first_url
                    and obj.get("method") == "POST"
                    and 0 < len(cid) <= MAX_CUSTOM_ID_BYTES
                    and cid.isascii()
                    and cid.isprintable()
                    and (not escapes or not _SURROGATE_ESCAPE.search(text))
                ):
                    chars = fast_check(body)
                    if chars >= 0:
                        chars_total += chars
                        model = body["model"]
                        models[model] = models.get(model, 0) + 1
                        if cid in seen:
                            _duplicate(errors, lineno, cid, seen[cid])
                        else:
                            seen[cid] = lineno
                        continue
            # Detailed path: anything unusual, and every problem.
            line_errors, line_warnings, chars = inspect_line(obj)
            chars_total += chars
            if escapes and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
                line_errors.append(
                    (
                        "invalid_json",
                        "the line holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); remove it",
                    )
                )
            cid = obj.get("custom_id") if type(obj) is dict else None
            for code, message in line_errors:
                errors.add(lineno, cid, code, message)
            for code, message in line_warnings:
                warnings.add(lineno, cid, code, message)
            if type(obj) is not dict:
                continue
            url = obj.get("url")
            if type(url) is str and url in SCHEMA_FILES:
                if first_url is None:
                    first_url, first_url_line = url, lineno
                    stats["endpoint"] = url
                    fast_check = endpoint_checker(url).fast_check
                elif url != first_url:
                    errors.add(
                        lineno,
                        cid,
                        "url_mismatch",
                        f"url {url!r} differs from {first_url!r} on line {first_url_line}; "
                        "use one endpoint per file (split the file by url)",
                    )
            if type(cid) is str:
                if cid in seen:
                    _duplicate(errors, lineno, cid, seen[cid])
                else:
                    seen[cid] = lineno
            body = obj.get("body")
            if type(body) is dict and type(body.get("model")) is str:
                models[body["model"]] = models.get(body["model"], 0) + 1
    if requests == 0:
        what = "is empty" if lineno == 0 else "holds only blank lines"
        errors.add(0, None, "empty_file", f"the file {what}; add at least one request line")
    stats.update(
        requests=requests,
        bytes=total_bytes,
        blank_lines=blank,
        estimated_input_tokens=(chars_total + 3) // 4,
    )


def _slow_parse(text: str) -> tuple[Any, ValueError | None]:
    """Parse with json's full decoder, for its error message (or for leading whitespace)."""
    try:
        return _decode(text), None
    except RecursionError:
        return None, ValueError("the JSON is nested too deeply")
    except ValueError as exc:
        return None, exc


def _too_many(errors: _Collector, lineno: int, max_requests: int) -> None:
    errors.add(
        lineno,
        None,
        "too_many_requests",
        f"request number {max_requests + 1:,} is on this line; a file may hold at most {max_requests:,} "
        "requests; split it (create_batch_file.py --max-requests, or submit.py shards automatically)",
    )


def _duplicate(errors: _Collector, lineno: int, cid: str, first: int) -> None:
    errors.add(
        lineno,
        cid,
        "duplicate_custom_id",
        f"custom_id {cid!r} was first used on line {first}; make ids unique (results are matched by id)",
    )


def _has_lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def invalid_summary(reports: list[dict[str, Any]]) -> str:
    """One sentence for the ``error.message`` of a failed validation: how many problems, and the first."""
    invalid = [r for r in reports if not r.get("valid")]
    total = sum(r.get("errors_total", len(r.get("errors") or [])) for r in invalid)
    text = f"{total} problem(s) in {len(invalid)} file(s)"
    first = next(((r, r["errors"][0]) for r in invalid if r.get("errors")), None)
    if first is not None:
        report, item = first
        where = f"line {item['line']}" if item.get("line") else "file"
        text += f"; first: {report['file']} {where}: {item['code']}: {item['message']}"
    return text
