"""The fetch index: one SQLite file in the output folder holding what the download already decoded.

Every served line is decoded once, as it streams in (:mod:`doubleword.download`), and lands here as a row
of ``records`` (deferred while the answers come in input order, :meth:`Store.defer_records`): its file
(0 output, 1 errors) and byte offset in the raw file, line id, batch, custom_id, line status, token
counts, error type and HTTP status, and where its answer members, already encoded as JSON, are in the
record file (:data:`RECORDS_NAME`, appended beside the raw files). The input lines of every batch are
indexed in ``inputs`` (custom_id, where the line is, whether it asked for JSON output, and ``origin``:
the first-round input it is a re-send of). Writing results.jsonl is then one ordered SQL scan, without
reading the output again; memory stays flat whatever the job size.

The raw files are the truth: rows past a raw file's committed length (a killed run) are deleted on open,
and rows missing below it (the index was removed by hand) are rebuilt from the raw bytes. The rows of
answers waiting in an order tracker at a commit (:mod:`doubleword.inorder`: their records are not in the
record file yet) are kept apart in ``held``, so that a run killed then rebuilds them from the raw lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from doubleword import fastjson

INDEX_NAME = ".fetch-index.sqlite"
RECORDS_NAME = ".fetch-records.jsonl"
RESULTS_NAME = "results.jsonl"
RETRY_NAME = "retry.jsonl"
JOB_MARK = ".fetch-job"  # in a results folder: which job it holds (fetch refuses another)
FOLDER_FILES = ("output.jsonl", "errors.jsonl", RESULTS_NAME, RETRY_NAME)  # what fetch writes there
SHARED_KEY = "records_shared"  # the record file's stamp when results.jsonl was made a second name of it
SCHEMA_VERSION = 7  # 4: a record is the whole results.jsonl line, in arrival order; 5: deferred rows;
# 7: rows of answers waiting in a tracker kept apart (a tracked batch's records are in input order)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS records (
    kind INTEGER NOT NULL, off INTEGER NOT NULL, line_id TEXT NOT NULL, batch_id TEXT, custom_id TEXT,
    status TEXT, pt INTEGER, ct INTEGER, tt INTEGER, err_type TEXT, err_status INTEGER, rec_off INTEGER,
    rec_len INTEGER);
CREATE TABLE IF NOT EXISTS deferred (rows TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS held (batch_id TEXT NOT NULL, heads TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    src INTEGER PRIMARY KEY, batch_id TEXT, round INTEGER, path TEXT, size INTEGER, mtime_ns INTEGER,
    synthetic INTEGER);
CREATE TABLE IF NOT EXISTS inputs (
    seq INTEGER PRIMARY KEY, src INTEGER, batch_id TEXT, round INTEGER, custom_id TEXT, off INTEGER,
    len INTEGER, json INTEGER, digest INTEGER, origin INTEGER);
"""
_ADD_RECORD = "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
# rows kept as one JSON text at most (~75 kB): a text past 128 kB is a block of its own for the C allocator,
# whose freeing raises its threshold for such blocks, and the process keeps several MB more from then on
TEXT_ROWS = 512
RecordRow = tuple[int, int, Any, str, Any, str, int, int, int, Any, Any, int, int]
RowHead = tuple[int, int, Any, str, Any, str, int, int, int, Any, Any]  # a row before its record's place
InputRow = tuple[str, Any, int, int, int, int]  # custom_id, (unused), off, len, json flag, digest


_MARK = "\x01"  # an id kept as its JSON text (after the mark): one SQLite cannot hold as UTF-8


def stored_id(value: Any) -> Any:
    """An id (custom_id, line id) as the index keeps it. SQLite takes text as UTF-8, which a lone surrogate
    (a JSON escape such as ``\\ud83d``, half an emoji) does not have: such an id is kept as its JSON text
    after a mark, and so is one that starts with the mark, so that the mapping stays one to one."""
    if type(value) is str and (value[:1] == _MARK or not (value.isascii() or _utf8(value))):
        return _MARK + json.dumps(value)
    return value


def original_id(value: Any) -> Any:
    """The id that :func:`stored_id` kept as ``value``."""
    if type(value) is str and value[:1] == _MARK:
        return json.loads(value[1:])
    return value


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_ids(row: Sequence[Any]) -> bool:
    return stored_id(row[2]) is row[2] and stored_id(row[4]) is row[4]


def _dumps(rows: Sequence[RecordRow] | Sequence[RowHead]) -> str | bytes:
    if fastjson.dumps is not None:
        return fastjson.dumps(rows)
    return json.dumps(rows, ensure_ascii=False)


