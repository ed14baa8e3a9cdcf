"""What a reply must look like before any command reads it: objects, lists and counts of the right type.

Only what the scripts rely on is checked (references/api_reference.md sections 4 and 8): a batch or file
is an object with a string ``id``; a batch's ``status`` is a string and its ``request_counts`` are
whole numbers (or null); a list is an object whose ``data`` is a list of such objects. A reply that is
something else is the server's fault (exit 5), never an "unexpected" crash in the code that reads it.
"""

from __future__ import annotations

import re
from typing import Any

from doubleword.errors import ServiceError

_LIST = re.compile(r"^(files|batches)$")
_BATCH = re.compile(r"^batches/[^/]+(/cancel|/retry|/retry-requests)?$")
_FILE = re.compile(r"^files/[^/]+$")
_MODELS = re.compile(r"^models$")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")  # UUIDs, batch_..., file-...: never a path


def is_plain_id(value: Any) -> bool:
    """An object id that can stand in a URL path as it is: no ``/``, ``%``, ``..`` or spaces."""
    return isinstance(value, str) and bool(_PLAIN_ID.fullmatch(value)) and ".." not in value


def check_reply(method: str, path: str, body: Any) -> Any:
    """``body`` if it has the shape the route promises; a :class:`ServiceError` naming the problem if not."""
    route = path.strip("/").split("?", 1)[0]
    where = f"{method} {route}"
    if _MODELS.match(route):
        _list_envelope(where, body)
    elif _LIST.match(route):
        if method == "GET":
            for item in _list_envelope(where, body):
                _object(where, item, "batch" if route == "batches" else "file")
        else:
            _object(where, body, "batch" if route == "batches" else "file")
    elif _BATCH.match(route):
        _object(where, body, "batch")
    elif _FILE.match(route) and method == "GET":
        _object(where, body, "file")
    return body


def _list_envelope(where: str, body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ServiceError(f"{where}: the server's reply is not a list (no 'data' array): {_excerpt(body)}")
    return body["data"]


def _object(where: str, item: Any, kind: str) -> None:
    if not isinstance(item, dict):
        raise ServiceError(f"{where}: the server sent a {kind} that is not an object: {_excerpt(item)}")
    if "id" in item and not is_plain_id(item["id"]):
        raise ServiceError(
            f"{where}: the server sent a {kind} whose id is not a plain id (text without '/', '%' or "
            f"'..'): {_excerpt(item['id'])}"
        )
    if kind != "batch":
        return
    for name in ("input_file_id", "output_file_id", "error_file_id"):
        value = item.get(name)
        if value not in (None, "") and not is_plain_id(value):
            raise ServiceError(
                f"{where}: the server sent a batch whose {name} is not a plain id: {_excerpt(value)}"
            )
    if "status" in item and not isinstance(item["status"], str):
        raise ServiceError(
            f"{where}: the server sent a batch status that is not text: {_excerpt(item['status'])}"
        )
    counts = item.get("request_counts")
    if counts is None:
        return
    if not isinstance(counts, dict):
        raise ServiceError(
            f"{where}: the server sent request_counts that are not an object: {_excerpt(counts)}"
        )
    for name, value in counts.items():
        if value is not None and not _is_count(value):
            raise ServiceError(
                f"{where}: the server sent request_counts.{name} = {_excerpt(value)}, not a whole number"
            )


def _is_count(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, float) and value.is_integer() and value >= 0


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."
