"""File scanning: a whole batch file (or stdin) read in 1 MiB blocks, each line parsed once and checked
with the fast line check, the detailed line checks only for lines that need them, plus the file rules
(size, request count, one url per file, unique custom_ids, not empty)."""

from __future__ import annotations

import json
import json.scanner
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from doubleword import fastjson
from doubleword.config import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.validation.lines import MAX_BODY_BYTES, inspect_line, plain_line
from doubleword.validation.schemas import SCHEMA_FILES, endpoint_checker, shorten

# A \uD800-\uDFFF escape: Python accepts a lone one, the server does not. This finds candidates (with a
# literal prefix, so it is a fast scan); _has_lone_surrogate settles whether one is unpaired.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_BLOCK_SIZE = 1 << 20
_UNREAD = object()


NOT_JSONL = (
    "this is not a JSONL batch file (one JSON request per line; its first line is not JSON): a CSV or a "
    'list of prompts is built into one with create_batch_file.py (--csv FILE --template "... {column} ..." '
    "--id-field ID, or --prompts FILE for one prompt per line), and that file is the one to pass"
)


class _StopScan(Exception):
    """The file is not worth reading on (a rows file given as a batch file)."""


class Collector:
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


def validate_batch_file(
    path: str,
    *,
    max_errors: int = 20,
    max_bytes: int = MAX_FILE_BYTES,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    on_block: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """Validate one batch file (``-`` for stdin), streaming, and return its report.

    Line numbers are physical (1-based, blank lines counted); file-level problems (file_not_found,
    empty_file) use line 0. Memory holds only the custom_ids seen (for the uniqueness check).
    ``on_block`` is given every block as it is read (to hash the file in the same read pass); a scan
    that stops early (a rows file: invalid) does not read the rest.
    """
    scan = FileScan(max_errors, max_bytes, max_requests)
    report: dict[str, Any] = {"file": str(path), "valid": False}
    try:
        handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        reason = (
            "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
        )
        if isinstance(exc, FileNotFoundError):
            from doubleword.batchfile import written_as_shards

            reason += written_as_shards(path)
        scan.errors.add(0, None, "file_not_found", f"{path} {reason}; check the path")
        return scan.report(report)
    try:
        scan.run(handle, on_block)
    except _StopScan:
        pass
    except OSError as exc:
        scan.errors.add(
            0, None, "file_not_found", f"{path} cannot be read ({exc.strerror or exc}); check the path"
        )
    finally:
        if path != "-":
            handle.close()
    return scan.report(report)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a finite number)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _DECODER.decode
# The C scanner without decode()'s two whitespace regex passes; decode() still gives the error messages.
_scan_once = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # the decoder is its context


def _blocks(
    handle: Any, on_block: Callable[[bytes], None] | None = None
) -> Iterator[tuple[list[bytes], int, bool]]:
    """(lines, newline size, whether the block may hold a surrogate escape) per 1 MiB block, split on LF
    (as the server does, so physical line numbers match); faster than a readline per line. Each block
    read is given to ``on_block`` first."""
    pending = b""
    while True:
        block = handle.read(_BLOCK_SIZE)
        if not block:
            break
        if on_block is not None:
            on_block(block)
        if pending:
            block = pending + block
        lines = block.split(b"\n")
        pending = lines.pop()
        yield lines, 1, _SURROGATE_ESCAPE_BYTES.search(block) is not None
    if pending:
        yield [pending], 0, True


