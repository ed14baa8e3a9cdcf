"""Build batch input files: request lines for each endpoint, and sharded, atomic, streaming writes.

Public API (importable from Python as well as used by create_batch_file.py and submit.py):
    make_request(prompt_or_messages, *, model, custom_id, endpoint="chat", ...) -> dict
    write_batch(requests, out_path, *, max_requests=..., max_bytes=...) -> list of shard dicts
    shard_file(path, out_prefix, *, max_requests=..., max_bytes=...) -> list of shard dicts
    shard_paths(out_path, count) -> list of paths

A shard dict is ``{"path": str, "requests": int, "bytes": int}``. Shards are named ``OUT-001.jsonl``,
``OUT-002.jsonl``, ... next to ``OUT.jsonl``; a line is never split; each shard is written to a temporary
file and renamed into place only when the whole write succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from doubleword.config import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.endpoints import ENDPOINTS as TABLE
from doubleword.endpoints import endpoint_named
from doubleword.errors import InputError, UsageError
from doubleword.files import remove_stale_temps, temp_file_beside
from doubleword.validation import MAX_BODY_BYTES, endpoint_checker, inspect_line, plain_line

# name -> url, kept for callers of this module (the facts live in doubleword.endpoints).
ENDPOINTS = {name: e.url for name, e in TABLE.items()}
_UMASK = os.umask(0)
os.umask(_UMASK)
_URL_TO_NAME = {url: name for name, url in ENDPOINTS.items()}

# Compact, UTF-8 kept as is: the smallest lines, and the fastest encoder (the C one).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


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
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request line as a dict, for ``endpoint`` chat (default), embeddings, responses, completions
    or messages (Anthropic). A string is the user prompt; a list is used as the messages (chat, responses,
    messages) or as the input/prompt list (embeddings, completions). ``extra`` sets any other body field
    and wins over the named arguments.
    """
    url = endpoint_url(endpoint)
    name = _URL_TO_NAME[url]
    if not isinstance(model, str) or not model:
        raise UsageError("a model is required (e.g. --model Qwen/Qwen3.5-9B)")
    body: dict[str, Any] = {"model": model}
    is_text = isinstance(prompt_or_messages, str)
    if name in ("chat", "messages"):
        messages = [{"role": "user", "content": prompt_or_messages}] if is_text else list(prompt_or_messages)
        if system is not None and name == "chat":
            messages.insert(0, {"role": "system", "content": system})
        elif system is not None:
            body["system"] = system
        body["messages"] = messages
    elif name == "responses":
        body["input"] = prompt_or_messages
        if system is not None:
            body["instructions"] = system
    else:
        if system is not None:
            raise UsageError(f"--system does not apply to the {name} endpoint")
        body["input" if name == "embeddings" else "prompt"] = prompt_or_messages
    if name == "embeddings":
        given = [
            n for n, v in (("temperature", temperature), ("max_tokens", max_tokens), ("top_p", top_p)) if v
        ]
        if given or stop or json_schema:
            raise UsageError(
                f"sampling options and --json-schema do not apply to embeddings ({given or 'stop'})"
            )
    if temperature is not None:
        body["temperature"] = temperature
    if top_p is not None:
        body["top_p"] = top_p
    if max_tokens is not None:
        body["max_output_tokens" if name == "responses" else "max_tokens"] = max_tokens
    elif name == "messages" and not (extra and "max_tokens" in extra):
        raise UsageError("the messages endpoint requires max_tokens (--max-tokens N)")
    if stop is not None:
        body["stop_sequences" if name == "messages" else "stop"] = (
            [stop] if isinstance(stop, str) else list(stop)
        )
        if name == "responses":
            raise UsageError("the responses endpoint has no stop parameter")
    if json_schema is not None:
        fmt = json_schema_format(json_schema)
        if name == "chat":
            body["response_format"] = {"type": "json_schema", "json_schema": fmt}
        elif name == "responses":
            body["text"] = {"format": {"type": "json_schema", **fmt}}
        else:
            raise UsageError(f"--json-schema is supported for chat and responses, not {name}")
    if extra:
        body.update(extra)
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


# --------------------------------------------------------------------------- writing shards


def shard_paths(out_path: str | os.PathLike[str], count: int) -> list[Path]:
    """``OUT.jsonl`` for one shard, else ``OUT-001.jsonl`` ... ``OUT-NNN.jsonl``."""
    out = Path(out_path)
    if count == 1:
        return [out]
    suffix = out.suffix or ".jsonl"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    width = max(3, len(str(count)))
    return [out.with_name(f"{stem}-{i:0{width}d}{suffix}") for i in range(1, count + 1)]


