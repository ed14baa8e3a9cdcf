"""The files a download appends to, and the reader of one content reply.

:class:`Sink` is a raw line file (``output.jsonl``, ``errors.jsonl``) whose committed length the manifest
keeps; :class:`RecordFile` holds each indexed line's encoded answer members (committed length in the fetch
index). :class:`ReplyReader` decodes a reply's lines as they arrive (:func:`doubleword.answers.encode_line`),
appends the new ones (de-duplicated by line id) and moves the cursor only past what it accounted for; a
reply that is not NDJSON of output lines, or that repeats lines already downloaded (a cache that ignores
``skip``), raises :class:`BadContent`, a retried fault.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from doubleword.answers import encode_line
from doubleword.cli import warn
from doubleword.endpoints import endpoint_for_url
from doubleword.errors import ServiceError
from doubleword.files import AtomicFile, RangeCopier, real_target
from doubleword.inorder import appended
from doubleword.store import SHARED_KEY, RecordRow, RowHead, Store, share_stamp

COMMIT_LINES = 10_000  # commit at least this often (and at least every COMMIT_SECONDS): the syncs are
COMMIT_SECONDS = 1.0  # spread over the download instead of all waiting at its end
WRITE_LINES = 64  # records written at once (answers handed back by a tracker come by the thousand)
LAST_STRETCH = 2_500  # and once this many lines before a file's known end: the end's sync is then short
NUMBERS = {"output": 0, "errors": 1}


class BadContent(requests.exceptions.RequestException):
    """A content reply that is not what a file of output lines looks like: retried, no cursor moved."""


class Sink:
    """An append-only raw line file whose committed length lives in the manifest."""

    def __init__(self, path: Path, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state
        committed = int(state.get("bytes", 0))
        size = path.stat().st_size if path.exists() else 0
        self.reset = size < committed  # removed or cut by hand: downloaded again from the start
        if self.reset:
            warn(f"{path} is shorter than recorded; downloading it again from the start")
            committed = 0
            state["lines"] = 0
        with open(path, "ab") as handle:
            handle.truncate(committed)
        state["bytes"] = committed
        state.pop("segments", None)  # version-1 bookkeeping; the index now records each line's batch
        self.handle = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.pending_bytes = 0
        self.pending_lines = 0

    def end(self) -> int:
        """The byte offset the next appended line gets."""
        return int(self.state["bytes"]) + self.pending_bytes

    def extend(self, lines: list[bytes], size: int) -> None:
        """Append lines (``size``: their bytes, newlines included) in one write."""
        if lines:
            lines.append(b"")
            self.handle.write(b"\n".join(lines))
            self.pending_bytes += size
            self.pending_lines += len(lines) - 1

    def truncate(self) -> None:
        self.handle.truncate(0)
        self.state["bytes"] = self.state["lines"] = 0

    def flush(self) -> int:
        """Hand the appended lines to the system and count them committed; returns the descriptor that
        the committer syncs before the manifest recording them is written."""
        self.handle.flush()
        self.state["bytes"] = int(self.state["bytes"]) + self.pending_bytes
        self.state["lines"] = int(self.state.get("lines", 0)) + self.pending_lines
        self.pending_bytes = self.pending_lines = 0
        return self.handle.fileno()

    def close(self) -> None:
        self.handle.close()


class RecordFile:
    """The encoded answer members of every indexed line (appended; committed length in the index).

    When a job's answers came back whole and in input order, results.jsonl is this file under a second
    name (a hard link made by :func:`doubleword.results.join`), and nothing is written through it: the
    first append gives results.jsonl a copy of its own. If the file was changed through results.jsonl
    (its size or time is not what was recorded when they were linked), it no longer holds the answers as
    decoded: this name is dropped (results.jsonl keeps the bytes) and the lines are read again."""

    def __init__(self, path: Path, store: Store, results_path: Path) -> None:
        self.path, self.store, self.results_path = path, store, results_path
        committed = int(store.meta("records_bytes") or 0)
        self.shared = self._linked_to_results()
        if self.shared and not self._unchanged(committed):
            path.unlink()
            self.shared = False
        size = path.stat().st_size if path.exists() else 0
        self.reset = size < committed  # removed by hand: the lines must be read again
        self.trimmed = size > committed  # written past the last commit: a run was stopped
        self.committed = 0 if self.reset else committed
        if not self.shared:  # (shared, it is its committed length: checked above)
            with open(path, "ab") as handle:
                handle.truncate(self.committed)
        self.handle = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.pending = 0

    def _linked_to_results(self) -> bool:
        try:
            mine, theirs = os.stat(self.path), os.stat(real_target(self.results_path))
        except OSError:
            return False
        return mine.st_nlink > 1 and os.path.samestat(mine, theirs)

    def _unchanged(self, committed: int) -> bool:
        stat = os.stat(self.path)
        return stat.st_size == committed and self.store.meta(SHARED_KEY) in (None, share_stamp(stat))

    def _unshare(self) -> None:
        """results.jsonl replaced by a copy of its own (the same bytes) before this file grows."""
        copy = AtomicFile(self.results_path)
        try:
            with open(self.path, "rb") as source:
                RangeCopier(source).append(0, self.committed, copy.fd)
            copy.install()
        finally:
            copy.discard()  # nothing when installed
        self.shared = False

    def end(self) -> int:
        return self.committed + self.pending

    def extend(self, lines: list[bytes], size: int) -> None:
        if lines:
            if self.shared:
                self._unshare()
            for start in range(0, len(lines), WRITE_LINES):  # (why not all at once: store.TEXT_ROWS)
                part = lines[start : start + WRITE_LINES]
                part.append(b"")
                self.handle.write(b"\n".join(part))
            self.pending += size

    def append(self, rows: Sequence[RecordRow], records: list[bytes]) -> None:
        """Records appended where their rows (:func:`doubleword.inorder.appended`) say: from :meth:`end` on."""
        if rows:
            self.extend(records, rows[-1][11] + rows[-1][12] + 1 - rows[0][11])

    def flush(self) -> int:
        """As :meth:`Sink.flush` (the committed length is kept in the index)."""
        self.handle.flush()
        self.committed += self.pending
        self.pending = 0
        self.store.set_meta("records_bytes", str(self.committed))
        return self.handle.fileno()

    def close(self) -> None:
        self.handle.close()


class ReplyReader:
    """One content reply being read: decodes lines, appends the new ones and moves the cursor."""

    def __init__(
        self, engine: Any, shard: Any, kind: str, cursor: dict[str, Any], batch: dict[str, Any]
    ) -> None:
        self.engine, self.kind, self.cursor = engine, kind, cursor
        self.number = NUMBERS[kind]
        self.batch_id = str(shard.batch_id)
        self.endpoint = endpoint_for_url(shard.endpoint or batch.get("endpoint"))
        self.start = cursor["skip"]
        self.received = 0  # lines of this reply
        self.moved = 0  # lines the cursor has been moved past
        self.fresh = 0  # lines that were new
        self.blank = 0  # blank lines (skipped; a reply of nothing else is not a page of the file)
        # Lines before the furthest point ever read may have been seen (a re-read after a /retry): those
        # are checked against the index; past it only the first line of the reply is.
        self.check_all = self.start < int(cursor.get("high", 0))
        served = served_lines(batch, kind)
        self.stretch_at = served - LAST_STRETCH if served is not None else None

    def take(self, lines: list[bytes]) -> None:
        encoded = []
        bad = None
        for raw in lines:
            raw = raw.rstrip(b"\r")
            if not raw or raw.isspace():
                self.blank += 1
                continue
            item = encode_line(raw, self.batch_id, self.endpoint)
            if item is None:
                bad = raw
                break
            encoded.append((raw, item))
        engine = self.engine
        with engine.lock:
            sink = engine.sinks[self.kind]
            ids = [item[0] for _, item in encoded if item[0] is not None]
            if not self.check_all and ids and self.start > 0 and not self.received:
                # the first line of a reply past the furthest point read so far: a known one means the
                # server is repeating itself, so every line of this reply is checked
                self.check_all = bool(engine.store.known(self.number, ids[:1]))
            known = engine.store.known(self.number, ids) if ids and self.check_all else set()
            heads: list[RowHead] = []
            raws: list[bytes] = []
            datas: list[bytes] = []
            offset = sink.end()
            number, batch_id = self.number, self.batch_id
            skipped = False
            for raw, (line_id, custom_id, status, (p, c, t), et, es, record) in encoded:
                self.received += 1
                if line_id is not None:
                    if line_id in known:
                        skipped = True
                        continue
                    known.add(line_id)
                else:  # a line without an id cannot be recognised again; it is kept under its position
                    line_id = f"\x00{offset}"
                heads.append((number, offset, line_id, batch_id, custom_id, status, p, c, t, et, es))
                raws.append(raw)
                datas.append(record)
                offset += len(raw) + 1
                self.moved = self.received  # a new line: every line before it is accounted for
            self.fresh += len(heads)
            sink.extend(raws, offset - sink.end())
            at = engine.records.end()
            tracker = engine.trackers.get(batch_id)
            tracked = tracker is not None and tracker.handle is not None
            if tracked and self.kind == "output" and not skipped:
                rows, datas = tracker.take(heads, datas, at)  # (in input order: see doubleword.inorder)
            elif tracked and (heads or skipped):
                # a failure, or a line seen before: not a plain run of answers in input order
                rows, datas = appended([*zip(heads, datas, strict=True), *tracker.retire()], at)
            else:
                rows, datas = appended(zip(heads, datas, strict=True), at)
            engine.records.append(rows, datas)
            if tracked and tracker.handle is None:
                engine.retired(tracker)
            if rows and tracked and tracker.handle is not None:
                engine.store.defer_records(rows)  # answers in input order so far: the join may not need them
            else:
                engine.store.add_records(rows)
            self.cursor["skip"] = self.start + self.moved
            self.cursor["high"] = max(int(self.cursor.get("high", 0)), self.cursor["skip"])
            due = self._commit_due(sink)
        if due:
            engine.commit()
        if bad is not None:
            raise BadContent(f"the server sent a line that is not an output line: {bad[:80]!r}")

    def _commit_due(self, sink: Sink) -> bool:
        """Every COMMIT_LINES lines or COMMIT_SECONDS, and once LAST_STRETCH lines before the file's end."""
        if self.stretch_at is not None and self.start + self.received >= self.stretch_at:
            self.stretch_at = None
            return True
        return (
            sink.pending_lines >= COMMIT_LINES or time.monotonic() - self.engine.last_commit >= COMMIT_SECONDS
        )

    def finish(self) -> None:
        """The whole reply arrived: lines that were all known move the cursor unless the page repeats."""
        if self.blank and not self.received:
            raise BadContent(f"the server sent {self.blank} blank lines and no output line (a proxy's page?)")
        if self.fresh == 0 and self.received >= 2 and self.start > 0:
            raise ServiceError(  # not retried: a cache that ignores skip answers the same again
                f"the server repeated {self.received} lines already downloaded when asked for skip={self.start} "
                "(does something between here and the server ignore 'skip'?); nothing was lost: run again later"
            )
        with self.engine.lock:
            self.moved = self.received
            self.cursor["skip"] = self.start + self.moved
            self.cursor["high"] = max(int(self.cursor.get("high", 0)), self.cursor["skip"])

    def flush(self) -> None:
        self.engine.commit()


def served_lines(batch: dict[str, Any], kind: str) -> int | None:
    """How many lines the server says that file of the batch has (its request counts), if it says."""
    counts = batch.get("request_counts") or {}
    value = counts.get("completed" if kind == "output" else "failed")
    return value if isinstance(value, int) else None


def check_content_type(response: requests.Response) -> None:
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        raise BadContent(f"the server sent {kind} instead of the file's lines (a proxy's error page?)")
