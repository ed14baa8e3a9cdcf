"""Results: one generator of joined records, and the writers that consume it.

:func:`records` yields one :class:`Result` per first-round input, in input order, with the best answer
across every round (``completed`` beats everything; otherwise the latest round's record) and ``attempts``
(how many rounds sent it). It reads only the fetch index (:mod:`doubleword.store`), never the raw output
again, and decodes a record only when it must (a JSON-output request to check, a record to export).
Writers are consumers: :class:`ResultsFile` (results.jsonl), :class:`RetryFile` (retry.jsonl: the
original round-1 request lines without a usable answer), :class:`Summary` (counts per status, usage,
failure groups with advice, examples), and :class:`doubleword.export.Export` (the user's CSV or JSONL).
:func:`join` runs the generator once through all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Protocol

from doubleword.answers import (
    ANSWER_KEYS,
    HEAD_KEYS,
    STATUSES,
    USABLE,
    check_json,
    json_request,
    record_bytes,
)
from doubleword.batch_inputs import MANIFEST_META, is_never_sent
from doubleword.files import AtomicFile, LinkedFile, RangeCopier, atomic_writer
from doubleword.rounds import refused
from doubleword.store import RECORDS_NAME, SHARED_KEY, Store, original_id, share_stamp

_RANK = {"completed": 4, "truncated": 3, "failed": 2, "missing": 1}
_EMPTY = dict.fromkeys(ANSWER_KEYS)
WRITE_LINES = 512  # results.jsonl lines written at once
RUN_RANGES = 4096  # the most byte ranges in one run (a run of answers in completion order has one each)
MIN_SUGGESTED_MAX_TOKENS = 1024  # the least --max-tokens suggested for a round of cut-off answers


@dataclass
class Result:
    """One first-round input and its best answer. ``body`` is the index's encoded answer members."""

    custom_id: str
    status: str
    attempts: int
    batch_id: str | None
    body: bytes | None
    tokens: tuple[int, int, int] = (0, 0, 0)
    err_type: str | None = None
    err_status: Any = None
    source: tuple[int, int, int] = (0, -1, 0)  # the original request line: (src, offset, length)
    parsed: Any = None
    error: dict[str, Any] | None = None  # set when the join decided the status (pending, missing, invalid)
    persistent: bool = False  # failed the same way in its last two rounds
    first_batch: str | None = None  # the round-1 batch of the input (its source rows are there)
    properties: tuple[str, ...] = ()  # the top-level properties of the request's JSON schema, in order
    _record: dict[str, Any] | None = field(default=None, repr=False)

    def line(self) -> bytes:
        """The results.jsonl line (without the newline): the index's record as it is when the join changed
        nothing (one attempt, no JSON check), else encoded again."""
        if self.body is not None and self.error is None and self.parsed is None and self.attempts == 1:
            return self.body
        return record_bytes(self.record())

    def record(self) -> dict[str, Any]:
        """The whole record (every key of SPEC section 4's results.jsonl)."""
        if self._record is None:
            if self.body is not None:
                record = json.loads(self.body)
            else:
                record = dict.fromkeys(HEAD_KEYS)
                record.update(_EMPTY, batch_id=self.batch_id)
            record.update(custom_id=self.custom_id, status=self.status, parsed=self.parsed)
            record["attempts"] = self.attempts
            if self.error is not None:
                record["error"] = self.error
            self._record = record
        return self._record


@dataclass
class Run:
    """Consecutive inputs whose results.jsonl lines are, as they are, lines of the record file (where
    ``ranges`` say): all completed, one attempt, no JSON check, one batch. The writers that know runs
    take them whole."""

    batch_id: str | None
    ranges: Sequence[tuple[int, int]]  # byte ranges in the record file, newlines included, in order
    count: int
    tokens: list[int]
    head: bytes  # the first line (a summary looks at one answer of each run)
    released: int = 0  # bytes of its beginning no longer in ``ranges`` (in the results.jsonl draft)


class Writer(Protocol):
    def add(self, result: Result) -> None: ...


# --------------------------------------------------------------------------- the generator


