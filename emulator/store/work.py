"""The worker's side of the Store: start due batches, pick pending requests, save their outcomes."""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import Sequence

from .base import Database, Order

ACTIVE_SQL = (
    "SELECT id, expires_at FROM batches WHERE in_progress_at IS NOT NULL AND cancelling_at IS NULL"
    " AND deleted=0 AND completed_at IS NULL AND failed_at IS NULL AND expired=0 ORDER BY expires_at, seq"
)
PENDING_SQL = (
    "SELECT r.rid, r.id, r.custom_id, r.url, r.body, r.attempts, r.batch_id, ? AS expires_at"
    " FROM requests r WHERE r.batch_id=? AND r.state='pending' AND r.next_at<=?"
    " ORDER BY r.done_seq, r.rid LIMIT ?"
)
# Request ids: a random version-4 UUID's first 80 bits per batch, then 48 bits counting up from a random
# start with the line number, made inside SQLite. As random-looking as a v4 UUID to any client, unique
# (within a batch by construction, across batches by the 74 random bits of the prefix), and, unlike one
# random UUID per row, the unique index on ids takes a batch's rows in order (populate ran 2.3x faster).
POPULATE_SQL = (
    "INSERT INTO requests (id, batch_id, line_no, custom_id, model, url, body, state, prepared, prompt_tokens,"
    " completion_tokens)"
    " SELECT ? || printf('%012x', (? + line_no) % 281474976710656), ?, line_no, custom_id, model, url, body,"
    " 'pending', prepared_head IS NOT NULL, coalesce(prepared_prompt_tokens, 0),"
    " coalesce(prepared_completion_tokens, 0) FROM input_lines WHERE file_id=? ORDER BY line_no"
)
DUE_SQL = (
    "SELECT rid FROM requests WHERE batch_id=? AND state='pending' AND next_at<=? ORDER BY done_seq, rid"
    " LIMIT ?"
)
# The prepared requests of a range of due rows, completed (their lines are read through LINE_SQL); the
# done_seq arguments are Order.sql_args.
COMPLETE_PREPARED_SQL = (
    "UPDATE requests SET state='completed', attempts=attempts+1, next_at=0, done_seq=?+((rid-?)*?+?)%?,"
    " done_at=?, duration_ms=1.0 WHERE rid BETWEEN ? AND ? AND state='pending' AND prepared=1"
)
UNPREPARED_SQL = (
    "SELECT rid, id, custom_id, url, body, attempts, batch_id, ? AS expires_at FROM requests"
    " WHERE rid BETWEEN ? AND ? AND state='pending' ORDER BY rid"
)
# The tokens of a request that did not complete are kept (only completed ones are counted, and a prepared
# request's were set when it was created).
SAVE_SQL = (
    "UPDATE requests SET state=?, attempts=?, next_at=?, done_seq=?, done_at=?, line=?,"
    " prompt_tokens=coalesce(?, prompt_tokens), completion_tokens=coalesce(?, completion_tokens),"
    " duration_ms=? WHERE rid=?"
)


class WorkQueries(Database):
    def due_batches(self, now: float) -> list[sqlite3.Row]:
        """Batches whose start delay is over and that have not started."""
        return self.q(
            "SELECT * FROM batches WHERE in_progress_at IS NULL AND cancelling_at IS NULL AND deleted=0"
            " AND start_after <= ? ORDER BY seq",
            now,
        )

    def populate(self, b: sqlite3.Row) -> None:
        """Copy the input lines into request rows and mark the batch started (validating -> in_progress).
        One INSERT ... SELECT inside SQLite (request ids made there too): no row passes through Python."""
        self.changed(b["id"])
        with self.db:
            self.db.execute("BEGIN")
            prefix, start = str(uuid.uuid4())[:24], secrets.randbits(48)
            self.db.execute(POPULATE_SQL, (prefix, start, b["id"], b["input_file_id"]))
            self.db.execute("UPDATE batches SET in_progress_at=? WHERE id=?", (self.clock.now_i(), b["id"]))

    def overdue_batches(self, now: float) -> list[sqlite3.Row]:
        """Running batches past their deadline (the OpenAI flavour expires them)."""
        return self.q(
            "SELECT id FROM batches WHERE in_progress_at IS NOT NULL AND cancelling_at IS NULL AND expired=0"
            " AND completed_at IS NULL AND failed_at IS NULL AND expires_at < ?",
            now,
        )

    def active_batches(self) -> list[sqlite3.Row]:
        """Running batches, the earliest deadline first."""
        return self.q(ACTIVE_SQL)

    def pending_requests(self, batch: sqlite3.Row, now: float, limit: int) -> list[sqlite3.Row]:
        """Up to `limit` requests of a batch that are due to run, in line order."""
        return self.q(PENDING_SQL, batch["expires_at"], batch["id"], now, limit)

    def has_unfinished(self, bid: str) -> bool:
        """Whether any request of the batch still waits or runs."""
        row = self.q1(
            "SELECT 1 FROM requests WHERE batch_id=? AND state IN ('pending', 'in_progress') LIMIT 1", bid
        )
        return row is not None

    def mark_in_progress(self, rids: Sequence[int], batch_of: Sequence[str]) -> None:
        """Pending requests (of the batches `batch_of`, one per rid) handed to the upstream."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE requests SET state='in_progress' WHERE rid=?", [(r,) for r in rids])
        self.moved(batch_of, "pending", ["in_progress"] * len(batch_of))

    def due_rids(self, batch: sqlite3.Row, now: float, limit: int) -> list[int]:
        """The rids of up to `limit` requests of a batch that are due to run, in line order."""
        return [r[0] for r in self.db.execute(DUE_SQL, (batch["id"], now, limit))]

    def complete_prepared(
        self, batch_id: str, lo: int, hi: int, order: Order, position: int, now: float
    ) -> int:
        """Complete the prepared requests among the due rows `lo` to `hi` (all due, the first at
        `position` in `order`); how many there were."""
        args = (*order.sql_args(lo - position), now, lo, hi)
        done = self.db.execute(COMPLETE_PREPARED_SQL, args).rowcount
        self.moved_n(batch_id, "pending", "completed", done)
        return done

    def unprepared(self, batch: sqlite3.Row, lo: int, hi: int) -> list[sqlite3.Row]:
        """The requests of rows `lo` to `hi` still pending (after `complete_prepared`: the unprepared)."""
        return self.q(UNPREPARED_SQL, batch["expires_at"], lo, hi)

    def save_outcomes(self, rows: Sequence[tuple], batch_of: Sequence[str], was: str = "pending") -> None:
        """Each row: (state, attempts, next_at, done_seq, done_at, line, prompt_tokens, completion_tokens,
        duration_ms, rid), for a request in state `was` of the batch `batch_of[i]` (tokens None: kept)."""
        with self.transaction():
            self.db.executemany(SAVE_SQL, rows)
        self.moved(batch_of, was, [row[0] for row in rows])
