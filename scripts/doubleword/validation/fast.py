"""Fast checks: small predicates that only ever accept what the schemas accept.

A check returns the characters of prompt text it saw (>= 0) when the value is valid and needs no warning,
and -1 otherwise (or when unsure): the caller then asks the full schema, which gives the detailed message.
The hand-written ones (messages, text input, image parts) are named by the endpoint table
(``Endpoint.fast_paths``); the simple ones (type, range, enum) are derived from the schema itself.
"""

from __future__ import annotations

import binascii
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from doubleword.imagesize import UNKNOWN_IMAGE_TOKENS, base64_tokens, url_tokens

Check = Callable[[Any], int]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "null": (type(None),),
}
_SIMPLE_KEYS = {"type", "minimum", "maximum", "enum", "description", "minLength", "examples"}
NUMBER, INTEGER, OTHER = 0, 1, 2


def scalar_checker(sub: dict[str, Any]) -> Check | None:
    """A predicate equivalent to a simple property schema (type/range/enum), or None if not simple.

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


def numeric_spec(sub: dict[str, Any]) -> tuple[Any, ...] | None:
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
    return (NUMBER if rest == ["number"] else INTEGER, low, high, nullable)


def first_of(fast: Check, scalar: Check) -> Check:
    def check(value: Any) -> int:
        result = fast(value)
        return result if result >= 0 else scalar(value)

    return check


# --------------------------------------------------------------------------- images

# data:<image MIME>;base64,<payload>: the MIME part is short, so this anchored match never reads the payload.
_DATA_URI = re.compile(r"data:(image/[A-Za-z0-9.+-]{1,64});base64,")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def check_base64_portable(payload: str) -> None:
    """Raise ValueError unless ``payload`` is strict base64 (alphabet, padding, length); Python 3.10."""
    if len(payload) % 4 or _BASE64.fullmatch(payload) is None:
        raise ValueError("characters outside the base64 alphabet, or bad padding")


if sys.version_info >= (3, 11):

    def check_base64(payload: str) -> None:
        """Raise ValueError unless ``payload`` is strict base64: one C pass."""
        binascii.a2b_base64(payload, strict_mode=True)

else:
    check_base64 = check_base64_portable


def image_url_problem(url: Any) -> str | None:
    """Why an image URL is not one the server can fetch or decode, or None when it is fine.

    Accepted: ``http(s)://...`` and ``data:image/<type>;base64,<valid base64>``. The base64 check is one
    C-level decode of the payload (strict: no stray characters, correct padding).
    """
    if type(url) is not str or not url:
        return "the image url must be a non-empty string"
    if url.startswith(("https://", "http://")):
        return None
    if not url.startswith("data:"):
        return "the image url must be an http(s) URL or a data:image/...;base64,... URI"
    match = _DATA_URI.match(url)
    if match is None:
        head = url[: url.find(",") if 0 < url.find(",") < 80 else 40]
        return (
            f"the data URI {head!r} is not data:image/<type>;base64,...; give an image MIME type and base64"
        )
    payload = url[match.end() :]
    if not payload:
        return "the data URI holds no image data"
    try:
        check_base64(payload)
    except (binascii.Error, ValueError) as exc:
        return f"the data URI's base64 is not valid ({exc}); re-encode the image"
    return None


def _chat_image_part(part: dict[str, Any]) -> bool:
    image = part.get("image_url")
    if type(image) is not dict or len(part) != 2:
        return False
    if len(image) != 1 and not (len(image) == 2 and image.get("detail") in ("auto", "low", "high")):
        return False
    return image_url_problem(image.get("url")) is None


# The checks return a line's prompt size in characters (the input-token estimate is characters / 4): an
# image counts as CHARS_PER_TOKEN characters per token of its pixel size (doubleword.imagesize).
CHARS_PER_TOKEN = 4


def image_part_chars(part: dict[str, Any]) -> int:
    """The prompt size, in token-equivalent characters, of one image part of any endpoint's shape."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        tokens = url_tokens(image.get("url") if isinstance(image, dict) else image)
    elif kind == "input_image":
        tokens = url_tokens(part.get("image_url"))
    else:  # an Anthropic image block
        source = part.get("source")
        data = source.get("data") if isinstance(source, dict) and source.get("type") == "base64" else None
        tokens = base64_tokens(data) if isinstance(data, str) else UNKNOWN_IMAGE_TOKENS
    return CHARS_PER_TOKEN * tokens


def _parts_chars(parts: list[Any]) -> int:
    """Prompt characters of a user content list of text and image_url parts; -1 for anything else."""
    if not parts:
        return -1
    chars = 0
    for part in parts:
        if type(part) is not dict:
            return -1
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if type(text) is not str or len(part) != 2:
                return -1
            chars += len(text)
        elif kind == "image_url" and _chat_image_part(part):
            chars += image_part_chars(part)
        else:
            return -1
    return chars


