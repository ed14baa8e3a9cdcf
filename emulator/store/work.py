"""The worker's side of the Store: start due batches, pick pending requests, save their outcomes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .base import Database
from .schema import new_id

ACTIVE_SQL = (
    "SELECT id, expires_at FROM batches WHERE in_progress_at IS NOT NULL AND cancelling_at IS NULL"
    " AND deleted=0 AND completed_at IS NULL AND failed_at IS NULL AND expired=0 ORDER BY expires_at, seq"
)
PENDING_SQL = (
    "SELECT r.rid, r.id, r.custom_id, r.url, r.body, r.attempts, r.batch_id, ? AS expires_at"
    " FROM requests r WHERE r.batch_id=? AND r.state='pending' AND r.next_at<=? ORDER BY r.rid LIMIT ?"
)
SAVE_SQL = (
    "UPDATE requests SET state=?, attempts=?, next_at=?, done_seq=?, done_at=?, line=?,"
    " prompt_tokens=?, completion_tokens=?, duration_ms=? WHERE rid=?"
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
        """Copy the input lines into request rows and mark the batch started (validating -> in_progress)."""
        with self.db:
            self.db.execute("BEGIN")
            # Streamed from a cursor: a 200 MB input file is never held in memory.
            source = self.db.execute(
                "SELECT line_no, custom_id, model, url, body FROM input_lines WHERE file_id=?",
                (b["input_file_id"],),
            )
            self.db.executemany(
                "INSERT INTO requests (id, batch_id, line_no, custom_id, model, url, body, state)"
                " VALUES (?,?,?,?,?,?,?,'pending')",
                ((new_id(), b["id"], r[0], r[1], r[2], r[3], r[4]) for r in source),
            )
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

    def mark_in_progress(self, rids: Sequence[int]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE requests SET state='in_progress' WHERE rid=?", [(r,) for r in rids])

    def save_outcomes(self, rows: Sequence[tuple]) -> None:
        """Each row: (state, attempts, next_at, done_seq, done_at, line, prompt_tokens, completion_tokens,
        duration_ms, rid)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(SAVE_SQL, rows)
