"""All persistent state in SQLite: every SQL statement of the emulator lives in this package.

`Store` combines the parts: files and input lines (`files.py`), batches and their status rules
(`batches.py`), and the worker's queries (`work.py`) over one connection (`base.py`, tables in
`schema.py`)."""

from __future__ import annotations

import sqlite3

from .base import Lines
from .batches import BatchQueries
from .files import FileQueries
from .schema import TERMINAL, new_id, owner_email
from .work import WorkQueries

__all__ = ["Lines", "Store", "TERMINAL", "new_id", "owner_email"]


class Store(FileQueries, BatchQueries, WorkQueries):
    """Synchronous sqlite3 on the event loop thread: short statements only."""

    def delete_file(self, f: sqlite3.Row) -> None:
        """Mark a file deleted; an input file's running batches are cancelled and lose their input id."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE files SET deleted=1 WHERE id=?", (f["id"],))
            if f["kind"] == "input":
                for b in self.q("SELECT * FROM batches WHERE input_file_id=?", f["id"]):
                    self.cancel_if_running(b)
                    self.keep_prepared_lines(b["id"], f["id"])
                self.db.execute("UPDATE batches SET input_file_id='' WHERE input_file_id=?", (f["id"],))
            elif f["kind"] == "output":
                self.db.execute("UPDATE batches SET output_file_id=NULL WHERE id=?", (f["batch_id"],))
            else:
                self.db.execute("UPDATE batches SET error_file_id=NULL WHERE id=?", (f["batch_id"],))

    def expire(self, bid: str, now: float) -> None:
        """OpenAI flavour: a batch past its deadline writes off its unrun requests and turns `expired`."""
        with self.db:
            self.db.execute("BEGIN")
            self.write_off(bid, "batch_expired", "This request could not be executed before the deadline.")
            self.db.execute("UPDATE batches SET expired=1, finished_at=? WHERE id=?", (now, bid))