class _Requests:
    """Original request lines read back from their files (for the JSON check and retry.jsonl), and the
    encoded records from the record file."""

    def __init__(self, paths: dict[int, str], records_path: Path) -> None:
        self.paths = paths
        self.handles: dict[int, IO[bytes]] = {}
        self.records = open(records_path, "rb") if records_path.exists() else None  # noqa: SIM115
        self.copier = RangeCopier(self.records) if self.records is not None else None

    def record(self, offset: int, length: int) -> bytes | None:
        if self.records is None:
            return None
        self.records.seek(offset)
        return self.records.read(length)

    def copy(self, ranges: Iterable[tuple[int, int]], handle: IO[bytes]) -> None:
        """Byte ranges of the record file appended to ``handle``, in turn."""
        assert self.copier is not None
        handle.flush()
        self.copier.append_all(ranges, handle.fileno())
        handle.seek(0, os.SEEK_END)  # the buffered handle's position, after the writes to its descriptor

    def raw(self, source: tuple[int, int, int]) -> bytes | None:
        src, offset, length = source
        if offset < 0 or src not in self.paths:
            return None
        handle = self.handles.get(src)
        if handle is None:
            handle = self.handles[src] = open(self.paths[src], "rb")  # noqa: SIM115 - closed by close()
        handle.seek(offset)
        return handle.read(length)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        if self.records is not None:
            self.records.close()


def records(
    store: Store, running: set[str], requests: _Requests, *, runs: bool = False
) -> Iterator[Result | Run]:
    """One :class:`Result` per first input, in input order (see the module docstring). With ``runs``,
    inputs whose lines need nothing from the join come as :class:`Run` s (a job answered in order is a
    few runs, whatever its size)."""
    run: Run | None = None
    ranges: list[tuple[int, int]] = []  # the run's (extended here)
    advice = _never_sent_advice(store.meta(MANIFEST_META))
    for _, group in groupby(store.joined(), key=_ORIGIN):
        rows = list(group)
        if len(rows) == 1:
            row = rows[0]
            if runs and row[9] is not None and row[11] == USABLE and not row[8]:
                start, end = row[12], row[12] + row[13] + 1
                if run is not None and row[3] == run.batch_id and len(ranges) < RUN_RANGES:
                    if start == ranges[-1][1]:
                        ranges[-1] = (ranges[-1][0], end)
                    else:  # answers in completion order: the run goes on from another place of the file
                        ranges.append((start, end))
                    run.count += 1
                    tokens = run.tokens
                    tokens[0] += row[14] or 0
                    tokens[1] += row[15] or 0
                    tokens[2] += row[16] or 0
                    continue
                if run is not None:
                    yield run
                tokens = [row[14] or 0, row[15] or 0, row[16] or 0]
                ranges = [(start, end)]
                run = Run(row[3], ranges, 1, tokens, requests.record(start, row[13]) or b"")
                continue
            if run is not None:
                yield run
                run = None
            yield _attempt(rows, running, requests, 1, advice)
            continue
        if run is not None:
            yield run
            run = None
        attempts = [list(g) for _, g in groupby(rows, key=_SEQ)]
        tried = [_attempt(a, running, requests, len(attempts), advice) for a in attempts]
        best = next((r for r in tried if r.status == USABLE), tried[-1])
        first = tried[0]
        best.source, best.custom_id, best.first_batch = first.source, first.custom_id, first.first_batch
        if len(tried) >= 2 and best.status != USABLE:
            last, before = tried[-1], tried[-2]
            best.persistent = (last.status, last.err_type, last.err_status) == (
                before.status,
                before.err_type,
                before.err_status,
            )
        yield best
    if run is not None:
        yield run


_ORIGIN, _SEQ = itemgetter(0), itemgetter(1)


def _never_sent_advice(manifest: str | None) -> str:
    """The error message of a request in no batch (its shard was never sent)."""
    return (
        "never sent: its shard has no batch (a submit stopped before making it, or the server refused its "
        f"file); send it with: submit.py --resubmit --manifest {manifest or 'MANIFEST'}"
    )


