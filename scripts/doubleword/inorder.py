"""Answers that arrive in input order: noticed while they stream in, so results.jsonl needs no join.

A batch's output usually comes back in the order of its input. While a batch downloads from its first
line, an :class:`OrderTracker` reads the batch's input file alongside and checks each new answer against
the next input line: same custom_id, completed, no JSON check needed. Answers that come a little ahead of
their line (requests that ran at once finish in any order) wait in the tracker and are appended to the
record file (which holds each answer's results.jsonl line) once the lines before them are answered. As
long as that holds, the batch's records are one stretch of the record file in input order, that batch's
part of results.jsonl, and the input lines never need indexing.

The first answer that breaks the pattern (another custom_id, a failure, a cut-off answer, a request asking
for JSON, a line seen before) retires the tracker, and :mod:`doubleword.download` falls back to indexing
the inputs and joining in the fetch index (:mod:`doubleword.results`). Trackers live in memory for one run:
a run that resumes a batch part-way takes the index's path (which still writes an in-order job by ranges).

A job of one batch that came back whole is then its record file: the join gives it results.jsonl as a
second name. For a job of several batches results.jsonl is written as the answers arrive
(:class:`ResultsDraft`, a temp file beside it that the engine's committer thread appends the new ranges
to at each commit), so the end of a fetch only puts it in place instead of copying and syncing it then.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, overload

from doubleword.batch_inputs import JSON_HINTS, custom_id_of, fast_custom_id
from doubleword.files import AtomicFile, RangeCopier
from doubleword.store import RecordRow, RowHead

Range = tuple[int, int]  # a byte range of the record file
RELEASE_AT = 1024  # ranges a tracker holds before those handed to the draft are dropped
_RESPONSE_FORMAT, _FORMAT = JSON_HINTS
_EITHER_FORMAT = b'format"'  # in both hints: one scan of a line that has neither (most lines)


class Ranges(Sequence[Range]):
    """Byte ranges kept as one flat array of integers: 16 bytes a range instead of ~130 as tuples in a list
    (answers in completion order are a range each). Ranges handed on (to the results.jsonl draft) can be
    dropped from the front (:meth:`release`), so that a batch of any size holds only the ranges of the
    answers since; ``released`` counts their bytes."""

    def __init__(self, pairs: Iterable[Range] = ()) -> None:
        self._flat = array("q")
        self.released = 0
        self.extend(pairs)

    def __len__(self) -> int:
        return len(self._flat) // 2

    @overload
    def __getitem__(self, index: int) -> Range: ...
    @overload
    def __getitem__(self, index: slice) -> list[Range]: ...
    def __getitem__(self, index: int | slice) -> Range | list[Range]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._flat[2 * index], self._flat[2 * index + 1]

    def __iter__(self) -> Iterator[Range]:
        return self.since(0)

    def since(self, index: int) -> Iterator[Range]:
        """The ranges from ``index`` on (a copy of the flat array: a later append does not disturb it)."""
        values = iter(self._flat[2 * index :])
        return zip(values, values, strict=False)  # pairs of the flat array

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def append(self, pair: Range) -> None:
        self._flat.extend(pair)

    def extend(self, pairs: Iterable[Range]) -> None:
        if isinstance(pairs, Ranges):
            self._flat.extend(pairs._flat)
            return
        for pair in pairs:
            self._flat.extend(pair)

    def pop(self) -> Range:
        end = self._flat.pop()
        return self._flat.pop(), end

    def release(self, count: int) -> None:
        """Drop the first ``count`` ranges, counting their bytes in ``released``."""
        head = self._flat[: 2 * count]
        self.released += sum(head[1::2]) - sum(head[0::2])
        del self._flat[: 2 * count]


class OrderTracker:
    """One batch's answers checked against its input file, line by line, as they arrive.

    A server writes answers in completion order: requests that ran at once finish in any order among
    themselves. Answers that arrive before their input line wait in a window (``ahead``, their records
    with them) until the lines before them are answered; they are then handed back in input order, to be
    appended to the record file in that order, so that a tracked batch's records are one stretch of it
    (results.jsonl is then that stretch, whatever order the answers came in). A window past ``WINDOW``
    answers or ``WINDOW_BYTES`` of records, or an answer whose id is already waiting, retires the tracker
    (the join takes over), and the waiting answers are handed back as they are. While answers wait, each
    commit keeps their index rows apart (:meth:`doubleword.store.Store.hold`): a run killed then rebuilds
    their records from the raw file."""

    WINDOW = 10_000  # answers waiting for earlier input lines at most
    WINDOW_BYTES = 2 << 20  # and their records' bytes (the window's memory: ~2 MB and 200 bytes an answer)

    def __init__(self, batch_id: str, path: Path) -> None:
        self.batch_id = batch_id
        self.handle: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - closed by retire()/finished()
        self.complete = False  # every input line answered, in order
        self.count = 0
        self.tokens = [0, 0, 0]
        self.ranges = Ranges()
        # the next input line without an answer, read once: (its custom_id, whether it asks for JSON);
        # None past the last line
        self.line: tuple[str | None, bool] | None = self._next_line()
        self.ahead: dict[str, tuple[RowHead, bytes]] = {}  # custom_id -> its row head and record
        self.ahead_bytes = 0  # the bytes of the records waiting in ``ahead``
        self.held = False  # its waiting answers' rows are kept in the index (Store.hold)

    def retire(self) -> list[tuple[RowHead, bytes]]:
        """Stop checking; returns the answers that were waiting (the caller appends them as they are)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        waiting, self.ahead, self.ahead_bytes = list(self.ahead.values()), {}, 0
        return waiting

    def _next_line(self) -> tuple[str | None, bool] | None:
        """The next input line that is not blank: its custom_id (where create_batch_file.py writes it, else
        parsed; None if it has none) and whether it asks for JSON. None at the end."""
        assert self.handle is not None
        for raw in self.handle:
            if not raw.isspace():
                line = raw.rstrip(b"\r\n")
                wants_json = _EITHER_FORMAT in line and (_FORMAT in line or _RESPONSE_FORMAT in line)
                return fast_custom_id(line) or custom_id_of(line), wants_json
        return None

    def take(
        self, heads: Sequence[RowHead], records: Sequence[bytes], at: int
    ) -> tuple[list[RecordRow], list[bytes]]:
        """New answers of the output file in arrival order (their index rows without the record's place,
        and their records). Returns the answers to append to the record file now, from offset ``at`` on,
        in that order: their rows (naming where) and records. Those are the answers now in input order,
        or, once the tracker retires here (``handle`` None), every answer not appended yet."""
        rows: list[RecordRow] = []
        out: list[bytes] = []
        ahead, window, next_line, line = self.ahead, self.WINDOW, self._next_line, self.line
        ahead_bytes, window_bytes = self.ahead_bytes, self.WINDOW_BYTES
        # the last range and the totals in locals (this runs once per answer), written back at the end
        first, last = self.ranges.pop() if self.ranges else (-1, -1)
        count, (pt, ct, tt) = self.count, self.tokens
        taken = 0  # answers of ``heads`` dealt with
        left: list[tuple[RowHead, bytes]] = []  # set when the tracker retires: the answers not appended
        for head, record in zip(heads, records, strict=True):
            custom_id = head[4]
            if head[5] != "completed" or custom_id is None:
                break
            if line is None or custom_id != line[0]:
                if custom_id in ahead or len(ahead) >= window or ahead_bytes > window_bytes:
                    break  # a second answer for one request, or too far from input order
                # a copy of its own: orjson's output keeps an allocation of 4 KB or more, whatever its length
                ahead[custom_id] = (head, memoryview(record).tobytes())
                ahead_bytes += len(record)
                taken += 1
                continue
            while True:  # this answer, then those waiting for it, in input order
                if line[1]:  # a request asking for JSON: its answer needs the check
                    left.append((head, record))
                    break
                if at != last:
                    if last >= 0:
                        self.ranges.append((first, last))
                    first = at
                size = len(record)
                rows.append((*head, at, size))
                out.append(record)
                at = last = at + size + 1
                count += 1
                pt, ct, tt = pt + head[6], ct + head[7], tt + head[8]
                line = next_line()
                if not ahead or line is None or line[0] is None:
                    break
                waiting = ahead.pop(line[0], None)
                if waiting is None:
                    break
                head, record = waiting
                ahead_bytes -= len(record)
            if left:
                taken += 1
                break
            taken += 1
        if last >= 0:
            self.ranges.append((first, last))
        self.count, self.tokens, self.line, self.ahead_bytes = count, [pt, ct, tt], line, ahead_bytes
        if left or taken < len(heads):
            left.extend(zip(heads[taken:], records[taken:], strict=True))
            left.extend(self.retire())
            more, more_records = appended(left, at)
            rows.extend(more)
            out.extend(more_records)
        return rows, out

    def finished(self) -> bool:
        """Every input line was answered, in order (call once the batch's files are read to the end): the
        tracker is then done, ``complete``. False while an input line has no answer (yet) or an answer
        waits for one that will not come; the caller retires it then."""
        if self.handle is None or self.ahead or self.line is not None:
            return False
        self.retire()
        self.complete = self.count > 0
        return self.complete


