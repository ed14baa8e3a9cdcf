"""Response helpers: the server's plain-text errors, its JSON 409/429/503 bodies, OpenAI JSON errors
(references/api_reference.md section 9), list envelopes (section 8) and NDJSON content, whole or
streamed (section 7)."""

from __future__ import annotations

import json
import uuid
from json.encoder import encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Protocol

from aiohttp import web

TEXT = "text/plain; charset=utf-8"
# The --flavor openai switch turns plain-text errors into OpenAI JSON errors (set once at start-up).
FLAVOR = {"openai": False}
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_COMPACT_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def compact(obj: object, sort_keys: bool = False) -> str:
    """JSON as the server's serde_json writes it: no spaces, non-ASCII as raw UTF-8 (escaped only when the
    text holds lone surrogates, which cannot be encoded). The encoders are made once: this runs for every
    output line."""
    text = (_COMPACT_SORTED if sort_keys else _COMPACT).encode(obj)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys)
    return text


def json_string(text: str) -> str:
    """`compact(text)` for a str, without the encoder's layers (it runs several times per output line)."""
    out = encode_basestring(text)
    if not out.isascii():
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:
            out = encode_basestring_ascii(text)
    return out


def text_error(status: int, message: str) -> web.Response:
    """Files/batches routes: 400/401/402/403/404/413/422/500 have a plain-text body."""
    if FLAVOR["openai"]:
        return openai_error(status, message, _OPENAI_TYPES.get(status, "invalid_request_error"))
    return web.Response(
        status=status, body=message.encode("utf-8"), content_type="text/plain", charset="utf-8"
    )


def dw_json_error(status: int, error: str, message: str, retry_after: float) -> web.Response:
    """429/503 on files/batches routes: JSON with retry_after_seconds, plus a Retry-After header."""
    secs = int(retry_after) if float(retry_after).is_integer() else retry_after
    return web.json_response(
        {"error": error, "message": message, "retry_after_seconds": secs},
        dumps=compact,
        status=status,
        headers={"Retry-After": str(secs)},
    )


def capacity_429(window: str, models: list[str]) -> web.Response:
    r = web.json_response(
        {
            "error": "too_many_requests",
            "message": f"Insufficient capacity for {window} completion window. The following models are "
            f"currently at capacity: {', '.join(models)}. Try again later or use a longer completion window.",
            "retry_after_seconds": 30,
        },
        status=429,
        headers={"Retry-After": "60"},
        dumps=compact,
    )
    return r


def openai_error(
    status: int, message: str, etype: str = "invalid_request_error", code: str | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": etype, "param": None, "code": code}},
        status=status,
        dumps=compact,
    )


def json_ok(obj: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=compact(obj).encode("utf-8"), content_type="application/json")


class Reject(Exception):
    """Raised by handlers and helpers; the middleware turns it into its response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def parse_uuid(raw: str, prefix: str = "") -> str | None:
    """A path/body id as the server parses it: any UUID form; bare lower-case string back, else None."""
    if prefix and raw.startswith(prefix):
        raw = raw[len(prefix) :]
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        return None


def id_or_400(raw: str, prefix: str, noun: str) -> str:
    """A path id as the server parses it, or its 400 `Invalid <noun> ID format` (plain text)."""
    parsed = parse_uuid(raw, prefix)
    if parsed is None:
        raise Reject(text_error(400, f"Invalid {noun} ID format"))
    return parsed


def found_or_404(obj: Any, noun: str, raw: str) -> Any:
    """The object, or the server's 404 `<Noun> with ID <id as sent> not found` (plain text)."""
    if obj is None:
        raise Reject(text_error(404, f"{noun} with ID {raw} not found"))
    return obj


def query_int(request: web.Request, name: str) -> int | None:
    """An integer query parameter (axum rejects unparsable values with a plain-text 400)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise Reject(
            text_error(400, f"Failed to deserialize query string: {name}: invalid digit found in string")
        )
    if not -(2**63) <= value < 2**63:  # the server's integers are i64
        raise Reject(
            text_error(
                400, f"Failed to deserialize query string: {name}: number too large to fit in target type"
            )
        )
    return value


def or_default(value: int | None, default: int) -> int:
    return default if value is None else value


def list_envelope(data: list[dict], has_more: bool) -> dict:
    """The list object: `first_id`/`last_id` only when there is data."""
    env: dict = {"object": "list", "data": data}
    if data:
        env["first_id"] = data[0]["id"]
        env["last_id"] = data[-1]["id"]
    env["has_more"] = has_more
    return env


def ndjson(lines: list[str], headers: dict[str, str], openai: bool = False) -> web.Response:
    """A whole NDJSON body, a newline after every line (no paging headers in the OpenAI flavour)."""
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    return web.Response(body=body, headers={} if openai else headers, content_type="application/x-ndjson")


class Pages(Protocol):
    def page(self, offset: int, n: int) -> list[str]: ...


STREAM_PAGE = 2000


async def stream_ndjson(
    request: web.Request, lines: Pages, skip: int, cap: int | None, headers: dict, openai: bool = False
) -> web.StreamResponse:
    """Up to `cap` lines from `skip`: small bodies whole, larger ones streamed page by page (never built
    whole in memory)."""
    first = lines.page(skip, STREAM_PAGE if cap is None else min(STREAM_PAGE, cap))
    if len(first) < STREAM_PAGE:
        return ndjson(first, headers, openai)
    resp = web.StreamResponse(headers={} if openai else headers)
    resp.content_type = "application/x-ndjson"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    sent, rows = 0, first
    while rows:
        await resp.write("".join(r + "\n" for r in rows).encode("utf-8"))
        sent += len(rows)
        n = STREAM_PAGE if cap is None else min(STREAM_PAGE, cap - sent)
        if n <= 0:
            break
        rows = lines.page(skip + sent, n)
    await resp.write_eof()
    return resp


def paging(request: web.Request) -> tuple[int, int | None]:
    """`skip` (negative -> 0) and `limit` (clamped to 1..101, None when absent) of a content request."""
    skip = max(0, query_int(request, "skip") or 0)
    limit = query_int(request, "limit")
    return skip, None if limit is None else max(1, min(101, limit))