def _anthropic_parts_chars(parts: list[Any]) -> int:
    """Text characters of an Anthropic content list of text and image blocks (base64 or url source)."""
    if not parts:
        return -1
    chars = 0
    for part in parts:
        if type(part) is not dict or len(part) != 2:
            return -1
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if type(text) is not str:
                return -1
            chars += len(text)
        elif kind == "image":
            source = part.get("source")
            if type(source) is not dict or source.get("type") not in ("base64", "url"):
                return -1
            if len(source) != (3 if source["type"] == "base64" else 2) or _anthropic_source_problem(source):
                return -1
            chars += image_part_chars(part)
        else:
            return -1
    return chars


def fast_messages(roles: frozenset[str], parts: Callable[[list[Any]], int] | None) -> Check:
    """Messages whose items are {"role": R, "content": "<text>"} (plus an optional string name); with
    ``parts``, a user message may also hold a content list that ``parts`` accepts (text and images)."""

    def check(messages: Any) -> int:
        if type(messages) is not list or not messages:
            return -1
        chars = 0
        for message in messages:
            if type(message) is not dict:
                return -1
            content = message.get("content")
            role = message.get("role")
            if role not in roles:
                return -1
            if len(message) != 2 and not (len(message) == 3 and type(message.get("name")) is str):
                return -1
            if type(content) is str:
                if role == "user" and (not content or content.isspace()):
                    return -1  # an empty prompt: the full check warns about it
                chars += len(content)
            elif parts is not None and role == "user" and type(content) is list:
                found = parts(content)
                if found < 0:
                    return -1
                chars += found
            else:
                return -1
        return chars

    return check


_RESPONSES_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _responses_parts_chars(parts: list[Any]) -> int:
    """Text characters of a Responses content list of input_text and input_image parts; -1 otherwise."""
    if not parts:
        return -1
    chars = 0
    for part in parts:
        if type(part) is not dict:
            return -1
        kind = part.get("type")
        if kind == "input_text":
            text = part.get("text")
            if type(text) is not str or len(part) != 2:
                return -1
            chars += len(text)
        elif kind == "input_image":
            if len(part) != 2 and not (len(part) == 3 and part.get("detail") in ("auto", "low", "high")):
                return -1
            if image_url_problem(part.get("image_url")) is not None:
                return -1
            chars += image_part_chars(part)
        else:
            return -1
    return chars


def fast_responses_input(value: Any) -> int:
    """A Responses ``input``: a string, or messages {"role", "content"} whose content is a string or
    input_text / input_image parts (vision, OCR)."""
    if type(value) is str:
        return len(value)
    if type(value) is not list or not value:
        return -1
    chars = 0
    for item in value:
        if type(item) is not dict or len(item) != 2 or item.get("role") not in _RESPONSES_ROLES:
            return -1
        content = item.get("content")
        if type(content) is str:
            chars += len(content)
            continue
        found = _responses_parts_chars(content) if type(content) is list else -1
        if found < 0:
            return -1
        chars += found
    return chars


def fast_text_input(value: Any) -> int:
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


def fast_string(value: Any) -> int:
    return len(value) if type(value) is str else -1


def fast_model(value: Any) -> int:
    return 0 if type(value) is str and value else -1


def fast_no_stream(value: Any) -> int:
    # stream: true is valid but deserves a warning, which only the detailed path produces.
    return 0 if value is False or value is None else -1


_SIMPLE_ROLES = frozenset({"system", "developer", "user", "assistant"})
_ANTHROPIC_ROLES = frozenset({"user", "assistant"})
# The fast-check kinds the endpoint table names (Endpoint.fast_paths).
FAST_KINDS: dict[str, Check] = {
    "chat_messages": fast_messages(_SIMPLE_ROLES, _parts_chars),
    "anthropic_messages": fast_messages(_ANTHROPIC_ROLES, _anthropic_parts_chars),
    "text_input": fast_text_input,
    "string": fast_string,
    "responses_input": fast_responses_input,
}


def image_problems(value: Any, where: str) -> list[str]:
    """``where: why`` for every malformed image part inside a body value (messages, input), any endpoint:
    chat ``image_url`` parts, Responses ``input_image`` parts and Anthropic ``image`` blocks."""
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
            continue
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        problem = None
        if kind == "image_url":
            image = item.get("image_url")
            problem = image_url_problem(image.get("url") if isinstance(image, dict) else image)
        elif kind == "input_image" and "image_url" in item:
            problem = image_url_problem(item.get("image_url"))
        elif kind == "image" and isinstance(item.get("source"), dict):
            problem = _anthropic_source_problem(item["source"])
        if problem is not None:
            problems.append(f"{at}: {problem}")
        content = item.get("content")
        if isinstance(content, list):
            stack.append((content, f"{at}.content"))
    return problems


def _anthropic_source_problem(source: dict[str, Any]) -> str | None:
    if source.get("type") == "url":
        return image_url_problem(source.get("url"))
    if source.get("type") != "base64":
        return None
    media = source.get("media_type")
    if not isinstance(media, str) or not media.startswith("image/"):
        return f"media_type {media!r} is not an image MIME type (image/png, image/jpeg, ...)"
    return image_url_problem(f"data:{media};base64,{source.get('data') or ''}")
