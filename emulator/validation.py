"""Upload-time checks, one line at a time, with the server's exact messages and statuses, in its order
(references/api_reference.md section 3)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from .catalog import Catalog, is_embedding_model
from .config import BATCH_URLS, MAX_BODY_BYTES, MAX_CUSTOM_ID_BYTES
from .jsonbody import BadJson
from .jsonbody import parse as parse_json
from .reasoning_rules import reasoning_problem

ALLOWED_PATHS_TEXT = ", ".join(BATCH_URLS)
REQUIRED_FIELDS = ("custom_id", "method", "url", "body")
CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed in a custom_id


class UploadError(Exception):
    """A rejected upload: HTTP status and the plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def serde_kind(value: object) -> str:
    """How serde_json names an unexpected value in 'invalid type' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def stored_body(body: dict) -> dict:
    """The body as stored: top-level `priority` removed."""
    return {k: v for k, v in body.items() if k != "priority"} if "priority" in body else body


def sanitise_body(body: dict) -> str:
    """The stored body's text, keys sorted (what the input file serves back)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# (custom_id, url, stored body) -> the columns an input line adds (emulator/prepared.py)
Prepare = Callable[[str, str, dict], tuple]


class LineValidator:
    """Validates non-blank lines in order; `check` returns the row to store or raises UploadError. The
    row ends with what `prepare` makes of the request."""

    def __init__(self, catalog: Catalog, max_requests: int, prepare: Prepare) -> None:
        self.catalog = catalog
        self.models = set(catalog.models)
        self.max_requests = max_requests
        self.prepare = prepare
        self.count = 0

    def check(self, raw: bytes, file_offset: int) -> tuple | None:
        """Check one physical line (without its newline); None for a blank line."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            n = self.count + 1
            raise UploadError(
                400,
                f"File contains invalid UTF-8 on/near line {n} at byte offset {file_offset + exc.start}: "
                f"invalid utf-8 sequence of {exc.end - exc.start} bytes from index {exc.start}",
            )
        text = text.strip()
        if not text:
            return None
        self.count += 1
        n = self.count
        if self.max_requests and n > self.max_requests:
            raise UploadError(
                400, f"File contains {n} requests, which exceeds the maximum of {self.max_requests}"
            )
        obj = self._parse(text, n)
        return self._check_request(obj, n)

    def _parse(self, text: str, n: int) -> dict:
        """The line as a JSON object holding the four fields of the right types (check 9)."""
        try:
            obj = parse_json(text)
        except BadJson as exc:
            raise UploadError(400, f"Invalid JSON on line {n}: {exc.reason}")
        end = f"at line 1 column {len(text)}"
        if not isinstance(obj, dict):
            raise UploadError(
                400, f"Invalid JSON on line {n}: invalid type: {serde_kind(obj)}, expected struct {end}"
            )
        for key in REQUIRED_FIELDS:
            if key not in obj:
                raise UploadError(400, f"Invalid JSON on line {n}: missing field `{key}` {end}")
            if key != "body" and not isinstance(obj[key], str):
                raise UploadError(
                    400,
                    f"Invalid JSON on line {n}: invalid type: {serde_kind(obj[key])}, expected a string {end}",
                )
        return obj

    def _check_request(self, obj: dict, n: int) -> tuple:
        """The per-line checks after parsing (custom_id, method, url, model, reasoning, size); the row to store."""
        custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
        cid_len = len(custom_id.encode("utf-8"))
        if cid_len > MAX_CUSTOM_ID_BYTES:
            raise UploadError(
                400,
                f"Line {n}: custom_id exceeds maximum length of {MAX_CUSTOM_ID_BYTES} characters (got {cid_len})",
            )
        if CONTROL_CHARS.search(custom_id):
            raise UploadError(
                400,
                f"Line {n}: custom_id contains invalid characters: must be valid ASCII without control characters",
            )
        if method.upper() != "POST":
            raise UploadError(
                400, f"Line {n}: Unsupported HTTP method '{method}'. Only POST is currently supported."
            )
        if url not in BATCH_URLS:
            raise UploadError(
                400, f"Line {n}: Unsupported URL path '{url}'. Allowed paths are: {ALLOWED_PATHS_TEXT}"
            )
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise UploadError(400, f"Line {n}: Missing 'model' field in request body")
        model = body["model"]
        if model not in self.models:
            raise UploadError(
                403, f"Line {n}: Model '{model}' has not been configured or is not available to user"
            )
        embedding = is_embedding_model(model)
        if embedding and url != "/v1/embeddings":
            raise UploadError(
                400,
                f"Line {n}: Model '{model}' is a EMBEDDINGS model but endpoint '{url}' requires a CHAT model",
            )
        if not embedding and url == "/v1/embeddings":
            raise UploadError(
                400,
                f"Line {n}: Model '{model}' is a CHAT model but endpoint '{url}' requires a EMBEDDINGS model",
            )
        problem = reasoning_problem(url, body, self.catalog)
        if problem is not None:
            raise UploadError(400, f"Line {n}: {problem}")
        body = stored_body(body)
        stored = sanitise_body(body)
        size = len(stored.encode("utf-8"))
        if size > MAX_BODY_BYTES:
            raise UploadError(
                400,
                f"Line {n}: Request body is {size} bytes, which exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes",
            )
        return custom_id, method, url, model, stored, *self.prepare(custom_id, url, body)