class _ShardWriter:
    """Writes byte lines into temporary shard files, starting a new one when a limit would be passed."""

    def __init__(self, out_path: Path, max_requests: int, max_bytes: int) -> None:
        if max_requests < 1 or max_bytes < 2:
            raise UsageError("--max-requests and --max-bytes must be positive")
        self.out_path = out_path
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.shards: list[dict[str, Any]] = []  # {"tmp", "requests", "bytes"}
        self._handle: IO[bytes] | None = None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_path)  # shards a killed run was writing

    def account(self, requests: int, size: int) -> None:
        """Record the counts of the current shard (for writers that keep them in locals)."""
        if self.shards:
            self.shards[-1]["requests"] = requests
            self.shards[-1]["bytes"] = size

    def new_shard(self) -> IO[bytes]:
        return self._new_shard()

    def _new_shard(self) -> IO[bytes]:
        self._close_current()
        fd, tmp = temp_file_beside(self.out_path)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a batch file is an ordinary file
        self._handle = os.fdopen(fd, "wb", buffering=1024 * 1024)
        self.shards.append({"tmp": tmp, "requests": 0, "bytes": 0})
        return self._handle

    def _close_current(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def write(self, line: bytes, where: str) -> None:
        """Write one line (with its trailing newline); ``where`` names it in errors."""
        size = len(line)
        if size > self.max_bytes:
            raise InputError(f"{where} is {size:,} bytes, more than the {self.max_bytes:,}-byte file limit")
        current = self.shards[-1] if self.shards else None
        if (
            current is None
            or current["requests"] >= self.max_requests
            or current["bytes"] + size > self.max_bytes
        ):
            handle = self._new_shard()
            current = self.shards[-1]
        else:
            handle = self._handle  # type: ignore[assignment]
        handle.write(line)
        current["requests"] += 1
        current["bytes"] += size

    def finish(self, *, numbered: bool) -> list[dict[str, Any]]:
        """Rename the temporary files into place; the shard list with final paths."""
        self._close_current()
        if not self.shards:
            raise InputError("there are no requests to write")
        count = len(self.shards)
        paths = shard_paths(self.out_path, count)
        if numbered and count == 1:
            paths = [shard_paths(self.out_path, 2)[0]]
        result = []
        for shard, path in zip(self.shards, paths, strict=True):
            os.replace(shard["tmp"], path)
            result.append({"path": str(path), "requests": shard["requests"], "bytes": shard["bytes"]})
        return result

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            if self._handle is not None:
                self._handle.close()
        for shard in self.shards:
            with contextlib.suppress(OSError):
                os.unlink(shard["tmp"])


def write_batch(
    requests: Iterable[dict[str, Any]],
    out_path: str | os.PathLike[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
    check: bool = True,
) -> list[dict[str, Any]]:
    """Write request dicts as a batch file, or as numbered shards when a limit would be passed.

    Streams (only the set of custom_ids is kept, to refuse duplicates). With ``check`` (the default) every
    line is validated first, so what is written always passes validate_batch_file.py; a bad request raises
    :class:`InputError` naming it, and nothing is written.
    """
    writer = _ShardWriter(Path(out_path), max_requests, max_bytes)
    seen: dict[str, int] = {}
    url0: str | None = None
    fast_check = None
    encode = _encode
    # The current shard's handle and counters are kept in locals: this loop runs once per request.
    handle: Any = None
    count = size_total = 0
    try:
        for number, request in enumerate(requests, 1):
            cid = request.get("custom_id") if isinstance(request, dict) else None
            if check:
                url = request.get("url") if isinstance(request, dict) else None
                if url0 is None and isinstance(url, str) and url in _URL_TO_NAME:
                    url0, fast_check = url, endpoint_checker(url).fast_check
                if plain_line(request, url0, fast_check) < 0:
                    _check_slow(request, _where(number, cid), url0)
                if cid in seen:
                    raise InputError(
                        f"{_where(number, cid)}: custom_id {cid!r} is already used by request {seen[cid]}"
                    )
                seen[cid] = number  # type: ignore[index]
            try:
                line = (encode(request) + "\n").encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise InputError(f"{_where(number, cid)} cannot be written as JSON: {exc}")
            size = len(line)
            if size > MAX_BODY_BYTES:
                raise InputError(
                    f"{_where(number, cid)} is {size:,} bytes; a request may be at most {MAX_BODY_BYTES:,}"
                )
            if handle is None or count >= max_requests or size_total + size > max_bytes:
                if size > max_bytes:
                    raise InputError(
                        f"{_where(number, cid)} is {size:,} bytes, more than --max-bytes {max_bytes:,}"
                    )
                writer.account(count, size_total)
                handle = writer.new_shard()
                count = size_total = 0
            handle.write(line)
            count += 1
            size_total += size
        writer.account(count, size_total)
        return writer.finish(numbered=False)
    except BaseException:
        writer.abort()
        raise


def _where(number: int, cid: Any) -> str:
    return f"request {number}" + (f" (custom_id {cid!r})" if isinstance(cid, str) else "")


def _check_slow(request: Any, where: str, url0: str | None) -> None:
    errors, _warnings, _ = inspect_line(request)
    if not errors and isinstance(request, dict) and url0 is not None and request.get("url") != url0:
        errors = [
            ("url_mismatch", f"url {request.get('url')!r} differs from {url0!r}; one endpoint per file")
        ]
    if errors:
        details = "; ".join(f"{code}: {message}" for code, message in errors[:3])
        raise InputError(f"{where} is not a valid request line: {details}")


def shard_file(
    path: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[dict[str, Any]]:
    """Split an existing (valid) batch file into numbered shards ``PREFIX-001.jsonl``, ...

    ``out_prefix`` is a path like ``work/jobs.jsonl`` (shards ``work/jobs-001.jsonl``...) or an existing
    directory (shards named after the input file inside it). Lines are copied byte for byte (blank lines
    dropped, a missing final newline added); always numbered, even when one shard suffices.
    """
    source = Path(path)
    prefix = Path(out_prefix)
    if prefix.is_dir():
        prefix = prefix / source.name
    if prefix.resolve() == source.resolve():
        raise UsageError("the shard prefix must differ from the input file name")
    writer = _ShardWriter(prefix, max_requests, max_bytes)
    try:
        with open(source, "rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                line = raw if raw.endswith(b"\n") else raw + b"\n"
                writer.write(line, f"{source} line {lineno}")
        return writer.finish(numbered=True)
    except FileNotFoundError:
        writer.abort()
        raise InputError(f"{source} does not exist")
    except BaseException:
        writer.abort()
        raise
