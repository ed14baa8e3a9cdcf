"""Redaction: the API key never leaves the process in anything we print or write, in any encoding.

A server may echo the Authorization header back (in an error body, JSON-escaped, URL-encoded, HTML-escaped,
cut at our 200-character excerpt, or wrapped across lines); every such form becomes ``<hidden>``, and so
does every run of it that gives the key away: half of it or more, or a cut-off start or end of it
(at least ``MIN_FRAGMENT`` characters) standing as a word of its own. Text that merely shares a few
characters with the key is left alone. Bearer tokens are hidden whatever their value.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

HIDDEN = "<hidden>"
MIN_SECRET = 4  # shorter values would hide ordinary words
MIN_FRAGMENT = 8  # a cut-off start or end of a secret this long is hidden
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!<hidden>)[^\s\"'<>,;\\]+")
_LINE_BREAK = re.compile(r"(?:=?\r?\n|(?:\\r)?\\n)[ \t>|]*")

_FORMS: set[str] = set()
_GRAMS: dict[str, list[tuple[str, int]]] = {}


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it, and its encodings, from any text."""
    if not value or len(value) < MIN_SECRET:
        return
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        html.escape(value),
    }
    for form in forms:
        if form in _FORMS:
            continue
        _FORMS.add(form)
        if len(form) >= MIN_FRAGMENT + 4:
            for start in range(len(form) - MIN_FRAGMENT + 1):
                _GRAMS.setdefault(form[start : start + MIN_FRAGMENT], []).append((form, start))


def redact(text: str) -> str:
    """``text`` with every registered secret (whole, encoded, cut or wrapped) and any bearer token hidden."""
    if _FORMS:
        for form in sorted(_FORMS, key=len, reverse=True):
            if form in text:
                text = text.replace(form, HIDDEN)
        if _GRAMS:
            text = _hide_fragments(text)
    if "earer" in text:
        text = _BEARER.sub(lambda m: m.group(1) + HIDDEN, text)
    return text


def redact_data(value: Any) -> Any:
    """A copy of JSON-like data with :func:`redact` applied to every string (keys too).

    Redact before serialising, never the serialised text: hiding part of an escape sequence
    (``\\"``) would leave a document that is no longer JSON."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value


def _hide_fragments(text: str) -> str:
    """Hide the runs of a secret's text (continuing across line breaks) that give it away.

    A run is hidden when it holds at least half of the secret, or when it is a cut-off piece: the
    secret's start or end (what an excerpt or a wrap leaves) standing alone as a word. Ordinary text that
    merely shares a few characters with the key (a path ``/work/wt-lakehouse`` against a made-up key
    ``sk-demo-local-lakehouse``) is left alone."""
    spans: list[tuple[int, int]] = []
    position = 0
    limit = len(text) - MIN_FRAGMENT + 1
    while position < limit:
        best: tuple[int, int] | None = None
        for form, start in _GRAMS.get(text[position : position + MIN_FRAGMENT], ()):
            end, form_end = _extend(text, position, form, start)
            begin, form_begin = _extend_left(text, position, form, start)
            longer = best is None or end - begin > best[1] - best[0]
            if longer and _gives_away(text, begin, end, form, form_begin, form_end):
                best = (begin, end)
        if best is None:
            position += 1
            continue
        spans.append(best)
        position = best[1]
    if not spans:
        return text
    out, last = [], 0
    for begin, end in spans:
        begin = max(begin, last)
        out.append(text[last:begin])
        out.append(HIDDEN)
        last = end
    out.append(text[last:])
    return "".join(out)


def _gives_away(text: str, begin: int, end: int, form: str, form_begin: int, form_end: int) -> bool:
    """Whether the run ``text[begin:end]`` (``form[form_begin:form_end]``) reveals the secret."""
    length = form_end - form_begin
    if length < MIN_FRAGMENT:
        return False
    if 2 * length >= len(form):
        return True
    if form_begin != 0 and form_end != len(form):
        return False  # a piece from the middle of the key, shorter than half of it
    return not (begin > 0 and text[begin - 1].isalnum()) and not (end < len(text) and text[end].isalnum())


def _extend(text: str, at: int, form: str, start: int) -> tuple[int, int]:
    """Where the run of ``form[start:]`` found at ``at`` ends (text index, form index), line breaks skipped."""
    i, j = at, start
    while j < len(form):
        if i < len(text) and text[i] == form[j]:
            i, j = i + 1, j + 1
            continue
        wrap = _LINE_BREAK.match(text, i)
        if wrap and wrap.end() > i and wrap.end() < len(text) and text[wrap.end()] == form[j]:
            i = wrap.end()
            continue
        break
    return i, j


def _extend_left(text: str, at: int, form: str, start: int) -> tuple[int, int]:
    """Where the run containing ``form[start:]`` at ``at`` begins (text index, form index)."""
    i, j = at, start
    while j > 0 and i > 0:
        if text[i - 1] == form[j - 1]:
            i, j = i - 1, j - 1
            continue
        back = _wrap_before(text, i)
        if back is None or back == 0 or text[back - 1] != form[j - 1]:
            break
        i = back
    return i, j


def _wrap_before(text: str, i: int) -> int | None:
    """The index where a line break (with indentation) ending at ``i`` starts, or None."""
    k = i
    while k > 0 and text[k - 1] in " \t>|":
        k -= 1
    for brk in ("=\r\n", "=\n", "\r\n", "\n", "\\r\\n", "\\n"):
        if text.endswith(brk, 0, k):
            return k - len(brk)
    return None


def forget_secrets() -> None:
    """Drop every registered secret (for tests that register their own)."""
    _FORMS.clear()
    _GRAMS.clear()
