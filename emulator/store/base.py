"""The connection and query helpers every part of the Store shares."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..config import Clock
from .schema import SCHEMA


class Database:
    """One sqlite3 connection used on the event loop thread: short statements only."""

    def __init__(self, path: str, clock: Clock, flavor: str = "doubleword", durable: bool = True) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.clock = clock
        self.flavor = flavor
        if not durable:
            # A scratch file removed on exit (one connection, nobody reads it after a crash): commits write
            # each page once, with no fsync. A --db file keeps WAL, so a killed emulator carries on.
            self.db.execute("PRAGMA journal_mode=MEMORY")
            self.db.execute("PRAGMA synchronous=OFF")
        else:
            if path != ":memory:":
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='clock_offset'").fetchone()
        if row:
            clock.offset = float(row[0])
        # In-flight work of a previous process resumes: back to pending.
        self.db.execute("UPDATE requests SET state='pending', next_at=0 WHERE state='in_progress'")
        row = self.db.execute("SELECT max(done_seq) FROM requests").fetchone()
        self.done_seq = int(row[0] or 0)
        self.seq_block: list[int] = []  # sequence numbers for the requests finishing now (in any order)
        # Request counts per batch, kept until a change to that batch's rows (a poll of a 50,000-request
        # batch would otherwise count 50,000 index entries, twice per batch object).
        self.count_cache: dict[str, dict[str, int]] = {}

    def changed(self, *batch_ids: str) -> None:
        """The rows of these batches changed: their counts are computed again on the next read."""
        for bid in batch_ids:
            self.count_cache.pop(bid, None)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction around the block; inside another, part of that one. A rollback forgets every
        cached count (some may have followed writes that are now undone)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.rollback()
            self.count_cache.clear()
            raise
        self.db.commit()

    def moved(self, batch_of: Sequence[str], was: str, now_in: Sequence[str]) -> None:
        """Request i of batch `batch_of[i]` went from state `was` to `now_in[i]`: cached counts follow (a
        poll of a running 50,000-request batch then counts nothing), or are dropped when they cannot."""
        for bid, state in zip(batch_of, now_in, strict=True):
            cached = self.count_cache.get(bid)
            if cached is None:
                continue
            if cached.get(was, 0) <= 0 or state not in cached:
                self.count_cache.pop(bid, None)
                continue
            cached[was] -= 1
            cached[state] += 1

    def q(self, sql: str, *args: object) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def q1(self, sql: str, *args: object) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def close(self) -> None:
        self.db.close()

    def save_clock(self) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock_offset', ?)", (str(self.clock.offset),)
        )

    def next_done_seq(self) -> int:
        if self.seq_block:
            return self.seq_block.pop()
        self.done_seq += 1
        return self.done_seq

    @contextmanager
    def finishing_in_any_order(self, count: int, rng: random.Random) -> Iterator[None]:
        """The requests finished in the block (at most ``count``) take the next ``count`` sequence numbers
        in a random order: they ran at once, and which finished first is chance. Every request finished
        later numbers after them, so a line once served never moves (a reader's skip stays right)."""
        block = list(range(self.done_seq + 1, self.done_seq + count + 1))
        rng.shuffle(block)
        self.seq_block, self.done_seq = block, self.done_seq + count
        try:
            yield
        finally:
            self.seq_block = []

    def ext_id(self, kind: str, raw: str) -> str:
        """Ids as clients see them: bare UUIDs, or prefixed in the OpenAI flavour."""
        if self.flavor != "openai" or not raw:
            return raw
        return ("file-" if kind == "file" else "batch_") + raw


class Lines:
    """A query of ready-made NDJSON lines (one text column), read page by page."""

    def __init__(self, db: Database, sql: str, args: list) -> None:
        self.db = db
        self.sql = sql
        self.args = args

    def page(self, offset: int, n: int) -> list[str]:
        return [r[0] for r in self.db.q(self.sql + " LIMIT ? OFFSET ?", *self.args, n, offset)]
