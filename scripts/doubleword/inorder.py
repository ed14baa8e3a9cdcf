"""Answers that arrive in input order: noticed while they stream in, so results.jsonl needs no join.

A batch's output usually comes back in the order of its input. While a batch downloads from its first
line, an :class:`OrderTracker` reads the batch's input file alongside and checks each new answer against
the next input line: same custom_id, completed, no JSON check needed. As long as that holds, the byte
ranges of the answers' records (the record file holds each answer's results.jsonl line) are, in order,
that batch's part of results.jsonl, and the input lines never need indexing.

The first answer that breaks the pattern (another custom_id, a failure, a cut-off answer, a request asking
for JSON, a line seen before) retires the tracker, and :mod:`doubleword.download` falls back to indexing
the inputs and joining in the fetch index (:mod:`doubleword.results`). Trackers live in memory for one run:
a run that resumes a batch part-way takes the index's path (which still writes an in-order job by ranges).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

from doubleword.batch_inputs import JSON_HINTS, custom_id_of, fast_custom_id
from doubleword.store import RecordRow

Range = tuple[int, int]  # a byte range of the record file
_RESPONSE_FORMAT, _FORMAT = JSON_HINTS
_EITHER_FORMAT = b'format"'  # in both hints: one scan of a line that has neither (most lines)
_ID_HEAD = b'{"custom_id":"'


def _starts_with_id(line: bytes, custom_id: str | None) -> bool:
    """The line starts with this custom_id as create_batch_file.py writes it (compact, no escapes); a
    False here is decided by parsing the line."""
    if custom_id is None:
        return False
    name = custom_id.encode("utf-8")
    end = len(_ID_HEAD) + len(name)
    return line.startswith(_ID_HEAD) and line[len(_ID_HEAD) : end] == name and line[end : end + 1] == b'"'


def _parsed_id(line: bytes) -> str | None:
    return fast_custom_id(line) or custom_id_of(line)


class OrderTracker:
    """One batch's answers checked against its input file, line by line, as they arrive."""

    def __init__(self, batch_id: str, path: Path) -> None:
        self.batch_id = batch_id
        self.handle: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - closed by retire()/finished()
        self.complete = False  # every input line answered, in order
        self.count = 0
        self.tokens = [0, 0, 0]
        self.ranges: list[Range] = []

    def retire(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def take(self, rows: Sequence[RecordRow]) -> None:
        """New answers of the output file, in arrival order (the fetch index's rows)."""
        if self.handle is None:
            return
        readline = self.handle.readline
        ranges, tokens = self.ranges, self.tokens
        for _, _, _, _, custom_id, status, p, c, t, _, _, offset, length in rows:
            raw = readline()
            while raw and raw.isspace():
                raw = readline()
            line = raw.rstrip(b"\r\n")
            if (
                status != "completed"
                or not line
                or (
                    _EITHER_FORMAT in line and (_FORMAT in line or _RESPONSE_FORMAT in line)
                )  # the JSON check
                or not (_starts_with_id(line, custom_id) or _parsed_id(line) == custom_id)
            ):
                self.retire()
                return
            end = offset + length + 1
            if ranges and ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((offset, end))
            self.count += 1
            tokens[0] += p
            tokens[1] += c
            tokens[2] += t

    def finished(self) -> bool:
        """Every input line was answered, in order (call once the batch's files are read to the end)."""
        if self.handle is None:
            return False
        for raw in self.handle:
            if raw.strip():
                self.retire()  # inputs without an answer (yet): the join lists them
                return False
        self.retire()
        self.complete = self.count > 0
        return self.complete