def _attempt(
    rows: list[tuple[Any, ...]], running: set[str], requests: _Requests, attempts: int, advice: str
) -> Result:
    """The best record of one input in one batch (a success after a /retry beats the earlier failure)."""
    row = rows[0] if len(rows) == 1 else max(rows, key=lambda r: (_RANK.get(r[11], 0), r[9] or 0, r[10] or 0))
    (
        _,
        _,
        _,
        batch_id,
        custom_id,
        src,
        off,
        length,
        wants_json,
        kind,
        _,
        status,
        rec_off,
        rec_len,
        p,
        c,
        t,
        et,
        es,
    ) = row
    body = requests.record(rec_off, rec_len) if kind is not None else None
    result = Result(
        original_id(custom_id),
        status,
        attempts,
        batch_id,
        body,
        (p or 0, c or 0, t or 0),
        et,
        es,
        (src, off, length),
    )
    result.first_batch = batch_id
    if kind is None:  # no line for it (yet)
        result.tokens = (0, 0, 0)
        if batch_id in running:
            result.status = "pending"
        elif is_never_sent(batch_id):  # in no batch: first_batch keeps the key (its export rows)
            result.status, result.err_type, result.batch_id = "missing", "never_sent", None
            result.error = {"type": "never_sent", "code": None, "status": None, "message": advice}
        else:
            result.status = "missing"
            result.err_type = "not_answered"
            result.error = {
                "type": "not_answered",
                "code": None,
                "status": None,
                "message": "the batch ended without an output or error line for this request",
            }
    elif wants_json and status in (USABLE, "truncated"):
        _check_structured(result, requests)
    return result


def _check_structured(result: Result, requests: _Requests) -> None:
    raw = requests.raw(result.source)
    try:
        request = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        request = None
    wants, schema = json_request(request) if isinstance(request, dict) else (False, None)
    if not wants:
        return
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        result.properties = tuple(schema["properties"])
    record = result.record()
    if record.get("content") is None and record.get("tool_calls"):
        return  # a tool-call answer is usable as it is
    parsed, error = check_json(record.get("content"), schema)
    result._record = None
    if result.status == "truncated":
        # Cut at the limit, yet whole JSON that fits the schema, only blank space after it: JSON-mode
        # decoding that would not stop (a larger max_tokens buys more blank space). The answer is whole.
        if error is None and isinstance(parsed, (dict, list)):
            result.status, result.err_type, result.err_status, result.parsed = USABLE, None, None, parsed
            result.record()["error"] = None
        return
    if error is not None:
        result.status, result.error, result.err_type = "invalid", error, "invalid_json"
    else:
        result.parsed = parsed


# --------------------------------------------------------------------------- writers


class ResultsFile:
    def __init__(self, handle: IO[bytes], requests: _Requests) -> None:
        self.handle, self.requests = handle, requests
        self.lines: list[bytes] = []

    def add(self, result: Result) -> None:
        self.lines.append(result.line())
        if len(self.lines) >= WRITE_LINES:
            self.flush()

    def add_run(self, run: Run) -> None:
        self.flush()
        self.requests.copy(run.ranges, self.handle)

    def flush(self) -> None:
        if self.lines:
            self.lines.append(b"")
            self.handle.write(b"\n".join(self.lines))
            self.lines = []


class RetryFile:
    """The original request lines (as in round 1) of every input without a usable answer."""

    def __init__(self, handle: IO[bytes], requests: _Requests) -> None:
        self.handle, self.requests = handle, requests

    def add(self, result: Result) -> None:
        if result.status == USABLE or result.status == "pending":
            return
        raw = self.requests.raw(result.source)
        if raw:
            self.handle.write(raw + b"\n")

    def add_run(self, run: Run) -> None:
        pass  # every input of a run has its answer


