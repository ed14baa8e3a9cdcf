"""JSON request bodies read as the server's serde_json reads them, so that no body makes the emulator fail
where the server answers 400: strict UTF-8, no unpaired surrogate escape, at most 128 levels of nesting
(serde_json's recursion limit; Python's parser would go on until a RecursionError). `BadJson.reason` is
serde's wording ("... at line L column C")."""

from __future__ import annotations

import json
import re

MAX_DEPTH = 128
# Python's parser messages -> serde_json's
_JSON_MESSAGES = {
    "Expecting value": "expected value",
    "Extra data": "trailing characters",
    "Expecting property name enclosed in double quotes": "key must be a string",
    "Expecting ',' delimiter": "expected `,` or `}`",
    "Expecting ':' delimiter": "expected `:`",
    "Unterminated string starting at": "EOF while parsing a string",
    "Invalid control character at": "control character (\\u0000-\\u001F) found while parsing a string",
    "Invalid \\escape": "invalid escape",
}

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def json_error_text(exc: json.JSONDecodeError) -> str:
    msg = exc.msg
    for prefix, text in _JSON_MESSAGES.items():
        if msg.startswith(prefix):
            msg = text
            break
    return f"{msg} at line {exc.lineno} column {exc.colno}"


class BadJson(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"at line {line} column {column}"


def too_deep(text: str) -> int | None:
    """Where the nesting first goes past MAX_DEPTH (outside strings), or None."""
    depth = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return m.end()
        elif token in "]}":
            depth -= 1
    return None


def parse(raw: bytes | str) -> object:
    """The body's value; BadJson when serde_json would refuse it."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = raw[: exc.start].decode("utf-8", "replace")
            raise BadJson(f"invalid unicode code point {position(before, len(before))}") from None
    else:
        text = raw
    if text.count("[") + text.count("{") > MAX_DEPTH:  # cheap: only a body with many brackets is scanned
        end = too_deep(text)
        if end is not None:
            raise BadJson(f"recursion limit exceeded {position(text, end)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJson(json_error_text(exc)) from None
    except RecursionError:  # not reachable past the depth check; kept so it can never be a 500
        raise BadJson(f"recursion limit exceeded {position(text, len(text))}") from None
    if "\\ud" in text or "\\uD" in text:  # surrogate escapes are rare: astral characters only
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            m = _LONE_SURROGATE.search(text)
            where = position(text, m.end() if m else len(text))
            raise BadJson(f"lone leading surrogate in hex escape {where}") from None
    return value
