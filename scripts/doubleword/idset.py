"""A set of custom_ids in flat memory, for the uniqueness check of any number of requests.

The last 10,000 ids are a plain dict; older ones move in chunks to a private temporary SQLite table (on
disk, deleted on close, with SQLite's small page cache), and a fixed 4 MiB bitmap of their hashes answers
"never seen" for almost every new id without touching disk; only a bitmap hit (a repeat, or a 1-in-30
false hit at a million ids) looks the id up there. So memory is the same at 20,000 ids as at 1,000,000.
"""

from __future__ import annotations

import sqlite3
from typing import Any

_BITS = 1 << 25
_MASK = _BITS - 1
_FLUSH = 10_000


class IdSet:
    """custom_id -> the number of the request that used it first (and, with ``digests``, a digest of that
    request line, to tell an exact repeat from a clash)."""

    def __init__(self, *, digests: bool = False) -> None:
        self._bitmap = bytearray(_BITS >> 3)
        self._digests = digests
        self._recent: dict[str, Any] = {}  # id -> number, or (number, digest)
        self._db: sqlite3.Connection | None = None

    def get(self, custom_id: str) -> tuple[int, bytes] | None:
        """(number, digest or b"") recorded for ``custom_id``, or None if it was never added."""
        found = self._recent.get(custom_id)  # the ids added since the last move to SQLite
        if found is None and self._db is not None:
            bit = hash(custom_id) & _MASK
            if not self._bitmap[bit >> 3] & (1 << (bit & 7)):
                return None
            row = self._db.execute("SELECT * FROM ids WHERE id = ?", (custom_id,)).fetchone()
            found = (row[1], row[2]) if row and self._digests else (row[1] if row else None)
        if found is None:
            return None
        return (int(found[0]), bytes(found[1])) if isinstance(found, tuple) else (int(found), b"")

    def add(self, custom_id: str, number: int, digest: bytes = b"") -> None:
        """Record a new id (the caller has checked with :meth:`get` that it is new)."""
        self._recent[custom_id] = (number, digest) if self._digests else number
        if len(self._recent) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("")  # "": a temporary on-disk database that SQLite removes itself
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            digest = ", digest BLOB" if self._digests else ""
            self._db.execute(f"CREATE TABLE ids (id TEXT PRIMARY KEY, number INTEGER{digest}) WITHOUT ROWID")
        bitmap = self._bitmap
        for custom_id in self._recent:
            bit = hash(custom_id) & _MASK
            bitmap[bit >> 3] |= 1 << (bit & 7)
        with self._db:
            if self._digests:
                rows = ((k, n, d) for k, (n, d) in self._recent.items())
                self._db.executemany("INSERT INTO ids VALUES (?, ?, ?)", rows)
            else:
                self._db.executemany("INSERT INTO ids VALUES (?, ?)", self._recent.items())
        self._recent.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._recent.clear()
