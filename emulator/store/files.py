"""Files and their input lines: insert an upload, look up, list, file objects, content queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ..prepared import LINE_SQL
from .base import Database, Lines
from .schema import owner_email

INSERT_BATCH = 5000
INSERT_BYTES = 2 * 1024 * 1024
INPUT_LINE_SQL = (
    "SELECT '{\"custom_id\":' || json_quote(custom_id) || ',\"method\":' || json_quote(method) ||"
    " ',\"url\":' || json_quote(url) || ',\"body\":' || body || '}' FROM input_lines"
)
INSERT_LINE_SQL = "INSERT INTO input_lines VALUES (?,?,?,?,?,?,?,?,?,?,?)"


class FileQueries(Database):
    def add_input_file(
        self,
        fid: str,
        owner: str,
        size: int,
        filename: str,
        purpose: str | None,
        expires_at: int,
        rows: Iterable[tuple],
        count: int,
    ) -> sqlite3.Row:
        """Store an uploaded file and its validated lines in one transaction (all-or-nothing)."""
        now = self.clock.now_i()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO files (id, owner, kind, bytes, created_at, filename, purpose, expires_at, lines)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (fid, owner, "input", size, now, filename, purpose, expires_at, count),
            )
            batch, held = [], 0
            for i, row in enumerate(rows):
                batch.append((fid, i, *row))
                held += sum(len(v) for v in row if isinstance(v, (str, bytes)))
                if len(batch) >= INSERT_BATCH or held >= INSERT_BYTES:  # large lines: bounded by bytes too
                    self.db.executemany(INSERT_LINE_SQL, batch)
                    batch, held = [], 0
            self.db.executemany(INSERT_LINE_SQL, batch)
        return self.file_row(fid)  # type: ignore[return-value]

    def file_row(self, fid: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM files WHERE id=?", fid)

    def get_file(self, owner: str, file_id: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM files WHERE id=? AND owner=? AND deleted=0", file_id, owner)

    def live_file(self, file_id: str) -> sqlite3.Row | None:
        """A file not deleted, whoever owns it (batch creation tells 404 from 403)."""
        return self.q1("SELECT * FROM files WHERE id=? AND deleted=0", file_id)

    def list_files(
        self, owner: str, purpose: str | None, search: str | None, after: str | None, asc: bool, limit: int
    ) -> list[sqlite3.Row]:
        """Up to `limit` files after the cursor, newest first unless `asc`."""
        where, args = ["owner=?", "deleted=0"], [owner]
        if purpose is not None:
            where.append("purpose=?")  # compared as stored: an upload without purpose has none
            args.append(purpose)
        if search:
            where.append("instr(lower(filename), lower(?)) > 0")
            args.append(search)
        if after:
            cur = self.q1("SELECT created_at, seq FROM files WHERE id=? AND owner=?", after, owner)
            if cur is not None:
                op = ">" if asc else "<"
                where.append(f"(created_at {op} ? OR (created_at = ? AND seq {op} ?))")
                args += [cur["created_at"], cur["created_at"], cur["seq"]]
        direction = "ASC" if asc else "DESC"
        # created_at is whole seconds here (microseconds on the server): creation order (seq) breaks ties.
        return self.q(
            f"SELECT * FROM files WHERE {' AND '.join(where)}"
            f" ORDER BY created_at {direction}, seq {direction} LIMIT ?",
            *args,
            limit,
        )

    def file_object(self, f: sqlite3.Row, full: bool = True) -> dict:
        """The file object; GET and list add the creator/context fields, the upload response does not."""
        nbytes = f["bytes"]
        if f["kind"] != "input":
            col = "completed" if f["kind"] == "output" else "failed"
            row = self.q1(
                f"SELECT count(*), coalesce(sum(length({LINE_SQL})), 0) FROM requests WHERE batch_id=?"
                " AND state=?",
                self.input_file_of(f["batch_id"]),
                f["batch_id"],
                col,
            )
            nbytes = int(row[1]) + 50 * int(row[0]) if row and row[0] else 0
        obj: dict = {
            "id": self.ext_id("file", f["id"]),
            "object": "file",
            "bytes": nbytes,
            "created_at": f["created_at"],
            "filename": f["filename"],
            "purpose": (f["purpose"] or "batch").lower(),  # shown lower case, whatever was stored
        }
        if f["expires_at"] is not None:
            obj["expires_at"] = f["expires_at"]
        if self.flavor == "openai":
            obj["status"] = "processed"
        elif full:
            obj["created_by_email"] = owner_email(f["owner"])
            obj["context_name"] = "Personal"
            obj["context_type"] = "personal"
        return obj

    def input_lines(self, fid: str, search: str | None) -> Lines:
        """The input file's lines as served: priority removed, body keys sorted, in line order."""
        where, args = "file_id=?", [fid]
        if search:
            where += " AND instr(lower(custom_id), lower(?)) > 0"
            args.append(search)
        return Lines(self, f"{INPUT_LINE_SQL} WHERE {where} ORDER BY line_no", args)

    def result_lines(self, batch_id: str, state: str, search: str | None, upto_seq: int | None) -> Lines:
        """Output (state completed) or error (failed) lines in completion order."""
        where, args = "batch_id=? AND state=?", [batch_id, state]
        if search:
            where += " AND instr(lower(custom_id), lower(?)) > 0"
            args.append(search)
        if upto_seq is not None:
            where += " AND done_seq <= ?"
            args.append(upto_seq)
        # done_seq is unique: the index gives the order, and a page's OFFSET skips rows unread (a sort
        # would put every line of the batch together for each page)
        sql = f"SELECT {LINE_SQL} FROM requests WHERE {where} ORDER BY done_seq"
        return Lines(self, sql, [self.input_file_of(batch_id), *args])

    def keep_prepared_lines(self, batch_id: str, file_id: str) -> None:
        """Store the lines of the batch's requests completed as prepared (before the batch forgets its
        input file, which LINE_SQL reads them from)."""
        self.db.execute(
            f"UPDATE requests SET line={LINE_SQL} WHERE batch_id=? AND state='completed' AND line IS NULL",
            (file_id, batch_id),
        )

    def input_file_of(self, batch_id: str) -> str | None:
        row = self.q1("SELECT input_file_id FROM batches WHERE id=?", batch_id)
        return row[0] if row else None

    def count_state(self, batch_id: str, state: str) -> int:
        row = self.q1("SELECT count(*) FROM requests WHERE batch_id=? AND state=?", batch_id, state)
        return int(row[0]) if row else 0

    def line_stats(self, fid: str) -> list[sqlite3.Row]:
        """Per model of an input file: request count and body bytes (the cost estimate's input)."""
        return self.q(
            "SELECT model, count(*) AS n, sum(length(body)) AS nbytes FROM input_lines WHERE file_id=?"
            " GROUP BY model ORDER BY model",
            fid,
        )

    def file_models(self, fid: str) -> list[str]:
        return [r[0] for r in self.q("SELECT DISTINCT model FROM input_lines WHERE file_id=?", fid)]

    def avg_completion_tokens(self, model: str) -> float | None:
        row = self.q1(
            "SELECT avg(completion_tokens) FROM requests WHERE model=? AND state='completed'", model
        )
        return row[0] if row else None
