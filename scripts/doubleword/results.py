"""Joining inputs with downloaded output and error lines into results.jsonl and retry.jsonl.

Output and error files arrive in completion order, so results are joined to the inputs by
``custom_id``. Memory stays small: only ``custom_id -> (file, byte offset, rank)`` is held; each line
is read back from disk when its input comes up.

Both line shapes are understood: Doubleword's (failures only in the error file, ``error.message`` a
JSON string) and OpenAI's (``response.status_code >= 400`` lines, ``batch_cancelled`` /
``batch_expired`` error lines meaning "never run").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from doubleword.files import atomic_writer

NOT_RUN_CODES = frozenset({"batch_cancelled", "batch_expired"})
_RANK = {"completed": 3, "failed": 2, "missing": 1}
# json.dumps(record, ensure_ascii=False) builds a new encoder on every call; one is enough.
_encode = json.JSONEncoder(ensure_ascii=False).encode


# --------------------------------------------------------------------------- line interpretation


def loads_line(raw: bytes) -> Any:
    """A served line as JSON; bytes that are not UTF-8 (a sloppy server) become U+FFFD, so the answer
    still counts instead of being reported missing and resubmitted."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        return json.loads(raw.decode("utf-8", "replace"))


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return None


def _message_from_body(body: Any) -> str | None:
    """An upstream error body (JSON text, an object or plain text) reduced to its message."""
    if body is None:
        return None
    parsed = body if isinstance(body, dict) else _parse_json(body)
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if parsed.get("message"):
            return str(parsed["message"])
        return json.dumps(parsed, ensure_ascii=False)
    return str(body)


def line_status(line: dict[str, Any]) -> str:
    """``completed``, ``failed`` or ``missing`` (an OpenAI "not run" line) for one served line."""
    error = line.get("error")
    response = line.get("response")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        return "missing" if code in NOT_RUN_CODES else "failed"
    if not isinstance(response, dict):
        return "failed"
    status_code = response.get("status_code")
    if isinstance(status_code, int) and status_code >= 400:
        return "failed"
    return "completed"


def normalise_error(line: dict[str, Any]) -> dict[str, Any] | None:
    """A uniform ``{type, code, status, message}`` for a failed line, or None."""
    error = line.get("error")
    response = line.get("response")
    if error:
        if not isinstance(error, dict):
            return {"type": "error", "code": None, "status": None, "message": str(error)}
        code = error.get("code")
        raw = error.get("message")
        parsed = _parse_json(raw)
        if isinstance(parsed, dict):  # Doubleword: a serialised failure reason
            details: dict[str, Any] = parsed["details"] if isinstance(parsed.get("details"), dict) else {}
            message = _message_from_body(details.get("body")) or details.get("error") or parsed.get("type")
            return {
                "type": str(parsed.get("type") or code or "error"),
                "code": code,
                "status": details.get("status"),
                "message": message,
            }
        return {"type": str(code or "error"), "code": code, "status": None, "message": raw}
    if isinstance(response, dict):
        status_code = response.get("status_code")
        if isinstance(status_code, int) and status_code >= 400:
            body = response.get("body")
            parsed_body = body if isinstance(body, dict) else _parse_json(body)
            err = parsed_body.get("error") if isinstance(parsed_body, dict) else None
            kind = None
            code = None
            if isinstance(err, dict):
                kind = err.get("type")
                code = err.get("code")
            return {
                "type": str(kind or code or f"http_{status_code}"),
                "code": code,
                "status": status_code,
                "message": _message_from_body(body),
            }
        return None
    return {"type": "no_response", "code": None, "status": None, "message": "the line has no response"}


def extract(line: dict[str, Any]) -> dict[str, Any]:
    """``content`` (chat/completions/responses/messages text) or ``embedding``, plus ``usage``."""
    response: dict[str, Any] = line["response"] if isinstance(line.get("response"), dict) else {}
    body = response.get("body")
    if isinstance(body, str):
        parsed = _parse_json(body)
        if not isinstance(parsed, dict):
            return {"content": body, "usage": None}
        body = parsed
    if not isinstance(body, dict):
        return {"content": None, "usage": None}
    out: dict[str, Any] = {}
    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "embedding" in data[0]:
        embeddings = [item.get("embedding") for item in data]
        out["embedding"] = embeddings[0] if len(embeddings) == 1 else embeddings
    else:
        out["content"] = _text_of(body)
    out["usage"] = body.get("usage")
    if body.get("model"):
        out["model"] = body["model"]
    return out


