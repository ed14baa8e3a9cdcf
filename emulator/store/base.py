"""The connection and query helpers every part of the Store shares."""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..config import Clock
from .schema import ADDED_COLUMNS, SCHEMA


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
        for table, column, kind in ADDED_COLUMNS:  # a --db file of an earlier version
            if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        row = self.db.execute("SELECT value FROM meta WHERE key='clock_offset'").fetchone()
        if row:
            clock.offset = float(row[0])
        # In-flight work of a previous process resumes: back to pending.
        self.db.execute("UPDATE requests SET state='pending', next_at=0 WHERE state='in_progress'")
        row = self.db.execute("SELECT max(done_seq) FROM requests").fetchone()
        self.done_seq = int(row[0] or 0)
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
        """Request i of batch `batch_of[i]` went from state `was` to `now_in[i]`."""
        for (bid, state), n in Counter(zip(batch_of, now_in, strict=True)).items():
            self.moved_n(bid, was, state, n)

    def moved_n(self, bid: str, was: str, state: str, n: int) -> None:
        """n requests of the batch went from state `was` to `state`: cached counts follow (a poll of a
        running 50,000-request batch then counts nothing), or are dropped when they cannot."""
        cached = self.count_cache.get(bid)
        if cached is None or n == 0:
            return
        if cached.get(was, 0) < n or state not in cached:
            self.count_cache.pop(bid, None)
            return
        cached[was] -= n
        cached[state] += n

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
        self.done_seq += 1
        return self.done_seq

    def finishing(self, count: int, rng: random.Random | None) -> Order:
        """The sequence numbers of `count` requests finishing at once: the next `count`, every request
        finished later numbering after them, so a line once served never moves (a reader's skip stays
        right). With `rng` they take them in a random order (which of requests run at once finishes
        first is chance), else in their order."""
        order = Order(self.done_seq + 1, count, rng)
        self.done_seq += count
        return order

    def ext_id(self, kind: str, raw: str) -> str:
        """Ids as clients see them: bare UUIDs, or prefixed in the OpenAI flavour."""
        if self.flavor != "openai" or not raw:
            return raw
        return ("file-" if kind == "file" else "batch_") + raw


class Order:
    """The done_seq of each of n requests finishing at once, by its position i among them (0 to n-1):
    base + (i * step + offset) % n, step prime to n, so the same sum can be made in SQL over a range of
    rows. In their order (step 1, offset 0), or with `rng` in another one drawn from it."""

    def __init__(self, base: int, n: int, rng: random.Random | None) -> None:
        self.base, self.n, self.step, self.offset = base, n, 1, 0
        few = n in (2, 3, 4, 6)  # only 1 and n-1 are prime to n; for any other n, neither is drawn
        while rng is not None and n > 1 and (self.step, self.offset) == (1, 0):
            step, offset = rng.randrange(1, n), rng.randrange(n)
            if math.gcd(step, n) == 1 and (few or 1 < step < n - 1):  # not a rotation or a reversal
                self.step, self.offset = step, offset

    def seq(self, i: int) -> int:
        return self.base + (i * self.step + self.offset) % self.n

    def sql_args(self, origin: int) -> tuple[int, int, int, int, int]:
        """The arguments of ``base + ((rid - origin) * step + offset) % n`` (the row at rid = origin
        being position 0)."""
        return self.base, origin, self.step, self.offset, self.n


class Lines:
    """A query of ready-made NDJSON lines (one text column), read page by page."""

    def __init__(self, db: Database, sql: str, args: list) -> None:
        self.db = db
        self.sql = sql
        self.args = args

    def page(self, offset: int, n: int) -> list[str]:
        return [r[0] for r in self.db.q(self.sql + " LIMIT ? OFFSET ?", *self.args, n, offset)]