class Summary:
    """Counts per status, usage, failure groups (with whether resubmitting is likely to help), examples."""

    def __init__(self) -> None:
        self.counts = {"requests": 0, **{s: 0 for s in STATUSES}}
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.failures: dict[str, int] = {}
        self.groups: dict[tuple[str, Any], dict[str, Any]] = {}
        self.examples: dict[str, dict[str, Any]] = {}
        self.per_batch: dict[str, dict[str, int]] = {}
        self.embedding_size: int | None = None
        self._embedding_seen = False

    def add(self, result: Result) -> None:
        status = result.status
        mine = self._batch(result.first_batch)
        for bucket in (self.counts, mine):
            bucket["requests"] += 1
            bucket[status] += 1
        p, c, t = result.tokens
        self.usage["prompt_tokens"] += p
        self.usage["completion_tokens"] += c
        self.usage["total_tokens"] += t
        if status == USABLE:
            if not self._embedding_seen and result.body:
                self._note_embedding(result.body)
            return
        if status == "pending":
            return
        error = result.record().get("error") or {}
        kind = str(error.get("type") or result.err_type or status)
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if status in ("truncated", "invalid") and status not in self.examples:
            record = result.record()
            self.examples[status] = {
                "custom_id": result.custom_id,
                "finish_reason": record.get("finish_reason"),
                "message": _short(error),
                "content": _short({"message": record.get("content")}, 200),
            }
        group = self.groups.get((kind, error.get("status")))
        if group is None:
            group = self.groups[(kind, error.get("status"))] = {
                "type": kind,
                "status": error.get("status"),
                "result_status": status,
                "count": 0,
                "persistent": 0,
                "example": {"custom_id": result.custom_id, "message": _short(error)},
            }
        group["count"] += 1
        group["persistent"] += int(result.persistent)
        group["_output_tokens"] = max(group.get("_output_tokens", 0), c)  # for the truncated advice

    def _batch(self, batch_id: str | None) -> dict[str, int]:
        mine = self.per_batch.get(str(batch_id))
        if mine is None:
            mine = self.per_batch[str(batch_id)] = {"requests": 0, **{s: 0 for s in STATUSES}}
        return mine

    def _note_embedding(self, line: bytes) -> None:
        """The embedding size, from the first completed answer that has one."""
        if b'"embedding":[' not in line:
            return
        self._embedding_seen = True
        vector = json.loads(line).get("embedding")
        first = vector[0] if isinstance(vector, list) and vector and isinstance(vector[0], list) else vector
        self.embedding_size = len(first) if isinstance(first, list) else None

    def add_run(self, run: Run) -> None:
        if not self._embedding_seen:
            self._note_embedding(run.head)
        for bucket in (self.counts, self._batch(run.batch_id)):
            bucket["requests"] += run.count
            bucket[USABLE] += run.count
        for key, value in zip(
            ("prompt_tokens", "completion_tokens", "total_tokens"), run.tokens, strict=False
        ):
            self.usage[key] += value

    def report(self) -> dict[str, Any]:
        groups = sorted(self.groups.values(), key=lambda g: -g["count"])
        for group in groups:
            group["resubmit"], group["advice"] = _judgement(group)
            used = group.pop("_output_tokens", None)
            if group["result_status"] == "truncated":
                group["suggested_max_tokens"] = suggested_max_tokens(used or 0)
        out: dict[str, Any] = {
            "counts": self.counts,
            "usage": self.usage,
            "failures_by_type": self.failures,
            "failure_groups": groups,
            "examples": self.examples,
        }
        if self.embedding_size is not None:
            out["embedding_size"] = self.embedding_size
        return out


def suggested_max_tokens(used: int) -> int:
    """A --max-tokens for a round of cut-off answers: four times what they used, at least 1,024.

    A limit costs only the tokens the model writes, so a generous one saves rounds: an answer cut at a
    small limit is often several times longer (doubling each round took three rounds in the audit)."""
    return max(MIN_SUGGESTED_MAX_TOKENS, 4 * used)


def _judgement(group: dict[str, Any]) -> tuple[str, str]:
    """Whether resubmitting this group is likely to help, and what to do."""
    status, kind, http = group["result_status"], group["type"], group["status"]
    if kind == "never_sent":
        return "yes", "never sent (a submit stopped early): submit.py --resubmit --manifest M sends them"
    if status == "missing":  # never run: nothing about the request itself, however often it happened
        return "yes", "never answered (its batch was cancelled, expired or lost it): resubmit"
    if status == "truncated":  # a length limit: the same limit cuts the same answer again
        used = group.get("_output_tokens") or 0
        larger = f"--max-tokens {suggested_max_tokens(used)}"
        if group["persistent"] and group["persistent"] == group["count"]:
            return "maybe", (
                f"cut off at the output-token limit in the last two rounds too (up to {used:,} output "
                f"tokens): resubmit only with {larger}; if the limit was raised already, read the example "
                "(an answer that never ends needs a clearer prompt or a stop sequence)"
            )
        return "yes", (
            f"cut off at the output-token limit (up to {used:,} output tokens, reasoning included): "
            f"resubmit with {larger} (a higher limit costs only the tokens written)"
        )
    if group["persistent"] and group["persistent"] == group["count"]:
        if status == "invalid":  # the same prompt gets the same answer: change the instructions
            return "no", (
                "broke the requested JSON format the same way in the last two rounds: resent as they are "
                "they fail again; resend them with clearer instructions (submit.py --resubmit --manifest M "
                '--only invalid --system "Reply with the JSON object only."), or fix their prompts'
            )
        return "no", "failed the same way in the last two rounds: fix the requests before resubmitting"
    if status == "invalid":
        return (
            "maybe",
            "the answer broke the requested JSON format: resubmitting may help; a clearer prompt helps more",
        )
    if not refused(status, kind, http):
        return "yes", "a passing failure (server error, timeout, rate limit, or never run): resubmit"
    return "no", "the server refused the request: fix it (see the example message) before resubmitting"