def appended(answers: Iterable[tuple[RowHead, bytes]], at: int) -> tuple[list[RecordRow], list[bytes]]:
    """Answers (row heads and records) to append to the record file as they come, from offset ``at`` on:
    their rows, naming where, and their records."""
    rows: list[RecordRow] = []
    records: list[bytes] = []
    for head, record in answers:
        size = len(record)
        rows.append((*head, at, size))
        records.append(record)
        at += size + 1
    return rows, records


class ResultsDraft:
    """results.jsonl written while the answers arrive in input order, so that none of it is left for the end.

    At each commit the engine asks :meth:`due` for the record-file ranges of in-order answers not handed
    over yet, in the job's order (a batch's answers once every earlier batch is read to its end), and its
    committer thread appends them (:meth:`write`). When the job came back in order, :meth:`complete` adds
    what is left and the join puts the file in place of results.jsonl; the first batch that is not in order
    stops the draft, which is then discarded and results.jsonl written by the join as before."""

    def __init__(self, results_path: Path, records_path: Path, batch_ids: Sequence[str]) -> None:
        self.batch_ids = list(batch_ids)
        self.file = AtomicFile(results_path)
        self.records = open(records_path, "rb")  # noqa: SIM115 - closed by discard()/complete()
        self.copier = RangeCopier(self.records)
        self.stopped = False
        self.sizes = [0]  # bytes handed over of each batch so far (the last: the batch being handed over)
        self._range = 0  # its first range not wholly handed over (the last may still grow)
        self._done = 0  # the bytes of that range handed over (ranges are in input order, not by offset)

    def due(self, trackers: dict[str, OrderTracker | None], read: Callable[[str], bool]) -> Ranges:
        """The ranges to append now; ``read(batch_id)``: that batch's files are read to their end. The
        tracker's ranges handed over are released (past RELEASE_AT: an in-order batch's few are kept,
        since the join may link the record file instead)."""
        out = Ranges()
        while not self.stopped and len(self.sizes) <= len(self.batch_ids):
            batch_id = self.batch_ids[len(self.sizes) - 1]
            if batch_id not in trackers:
                break  # not downloading yet
            tracker = trackers[batch_id]
            if tracker is None or (tracker.handle is None and not tracker.complete):
                self.stopped = True  # not tracked, or not in order: the join writes results.jsonl
                break
            ranges = tracker.ranges
            for start, end in ranges.since(self._range):
                start += self._done  # (the bytes of the first already handed over; 0 for the others)
                if end > start:
                    out.append((start, end))
                    self.sizes[-1] += end - start
                self._done = 0
            if ranges:  # the last range may still grow: handed over up to its end now
                self._range = len(ranges) - 1
                self._done = ranges[-1][1] - ranges[-1][0]
                if self._range >= RELEASE_AT:
                    ranges.release(self._range)
                    self._range = 0
            if not read(batch_id):
                break
            self.sizes.append(0)
            self._range, self._done = 0, 0
        return out

    def write(self, ranges: Iterable[Range]) -> None:
        self.copier.append_all(ranges, self.file.fd)

    def complete(self, runs: Sequence[Any]) -> AtomicFile | None:
        """The file holding the whole of ``runs`` (what is left appended), or None (discarded) if what was
        handed over is not their beginning (a batch grew after it was handed over: it ran again).
        Call once the committer has written everything handed over."""
        if not self._begins(runs) or os.fstat(self.file.fd).st_size != sum(self.sizes):
            self.discard()
            return None
        self.write(self._rest(runs))
        self.records.close()
        return self.file

    def _begins(self, runs: Sequence[Any]) -> bool:
        """What was handed over is the beginning of ``runs``: the same batches in the same order, every
        batch handed over whole still its whole run (the current one's part is a prefix by construction)."""
        if [run.batch_id for run in runs] != self.batch_ids:
            return False
        passed = zip(runs, self.sizes[:-1], strict=False)
        return all(
            size == run.released + sum(end - start for start, end in run.ranges) for run, size in passed
        )

    def _rest(self, runs: Sequence[Any]) -> Iterator[Range]:
        """The ranges of ``runs`` after the bytes handed over."""
        for position, run in enumerate(runs):
            skip = self.sizes[position] - run.released if position < len(self.sizes) else 0
            for start, end in run.ranges:
                if skip >= end - start:
                    skip -= end - start
                else:
                    yield start + skip, end
                    skip = 0

    def discard(self) -> None:
        self.records.close()
        self.file.discard()