class FileScan:
    """The state of one file's scan: counters, the first url, the custom_ids seen, and the problems."""

    def __init__(self, max_errors: int, max_bytes: int, max_requests: int) -> None:
        self.errors = Collector(max_errors)
        self.warnings = Collector(max_errors)
        self.max_bytes = max_bytes
        self.max_requests = max_requests
        self.seen: dict[str, int] = {}
        self.models: dict[str, int] = {}
        self.url: str | None = None
        self.url_line = 0
        self.fast_check: Callable[[dict[str, Any]], int] | None = None
        self.bytes = self.requests = self.blank = self.chars = self.lineno = 0
        self.size_reported = False

    def run(self, handle: Any, on_block: Callable[[bytes], None] | None = None) -> None:
        scan_once = _scan_once
        fast_loads = fastjson.loads
        for lines, newline, escapes in _blocks(handle, on_block):
            for raw in lines:
                self.lineno += 1
                size = len(raw) + newline
                self.bytes += size
                if self.bytes > self.max_bytes and not self.size_reported:
                    self._too_large()
                obj: Any = _UNREAD
                if fast_loads is not None:  # orjson: it refuses what is not strict JSON in valid UTF-8
                    try:
                        obj = fast_loads(raw)
                    except ValueError:  # the plain path below decides, and says why
                        pass
                if obj is _UNREAD:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._invalid_utf8(exc, size)
                        continue
                    try:
                        obj, end = scan_once(text, 0)
                        if end != len(text) and not text[end:].isspace():
                            raise ValueError("extra data")
                    except (ValueError, StopIteration, RecursionError):
                        obj, problem = _slow_parse(text)
                        if problem is not None:
                            self._not_json(text, problem)
                            continue
                self._count_request()
                if size > MAX_BODY_BYTES:
                    self._body_too_large(obj, size)
                # Fast path: the common, valid shape.
                if not (escapes and _SURROGATE_ESCAPE_BYTES.search(raw)):
                    chars = plain_line(obj, self.url, self.fast_check)
                    if chars >= 0:
                        self.chars += chars
                        body = obj["body"]
                        self.models[body["model"]] = self.models.get(body["model"], 0) + 1
                        self._unique(obj["custom_id"])
                        continue
                self._detailed(obj, raw.decode("utf-8"), escapes)

    def _detailed(self, obj: Any, text: str, escapes: bool) -> None:
        """Anything unusual, and every problem."""
        if self.lineno == 1 and type(obj) is dict and obj.keys() == {"custom_id", "row"}:
            self.errors.add(
                0,
                None,
                "rows_file",
                "this is a source-rows file (X.rows.jsonl, written by create_batch_file.py beside X.jsonl), "
                "not a batch file; pass X.jsonl instead",
            )
            raise _StopScan
        kind = _answers_file(obj) if self.lineno == 1 else None
        if kind is not None:
            self.errors.add(
                0,
                None,
                "answers_file",
                f"this is {kind}, not a batch file of requests; pass the batch file the job was made from "
                "(to send what has no answer again: submit.py --resubmit --manifest M)",
            )
            raise _StopScan
        line_errors, line_warnings, chars = inspect_line(obj)
        self.chars += chars
        if escapes and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
            line_errors.append(
                ("invalid_json", "the line holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); remove it")
            )
        cid = obj.get("custom_id") if type(obj) is dict else None
        for code, message in line_errors:
            self.errors.add(self.lineno, cid, code, message)
        for code, message in line_warnings:
            self.warnings.add(self.lineno, cid, code, message)
        if type(obj) is not dict:
            return
        url = obj.get("url")
        if type(url) is str and url in SCHEMA_FILES:
            if self.url is None:
                self.url, self.url_line = url, self.lineno
                self.fast_check = endpoint_checker(url).fast_check
            elif url != self.url:
                self.errors.add(
                    self.lineno,
                    cid,
                    "url_mismatch",
                    f"url {url!r} differs from {self.url!r} on line {self.url_line}; "
                    "use one endpoint per file (split the file by url)",
                )
        if type(cid) is str:
            self._unique(cid)
        body = obj.get("body")
        if type(body) is dict and type(body.get("model")) is str:
            self.models[body["model"]] = self.models.get(body["model"], 0) + 1

    def _unique(self, cid: str) -> None:
        first = self.seen.get(cid)
        if first is None:
            self.seen[cid] = self.lineno
            return
        self.errors.add(
            self.lineno,
            cid,
            "duplicate_custom_id",
            f"custom_id {cid!r} was first used on line {first}; make ids unique (results are matched by id)",
        )

    def _count_request(self) -> None:
        self.requests += 1
        if self.requests == self.max_requests + 1:
            self.errors.add(
                self.lineno,
                None,
                "too_many_requests",
                f"request number {self.max_requests + 1:,} is on this line; a file may hold at most "
                f"{self.max_requests:,} requests; split it (create_batch_file.py --max-requests, or submit.py "
                "shards automatically)",
            )

    def _invalid_utf8(self, exc: UnicodeDecodeError, size: int) -> None:
        self.requests += 1
        self.errors.add(
            self.lineno,
            None,
            "invalid_utf8",
            f"invalid UTF-8 at byte {exc.start + 1} of the line (file offset {self.bytes - size + exc.start});"
            " re-save the file as UTF-8",
        )

    def _too_large(self) -> None:
        self.size_reported = True
        self.errors.add(
            self.lineno,
            None,
            "file_too_large",
            f"the file passes {self.max_bytes:,} bytes at this line; split it into several files "
            "(create_batch_file.py --max-bytes, or submit.py shards automatically)",
        )

    def _not_json(self, text: str, problem: ValueError) -> None:
        if not text.strip():
            self.blank += 1
            self.warnings.add(self.lineno, None, "blank_line", "blank line; the server skips it (remove it)")
            return
        if self.requests == 0 and not text.lstrip("\ufeff \t").startswith(("{", "[")):
            # the first line is no JSON at all: a data file given in place of a batch file built from it
            self.errors.add(0, None, "not_jsonl", NOT_JSONL)
            raise _StopScan
        self._count_request()
        message = str(problem)
        if text.startswith("\ufeff"):
            message = "the file starts with a UTF-8 byte-order mark; save it without BOM"
        self.errors.add(
            self.lineno, None, "invalid_json", f"not valid JSON: {shorten(message)}; one JSON object per line"
        )

    def _body_too_large(self, obj: Any, size: int) -> None:
        self.errors.add(
            self.lineno,
            obj.get("custom_id") if type(obj) is dict else None,
            "body_too_large",
            f"the line is {size:,} bytes; a request may be at most {MAX_BODY_BYTES:,}; shorten the prompt "
            "or send smaller images",
        )

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        """The report dict: validity, bounded problems with their totals, and the stats."""
        if self.requests == 0 and not self.errors.total:
            what = "is empty" if self.lineno == 0 else "holds only blank lines"
            self.errors.add(0, None, "empty_file", f"the file {what}; add at least one request line")
        report.update(
            valid=self.errors.total == 0,
            errors=self.errors.items,
            warnings=self.warnings.items,
            errors_total=self.errors.total,
            errors_omitted=self.errors.total - len(self.errors.items),
            warnings_total=self.warnings.total,
            warnings_omitted=self.warnings.total - len(self.warnings.items),
            stats={
                "requests": self.requests,
                "bytes": self.bytes,
                "endpoint": self.url,
                "models": self.models,
                "estimated_input_tokens": (self.chars + 3) // 4,
                "blank_lines": self.blank,
            },
        )
        return report


def _answers_file(obj: Any) -> str | None:
    """What a first line with no request fields is, when it is one of the answer files: the server's
    output or error lines, or fetch_results.py's results.jsonl."""
    if type(obj) is not dict or "method" in obj or "url" in obj or "body" in obj:
        return None
    if {"custom_id", "response", "error"} <= obj.keys():
        return "an output or error file (the server's answer lines)"
    if {"custom_id", "status", "content", "attempts"} <= obj.keys():
        return "a results file (results.jsonl, written by fetch_results.py)"
    return None


def _slow_parse(text: str) -> tuple[Any, ValueError | None]:
    """Parse with json's full decoder, for its error message (or for leading whitespace)."""
    try:
        return _decode(text), None
    except RecursionError:
        return None, ValueError("the JSON is nested too deeply")
    except ValueError as exc:
        return None, exc


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