def _short(error: dict[str, Any], limit: int = 300) -> str:
    message = str(error.get("message") or "")
    return message if len(message) <= limit else message[:limit] + "..."


# --------------------------------------------------------------------------- the driver


def join(
    store: Store,
    running: set[str],
    results_path: Path,
    retry_path: Path,
    extra: Sequence[Writer] = (),
    ordered: list[Run] | None = None,
    written: AtomicFile | LinkedFile | None = None,
) -> dict[str, Any]:
    """Write results.jsonl and retry.jsonl (atomically) and feed ``extra`` writers; returns the summary
    (with ``per_batch`` counts). ``ordered``: the whole job as runs, known without the index (answers
    checked against their inputs as they arrived, :mod:`doubleword.inorder`); ``written``: results.jsonl
    already written from those runs while they arrived, put in place here. When the runs are the record
    file whole, results.jsonl is made a second name of it (:func:`_linked`)."""
    requests = _Requests(store.source_paths(), store.path.with_name(RECORDS_NAME))
    summary = Summary()
    try:
        with contextlib.ExitStack() as files:
            retry = files.enter_context(atomic_writer(retry_path))
            writers: list[Writer] = [RetryFile(retry, requests), summary, *extra]
            runs = all(hasattr(w, "add_run") for w in writers)  # a writer without: no runs
            if runs and ordered is None:
                ordered = _ordered(store, requests)
            if written is None and ordered:
                written = _linked(store, ordered, results_path)
            lines = None
            if written is None or not ordered:
                lines = ResultsFile(files.enter_context(atomic_writer(results_path)), requests)
                writers.insert(0, lines)
            adders = [w.add for w in writers]
            run_adders = [getattr(w, "add_run", None) for w in writers]
            items: Iterable[Result | Run] = ordered or records(store, running, requests, runs=runs)
            for item in items:
                if isinstance(item, Run):
                    for add_run in run_adders:
                        add_run(item)  # type: ignore[misc]
                else:
                    for add in adders:
                        add(item)
            if lines is not None:
                lines.flush()
            for writer in extra:
                close = getattr(writer, "close", None)
                if close is not None:
                    close()
        if lines is None and written is not None:
            written.install()
    finally:
        if written is not None:
            written.discard()  # nothing when installed
        requests.close()
    report = summary.report()
    report["per_batch"] = summary.per_batch
    return report


def whole_file(runs: Sequence[Run], size: int) -> bool:
    """The runs, in their order, are the ``size`` bytes of the record file from its start, each once."""
    if any(run.released for run in runs):
        return False  # not known any more
    position = 0
    for run in runs:
        for start, end in run.ranges:
            if start != position:
                return False
            position = end
    return position == size


def _linked(store: Store, ordered: list[Run], results_path: Path) -> LinkedFile | None:
    """results.jsonl as a second name of the record file when ``ordered`` is that file whole: the same
    bytes, none copied (half the disk, no copy at the end); the record file copies them for results.jsonl
    before it grows (:class:`doubleword.sinks.RecordFile`). None where it is not, or cannot be linked."""
    records = store.path.with_name(RECORDS_NAME)
    size = int(store.meta("records_bytes") or 0)
    if not whole_file(ordered, size) or records.stat().st_size != size:
        return None
    linked = LinkedFile.make(records, results_path)
    if linked is not None:
        store.set_meta(SHARED_KEY, share_stamp(records.stat()))
    return linked


def _ordered(store: Store, requests: _Requests) -> list[Run] | None:
    """The whole job as runs, when its record file is its results in order (:meth:`Store.in_order`)."""
    ranges = store.in_order()
    if ranges is None:
        return None
    return [
        Run(b, [(start, end)], n, tokens, requests.record(start, first) or b"")
        for b, start, end, n, tokens, first in ranges
    ]