def share_stamp(stat: os.stat_result) -> str:
    """What tells that the record file was not written through results.jsonl since they were linked."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class Store:
    """The index in ``out_dir``; every method runs on the caller's thread (the engine holds one lock)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / INDEX_NAME
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if "disk is full" in str(exc):
                raise
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self.db.close()
            # Unreadable (a power loss under synchronous=OFF, or damaged by hand): it is a cache of the raw
            # files, so it starts afresh and what it held is read again from them or downloaded again.
            for name in (INDEX_NAME, *(INDEX_NAME + end for end in ("-journal", "-wal", "-shm"))):
                (out_dir / name).unlink(missing_ok=True)
            self._open()

    def _open(self) -> None:
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # A rollback journal without syncs: a killed run loses nothing (the OS has every write, and an
        # unfinished transaction is rolled back at the next open); only an OS crash can lose or damage the
        # index, which is then rebuilt (above). Each page is written once (WAL wrote it twice: to the log,
        # then checkpointed, ~5 ms of CPU at the end of every fetch). The raw files are synced at each commit.
        self.db.execute("PRAGMA journal_mode=TRUNCATE")
        self.db.execute("PRAGMA synchronous=OFF")
        version = self._version()
        if version not in (None, SCHEMA_VERSION):  # written by another version: rebuilt from the raw files
            self.db.executescript(
                "DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS inputs; DROP TABLE IF EXISTS sources;"
                "DROP TABLE IF EXISTS deferred; DROP TABLE IF EXISTS held;"
                "DELETE FROM meta WHERE key = 'records_bytes';"  # the record file is written again too
            )
        self.db.executescript(_SCHEMA)
        self.set_meta("schema", str(SCHEMA_VERSION))
        self._deferring = self.db.execute("SELECT count(*) FROM deferred").fetchone()[0] > 0
        self.db.execute("BEGIN")

    def _version(self) -> int | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            return None
        return int(row[0]) if row else None

    def close(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self.db.close()

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- records

    def drop_join_index(self) -> None:
        """Downloads append many rows: the indexes are built in bulk when they are needed (the join's when
        results are written, the line ids' when a reply may repeat lines), cheaper than row by row."""
        self.db.execute("DROP INDEX IF EXISTS records_request")
        self.db.execute("DROP INDEX IF EXISTS records_line")

    def cut(self, kind: int, committed: int) -> int:
        """Forget the rows at or past ``committed`` bytes of a raw file; returns the bytes indexed below."""
        self.index_deferred()
        self.db.execute("DELETE FROM records WHERE kind = ? AND off >= ?", (kind, committed))
        row = self.db.execute("SELECT max(off) FROM records WHERE kind = ?", (kind,)).fetchone()
        return -1 if row[0] is None else int(row[0])

    def known(self, kind: int, line_ids: Sequence[str]) -> set[str]:
        """Which of ``line_ids`` are already on disk in that file (de-duplication by line id)."""
        found: set[str] = set()
        self.index_deferred()
        self.db.execute("CREATE INDEX IF NOT EXISTS records_line ON records (kind, line_id)")
        line_ids = list(line_ids)
        for start in range(0, len(line_ids), 500):
            part = line_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            query = f"SELECT line_id FROM records WHERE kind = ? AND line_id IN ({marks})"
            found.update(original_id(row[0]) for row in self.db.execute(query, (kind, *map(stored_id, part))))
        return found

    def add_records(self, rows: Sequence[RecordRow]) -> None:
        if rows:  # (none, as from a reply slice of blank lines: the deferred rows stay deferred)
            self.index_deferred()  # (rows stay in arrival order)
            if not all(map(_plain_ids, rows)):
                rows = [(*r[:2], stored_id(r[2]), r[3], stored_id(r[4]), *r[5:]) for r in rows]
            self.db.executemany(_ADD_RECORD, rows)

    def defer_records(self, rows: Sequence[RecordRow]) -> None:
        """Rows that nothing may need (answers a tracker takes in input order: results.jsonl is written
        without the index), kept as one JSON text: a row each costs more than the rest of what is done
        with their lines but the decoding (about 3 us a line; this, 0.2). They become rows
        (:meth:`index_deferred`) before anything reads or adds records, so they are there when a tracker
        gives up or a run resumes; committed with the rest of the index."""
        for start in range(0, len(rows), TEXT_ROWS):
            part = rows[start : start + TEXT_ROWS]
            try:  # what orjson refuses or SQLite cannot hold as UTF-8 (lone surrogates): rows at once
                self.db.execute("INSERT INTO deferred VALUES (?)", (_dumps(part),))
            except (TypeError, ValueError):
                self.add_records(part)
                continue
            self._deferring = True

    def index_deferred(self) -> None:
        """The deferred rows as rows of ``records``, in the order they came (a slice at a time: memory
        stays flat)."""
        if not self._deferring:
            return
        last = 0
        while True:
            texts = self.db.execute(
                "SELECT rowid, rows FROM deferred WHERE rowid > ? ORDER BY rowid LIMIT 100", (last,)
            ).fetchall()
            if not texts:
                break
            for _, text in texts:
                self.db.executemany(_ADD_RECORD, json.loads(text))
            last = texts[-1][0]
        self.db.execute("DELETE FROM deferred")
        self._deferring = False

    def cut_records(self, size: int) -> None:
        """Forget the rows whose record is not within the record file's first ``size`` bytes (committed):
        answers put in input order after the last commit of a run that was stopped, whose raw lines are
        older than that commit. Their rows were held then (:meth:`hold`)."""
        self.index_deferred()
        self.db.execute("DELETE FROM records WHERE rec_off + rec_len >= ?", (size,))

    def hold(self, batch_id: str, heads: Sequence[RowHead]) -> None:
        """The rows (without their records' place) of the answers waiting in a batch's tracker now, in
        place of those held before: their records are not in the record file yet. Only a run stopped
        before they were appended reads them (:meth:`take_held`)."""
        self.release(batch_id)
        for start in range(0, len(heads), TEXT_ROWS):
            part = heads[start : start + TEXT_ROWS]
            try:
                self.db.execute("INSERT INTO held VALUES (?, ?)", (batch_id, _dumps(part)))
            except (TypeError, ValueError):  # what orjson refuses or SQLite cannot hold (lone surrogates)
                self.db.execute("INSERT INTO held VALUES (?, ?)", (batch_id, json.dumps(part)))

    def release(self, batch_id: str) -> None:
        """No answer of the batch waits any more (appended, or its tracker is done)."""
        self.db.execute("DELETE FROM held WHERE batch_id = ?", (batch_id,))

    def take_held(self) -> list[RowHead]:
        """The rows held when the last run was stopped (removed here: the caller makes their records)."""
        texts = self.db.execute("SELECT heads FROM held ORDER BY rowid").fetchall()
        heads: list[RowHead] = [tuple(head) for (text,) in texts for head in json.loads(text)]
        self.db.execute("DELETE FROM held")
        return heads

    def answered(self, batch_id: str) -> list[str]:
        self.index_deferred()
        self.db.execute("CREATE INDEX IF NOT EXISTS records_request ON records (batch_id, custom_id)")
        query = "SELECT DISTINCT custom_id FROM records WHERE batch_id = ? AND custom_id IS NOT NULL ORDER BY custom_id"
        return [original_id(row[0]) for row in self.db.execute(query, (batch_id,))]

    def line_count(self, batch_id: str) -> int:
        self.index_deferred()
        row = self.db.execute("SELECT count(DISTINCT custom_id) FROM records WHERE batch_id = ?", (batch_id,))
        return int(row.fetchone()[0])

    # -- inputs

    def source(self, batch_id: str) -> tuple[int, str | None, int, int, int] | None:
        row = self.db.execute(
            "SELECT src, path, size, mtime_ns, synthetic FROM sources WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), row[1], int(row[2] or 0), int(row[3] or 0), int(row[4]))

    def source_keys(self) -> list[tuple[int, str]]:
        """Every source's ``(src, batch_id)``: the batch, or the key of a never-sent shard's inputs."""
        return [(int(r[0]), str(r[1])) for r in self.db.execute("SELECT src, batch_id FROM sources")]

    def drop_source(self, src: int) -> None:
        self.db.execute("DELETE FROM inputs WHERE src = ?", (src,))
        self.db.execute("DELETE FROM sources WHERE src = ?", (src,))

    def add_source(
        self,
        batch_id: str,
        round_number: int,
        path: str | None,
        size: int,
        mtime_ns: int,
        rows: Iterable[InputRow],
    ) -> int:
        synthetic = 1 if path is None else 0
        cursor = self.db.execute(
            "INSERT INTO sources (batch_id, round, path, size, mtime_ns, synthetic) VALUES (?,?,?,?,?,?)",
            (batch_id, round_number, path, size, mtime_ns, synthetic),
        )
        src = int(cursor.lastrowid or 0)
        self.add_inputs(src, batch_id, round_number, rows)
        return src

    def finish_source(self, src: int, size: int, mtime_ns: int) -> None:
        self.db.execute("UPDATE sources SET size = ?, mtime_ns = ? WHERE src = ?", (size, mtime_ns, src))

    def add_inputs(self, src: int, batch_id: str, round_number: int, rows: Iterable[InputRow]) -> None:
        """Input lines of a source, in their order (a source's rows may come in several slices)."""
        self.db.executemany(
            "INSERT INTO inputs (src, batch_id, round, custom_id, off, len, json, digest) VALUES (?,?,?,?,?,?,?,?)",
            ((src, batch_id, round_number, stored_id(r[0]), r[2], r[3], r[4], r[5]) for r in rows),
        )

    def source_paths(self) -> dict[int, str]:
        return {
            int(r[0]): r[1] for r in self.db.execute("SELECT src, path FROM sources WHERE path IS NOT NULL")
        }

    def link_rounds(self, by_content: bool) -> None:
        """Set every input's ``origin``: the input of the earliest round it re-sends (same custom_id; with
        ``by_content`` also the same request line, for batches given by id), else itself."""
        first, last = self.db.execute("SELECT min(round), max(round) FROM inputs").fetchone()
        if first == last:
            return  # origin NULL: the input itself (no row to update in a one-round job)
        self.db.execute("CREATE INDEX IF NOT EXISTS inputs_custom_id ON inputs (custom_id, round)")
        match = "f.custom_id = inputs.custom_id AND f.round < inputs.round"
        if by_content:
            match += " AND f.digest = inputs.digest"
        self.db.execute(
            f"UPDATE inputs SET origin = (SELECT f.seq FROM inputs f WHERE {match}"
            " ORDER BY f.round, f.seq LIMIT 1) WHERE round > ?",
            (first,),
        )

    def in_order(self) -> list[tuple[str, int, int, int, list[int], int]] | None:
        """When a one-round job's results.jsonl is its record file as it is: per source (in input order),
        ``(batch_id, start, end, count, tokens, first record's length)`` for the byte range of its records;
        None unless every input has exactly one record, completed, no JSON check, in input order.

        Checked in SQL by position (each input's seq against a record's rowid), no row reaches Python:
        the common case of a job answered in order is written without a per-line join."""
        self.index_deferred()
        if self.db.execute("SELECT count(DISTINCT round) FROM inputs").fetchone()[0] != 1:
            return None
        ranges = []
        for src, batch_id, synthetic in self.db.execute(
            "SELECT src, batch_id, synthetic FROM sources ORDER BY src"
        ).fetchall():
            inputs, first_seq = self.db.execute(
                "SELECT count(*), min(seq) FROM inputs WHERE src = ?", (src,)
            ).fetchone()
            found = self.db.execute(
                "SELECT count(*), min(rowid), min(rec_off), sum(rec_len + 1), sum(pt), sum(ct), sum(tt)"
                " FROM records WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
            if synthetic or not inputs or found[0] != inputs:
                return None
            shift = found[1] - first_seq
            matched = self.db.execute(
                "SELECT count(*) FROM inputs i JOIN records r ON r.rowid = i.seq + ? WHERE i.src = ?"
                " AND r.batch_id = i.batch_id AND r.custom_id = i.custom_id AND r.status = 'completed'"
                " AND i.json = 0",
                (shift, src),
            ).fetchone()[0]
            first, last = (
                self.db.execute("SELECT rec_off, rec_len FROM records WHERE rowid = ?", (row,)).fetchone()
                for row in (found[1], found[1] + inputs - 1)
            )
            start, end = found[2], last[0] + last[1] + 1
            if matched != inputs or first[0] != start or end - start != found[3]:
                return None  # out of order, or not contiguous in the record file
            ranges.append(
                (batch_id, start, end, inputs, [found[4] or 0, found[5] or 0, found[6] or 0], first[1])
            )
        return ranges or None

    def joined(self) -> Iterator[tuple[Any, ...]]:
        """Every input with its records, first inputs in input order, each followed by its re-sends."""
        # Built in bulk here (and dropped while downloading, see drop_join_index): cheaper than keeping it
        # up to date line by line.
        self.index_deferred()
        self.db.execute("CREATE INDEX IF NOT EXISTS records_request ON records (batch_id, custom_id)")
        rounds = self.db.execute("SELECT count(DISTINCT round) FROM inputs").fetchone()[0]
        order = "coalesce(i.origin, i.seq), i.seq" if rounds > 1 else "i.seq"  # one round: no sort
        return self.db.execute(
            "SELECT coalesce(i.origin, i.seq), i.seq, i.round, i.batch_id, i.custom_id, i.src, i.off, i.len, i.json,"
            " r.kind, r.off, r.status, r.rec_off, r.rec_len, r.pt, r.ct, r.tt, r.err_type, r.err_status"
            " FROM inputs i LEFT JOIN records r ON r.batch_id = i.batch_id AND r.custom_id = i.custom_id"
            f" ORDER BY {order}"
        )