def _text_of(body: dict[str, Any]) -> str | None:
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            return _flatten(message.get("content"))
        if "text" in first:
            return first.get("text")
    if isinstance(body.get("output_text"), str):  # Responses API convenience field
        return body["output_text"]
    output = body.get("output")
    if isinstance(output, list):  # Responses API items
        texts = []
        for item in output:
            if isinstance(item, dict) and item.get("type") == "message":
                texts.append(_flatten(item.get("content")) or "")
        return "".join(texts) if texts else None
    if body.get("type") == "message" or isinstance(body.get("content"), list):  # Anthropic Messages
        return _flatten(body.get("content"))
    return None


def _flatten(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "output_text")
        ]
        return "".join(parts)
    return str(content)


def usage_tokens(usage: Any) -> tuple[int, int, int]:
    """(input, output, total) tokens from chat/completions/embeddings/responses/messages usage."""
    if not isinstance(usage, dict):
        return 0, 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    total = usage.get("total_tokens") or (prompt + completion)
    return int(prompt), int(completion), int(total)


# --------------------------------------------------------------------------- the join


def _iter_lines_with_offsets(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.exists():
        return
    with open(path, "rb") as handle:
        offset = 0
        for raw in handle:
            yield offset, raw
            offset += len(raw)


class LineIndex:
    """(batch, custom_id) -> ``offset << 3 | file << 2 | rank`` (file 0=output 1=errors); the best line wins.

    The batch is the one whose download wrote the line (``segments``; "" when not recorded): two
    batches may use the same custom_ids. Kept in a private temporary SQLite database (deleted on
    close) rather than a dict: a manifest of many 50,000-request shards is joined in the same small
    memory as one request.
    """

    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # "": a temporary on-disk database that SQLite removes itself
        self.db.execute(
            "CREATE TABLE idx (scope TEXT, custom_id TEXT, entry INTEGER, PRIMARY KEY (scope, custom_id))"
            " WITHOUT ROWID"
        )

    def add_file(self, path: Path, number: int, segments: Sequence[Sequence[Any]] = ()) -> None:
        bounds = sorted((int(s[0]), str(s[1])) for s in segments if len(s) >= 2)

        def rows() -> Iterator[tuple[str, str, int]]:
            scope, next_segment = "", 0
            for offset, raw in _iter_lines_with_offsets(path):
                while next_segment < len(bounds) and bounds[next_segment][0] <= offset:
                    scope = bounds[next_segment][1]
                    next_segment += 1
                try:
                    line = loads_line(raw)
                except ValueError:
                    continue
                custom_id = line.get("custom_id") if isinstance(line, dict) else None
                if isinstance(custom_id, str):
                    yield scope, custom_id, offset << 3 | number << 2 | _RANK[line_status(line)]

        with self.db:
            self.db.executemany(
                "INSERT INTO idx VALUES (?, ?, ?) ON CONFLICT (scope, custom_id) DO UPDATE SET"
                " entry = excluded.entry WHERE (excluded.entry & 3) >= (idx.entry & 3)",
                rows(),
            )

    def get(self, custom_id: str, scope: str | None = None) -> int | None:
        for key in (scope, "") if scope else ("",):
            row = self.db.execute(
                "SELECT entry FROM idx WHERE scope = ? AND custom_id = ?", (key, custom_id)
            ).fetchone()
            if row:
                return int(row[0])
        return None

    def custom_ids(self, scopes: Sequence[str]) -> Iterator[str]:
        """Every custom_id answered in ``scopes`` (batch ids, "" = not recorded), in custom_id order."""
        marks = ", ".join("?" for _ in scopes)
        query = f"SELECT DISTINCT custom_id FROM idx WHERE scope IN ({marks}) ORDER BY custom_id"
        for (custom_id,) in self.db.execute(query, tuple(scopes)):
            yield custom_id

    def close(self) -> None:
        self.db.close()


def build_index(
    output_path: Path, errors_path: Path, segments: dict[str, Sequence[Sequence[Any]]] | None = None
) -> LineIndex:
    """The index of every output and error line; errors first so a later success wins a tie."""
    segments = segments or {}
    index = LineIndex()
    for number, path, kind in ((1, errors_path, "errors"), (0, output_path, "output")):
        index.add_file(path, number, segments.get(kind) or ())
    return index


_CUSTOM_ID_HEAD = b'{"custom_id":"'


def _leading_custom_id(raw: bytes) -> str | None:
    """The custom_id of a compact line that starts with it (as create_batch_file.py writes them), without
    parsing the whole request; None when the line has another layout (the caller then parses it)."""
    if not raw.startswith(_CUSTOM_ID_HEAD):
        return None
    start = len(_CUSTOM_ID_HEAD)
    end = raw.find(b'"', start)
    if end < 0 or b"\\" in raw[start:end] or not raw.rstrip().endswith(b"}"):
        return None
    try:
        return raw[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _iter_input(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        yield from source


def _read_at(handle: IO[bytes], offset: int) -> dict[str, Any]:
    handle.seek(offset)
    return loads_line(handle.readline())


def join(
    inputs: list[tuple[str | None, Path | None, bool]],
    output_path: Path,
    errors_path: Path,
    results_path: Path,
    retry_path: Path,
    segments: dict[str, Sequence[Sequence[Any]]] | None = None,
) -> dict[str, Any]:
    """Write results.jsonl and retry.jsonl; ``inputs`` = (batch_id, input file, batch terminal);
    ``segments`` = per file kind, which batch's download wrote the bytes from each start offset.

    Returns counts, usage totals, failures by type and per-batch counts.
    """
    index = build_index(output_path, errors_path, segments)
    counts = {"requests": 0, "completed": 0, "failed": 0, "pending": 0, "missing": 0}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    failures: dict[str, int] = {}
    groups: dict[tuple[str, Any], dict[str, Any]] = {}  # (type, HTTP status) -> count and one example
    per_batch: dict[str, dict[str, int]] = {}
    handles = [
        open(output_path, "rb") if output_path.exists() else None,  # noqa: SIM115 - closed below
        open(errors_path, "rb") if errors_path.exists() else None,  # noqa: SIM115
    ]
    try:
        with atomic_writer(results_path) as results, atomic_writer(retry_path) as retry:
            for batch_id, input_path, terminal in inputs:
                mine = per_batch.setdefault(str(batch_id), {k: 0 for k in counts})
                if input_path is None or not input_path.exists():
                    # No input lines to join with: list what was answered for this batch.
                    scopes = [str(batch_id), ""] if len(inputs) == 1 else [str(batch_id)]
                    answered = index.custom_ids(scopes)
                    source_lines: Iterator[bytes] = (_encode({"custom_id": c}).encode() for c in answered)
                    with_retry = False
                else:
                    source_lines = _iter_input(input_path)
                    with_retry = True
                for raw in source_lines:
                    if not raw.strip():
                        continue
                    record = _result_for(raw, index, handles, terminal, batch_id)
                    status = record["status"]
                    for bucket in (counts, mine):
                        bucket["requests"] += 1
                        bucket[status] += 1
                    if record.get("error") and status in ("failed", "missing"):
                        error = record["error"]
                        failures[error["type"]] = failures.get(error["type"], 0) + 1
                        group = groups.setdefault(
                            (str(error["type"]), error.get("status")),
                            {
                                "type": error["type"],
                                "status": error.get("status"),
                                "count": 0,
                                "example": {"custom_id": record["custom_id"], "message": _short(error)},
                            },
                        )
                        group["count"] += 1
                    p, c, t = usage_tokens(record.get("usage"))
                    usage["prompt_tokens"] += p
                    usage["completion_tokens"] += c
                    usage["total_tokens"] += t
                    results.write(_encode(record).encode("utf-8") + b"\n")
                    if status in ("failed", "missing") and with_retry:
                        retry.write(raw.rstrip(b"\r\n") + b"\n")
    finally:
        index.close()
        for handle in handles:
            if handle is not None:
                handle.close()
    return {
        "counts": counts,
        "usage": usage,
        "failures_by_type": failures,
        "failure_groups": sorted(groups.values(), key=lambda g: -g["count"]),
        "per_batch": per_batch,
    }


def _short(error: dict[str, Any], limit: int = 300) -> str:
    message = str(error.get("message") or "")
    return message if len(message) <= limit else message[:limit] + "..."


def _result_for(
    raw: bytes,
    index: LineIndex,
    handles: Sequence[IO[bytes] | None],
    terminal: bool,
    batch_id: str | None,
) -> dict[str, Any]:
    custom_id = _leading_custom_id(raw)
    if custom_id is None:
        try:
            request = json.loads(raw)
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
        except ValueError:
            custom_id = None
    # Every record has the same keys; embeddings add "embedding" (content stays null).
    record: dict[str, Any] = {
        "custom_id": custom_id,
        "batch_id": batch_id,
        "status": None,
        "content": None,
        "usage": None,
        "error": None,
    }
    entry = index.get(custom_id, batch_id) if isinstance(custom_id, str) else None
    handle = handles[entry >> 2 & 1] if entry is not None else None
    if entry is None or handle is None:
        record["status"] = "missing" if terminal else "pending"
        record["error"] = None
        if terminal:
            record["error"] = {
                "type": "not_answered",
                "code": None,
                "status": None,
                "message": "the batch ended without an output or error line for this request",
            }
        return record
    line = _read_at(handle, entry >> 3)
    status = line_status(line)
    record["status"] = status
    record["line_id"] = line.get("id")
    if status == "completed":
        record.update(extract(line))
        record["error"] = None
    else:
        record["usage"] = None
        record["error"] = normalise_error(line)
    return record
