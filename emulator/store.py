"""SQLite state: files, input lines, batches and their request rows, plus the status rules of 5.1."""

from __future__ import annotations

import json
import sqlite3
import uuid

from .config import WINDOWS, Clock
from .responses import compact

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,              -- input | output | error
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    expires_at INTEGER,
    batch_id TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS input_lines (
    file_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    model TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (file_id, line_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    input_filename TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    finished_at REAL,
    start_after REAL NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,  -- OpenAI flavour only: deadline passed, leftovers written off
    output_file_id TEXT,
    error_file_id TEXT,
    metadata TEXT NOT NULL,
    total INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    model TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,             -- pending | in_progress | completed | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    done_seq INTEGER,
    done_at REAL,
    line TEXT,                       -- the output or error line, as served
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    duration_ms REAL
);
CREATE INDEX IF NOT EXISTS requests_by_state ON requests (batch_id, state, done_seq);
CREATE INDEX IF NOT EXISTS requests_pending ON requests (batch_id, state, next_at);
CREATE INDEX IF NOT EXISTS requests_by_line ON requests (batch_id, line_no);
CREATE UNIQUE INDEX IF NOT EXISTS requests_by_id ON requests (id);
"""

TERMINAL = ("completed", "failed", "cancelled", "expired")


def new_id() -> str:
    return str(uuid.uuid4())


class Store:
    """All persistent state. Synchronous sqlite3 on the event loop thread: short statements only."""

    def __init__(self, path: str, clock: Clock, flavor: str = "doubleword") -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.clock = clock
        self.flavor = flavor
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

    # -- helpers ---------------------------------------------------------------------------------
    def q(self, sql: str, *args: object) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def q1(self, sql: str, *args: object) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def save_clock(self) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock_offset', ?)", (str(self.clock.offset),)
        )

    def next_done_seq(self) -> int:
        self.done_seq += 1
        return self.done_seq

    # -- files -----------------------------------------------------------------------------------
    def get_file(self, owner: str, file_id: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM files WHERE id=? AND owner=? AND deleted=0", file_id, owner)

    def file_object(self, f: sqlite3.Row, full: bool = True) -> dict:
        """The file object; GET and list add the creator/context fields, the upload response does not."""
        nbytes = f["bytes"]
        if f["kind"] != "input":
            col = "completed" if f["kind"] == "output" else "failed"
            row = self.q1(
                "SELECT count(*), coalesce(sum(length(line)), 0) FROM requests WHERE batch_id=? AND state=?",
                f["batch_id"],
                col,
            )
            nbytes = int(row[1]) + 50 * int(row[0]) if row[0] else 0
        obj: dict = {
            "id": self.ext_id("file", f["id"]),
            "object": "file",
            "bytes": nbytes,
            "created_at": f["created_at"],
            "filename": f["filename"],
            "purpose": f["purpose"],
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

    def ext_id(self, kind: str, raw: str) -> str:
        """Ids as clients see them: bare UUIDs, or prefixed in the OpenAI flavour."""
        if self.flavor != "openai" or not raw:
            return raw
        return ("file-" if kind == "file" else "batch_") + raw

    # -- batches ---------------------------------------------------------------------------------
    def get_batch(self, owner: str, batch_id: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM batches WHERE id=? AND owner=? AND deleted=0", batch_id, owner)

    def counts(self, batch_id: str) -> dict[str, int]:
        out = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0}
        for state, n in self.db.execute(
            "SELECT state, count(*) FROM requests WHERE batch_id=? GROUP BY state", (batch_id,)
        ):
            out[state] = n
        return out

    def finish_if_done(self, b: sqlite3.Row, counts: dict[str, int] | None = None) -> sqlite3.Row:
        """Lazily stamp terminal timestamps once every row is terminal (5.2)."""
        if b["in_progress_at"] is None or b["cancelling_at"] is not None or b["expired"]:
            return b
        if b["completed_at"] is not None or b["failed_at"] is not None:
            return b
        c = counts or self.counts(b["id"])
        if c["pending"] or c["in_progress"]:
            return b
        now = self.clock.now_i()
        if c["completed"] > 0:
            self.db.execute(
                "UPDATE batches SET finalizing_at=?, completed_at=?, finished_at=? WHERE id=?",
                (now, now, self.clock.now(), b["id"]),
            )
        else:
            self.db.execute(
                "UPDATE batches SET failed_at=?, finished_at=? WHERE id=?", (now, self.clock.now(), b["id"])
            )
        return self.q1("SELECT * FROM batches WHERE id=?", b["id"])  # type: ignore[return-value]

    def status(self, b: sqlite3.Row, c: dict[str, int]) -> str:
        """Section 5.1, first matching rule wins."""
        started = b["in_progress_at"] is not None
        if b["cancelling_at"] is not None:
            return "cancelled" if started else "cancelling"
        if b["expired"]:
            return "expired"
        if b["failed_at"] is not None and not started:
            return "failed"
        if not started:
            return "validating"
        finished = not (c["pending"] or c["in_progress"])
        if finished and c["failed"] == b["total"]:
            return "failed"
        if finished:
            if b["completed_at"] is not None:
                return "completed"
            if b["failed_at"] is not None:
                return "failed"
            return "finalizing"
        return "in_progress"

    def is_finished(self, b: sqlite3.Row, c: dict[str, int]) -> bool:
        """6.2's "finished": completed + failed + cancelled == total (cancelled = unrun rows once cancelled)."""
        if b["in_progress_at"] is None:
            return False
        if b["cancelling_at"] is not None:
            return True
        return not (c["pending"] or c["in_progress"])

    def batch_object(self, b: sqlite3.Row, full: bool = True) -> dict:
        """The batch object in the server's key order, absent fields omitted (never null)."""
        b = self.finish_if_done(b)
        c = self.counts(b["id"])
        status = self.status(b, c)
        now = self.clock.now()
        openai = self.flavor == "openai"
        obj: dict = {
            "id": self.ext_id("batch", b["id"]),
            "object": "batch",
            "endpoint": b["endpoint"],
            "input_file_id": self.ext_id("file", b["input_file_id"]),
            "completion_window": b["completion_window"],
            "status": status,
        }
        for key in ("output_file_id", "error_file_id"):
            fid = b[key]
            if openai:
                kind = "completed" if key == "output_file_id" else "failed"
                obj[key] = self.ext_id("file", fid) if fid and c[kind] else None
            elif fid:
                obj[key] = fid
        obj["created_at"] = b["created_at"]
        for key in ("in_progress_at", "expires_at"):
            if b[key] is not None:
                obj[key] = b[key]
        if status in ("finalizing", "completed") and b["finalizing_at"] is not None:
            obj["finalizing_at"] = b["finalizing_at"]
        for key in ("completed_at", "failed_at"):
            if b[key] is not None:
                obj[key] = b[key]
        if now > b["expires_at"]:
            obj["expired_at"] = b["expires_at"]
        for key in ("cancelling_at", "cancelled_at"):
            if b[key] is not None:
                obj[key] = b[key]
        obj["request_counts"] = {"total": b["total"], "completed": c["completed"], "failed": c["failed"]}
        meta = json.loads(b["metadata"])
        if full and not openai:
            meta["context_name"] = "Personal"
            meta["context_type"] = "personal"
        if meta:
            obj["metadata"] = meta
        if not openai:
            obj["dwext"] = {"source": "api"}
        else:
            for key in ("errors", "in_progress_at", "finalizing_at", "completed_at", "failed_at"):
                obj.setdefault(key, None)
            for key in ("expired_at", "cancelling_at", "cancelled_at", "metadata", "output_file_id"):
                obj.setdefault(key, None)
        return obj

    def create_batch(
        self,
        owner: str,
        f: sqlite3.Row,
        endpoint: str,
        window: str,
        metadata: dict[str, str],
        start_delay: float,
    ) -> sqlite3.Row:
        now = self.clock.now_i()
        bid, out_id, err_id = new_id(), new_id(), new_id()
        with self.db:
            self.db.execute("BEGIN")
            for fid, kind, purpose in ((out_id, "output", "batch_output"), (err_id, "error", "batch_error")):
                self.db.execute(
                    "INSERT INTO files (id, owner, kind, bytes, created_at, filename, purpose, batch_id)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (fid, owner, kind, 0, now, f"batch-{bid}-{kind}.jsonl", purpose, bid),
                )
            self.db.execute(
                "INSERT INTO batches (id, owner, endpoint, input_file_id, input_filename, completion_window,"
                " created_at, expires_at, output_file_id, error_file_id, metadata, total, start_after)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    bid,
                    owner,
                    endpoint,
                    f["id"],
                    f["filename"],
                    window,
                    now,
                    now + WINDOWS[window],
                    out_id,
                    err_id,
                    json.dumps(metadata, ensure_ascii=False),
                    f["lines"],
                    self.clock.now() + start_delay,
                ),
            )
        return self.q1("SELECT * FROM batches WHERE id=?", bid)  # type: ignore[return-value]

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

    def write_off(self, batch_id: str, code: str, message: str) -> None:
        """OpenAI flavour: unrun requests of a cancelled/expired batch become error lines with `code`."""
        rows = self.q(
            "SELECT rid, id, custom_id FROM requests WHERE batch_id=? AND state='pending'", batch_id
        )
        now = self.clock.now()
        self.db.executemany(
            "UPDATE requests SET state='failed', done_seq=?, done_at=?, line=? WHERE rid=?",
            [
                (
                    self.next_done_seq(),
                    now,
                    compact(
                        {
                            "id": f"batch_req_{r['id']}",
                            "custom_id": r["custom_id"],
                            "response": None,
                            "error": {"code": code, "message": message},
                        }
                    ),
                    r["rid"],
                )
                for r in rows
            ],
        )

    def cancel(self, b: sqlite3.Row) -> None:
        if self.flavor == "openai" and b["cancelling_at"] is None:
            self.write_off(b["id"], "batch_cancelled", "This request was cancelled before it was processed.")
        if b["cancelling_at"] is None:
            now = self.clock.now_i()
            self.db.execute(
                "UPDATE batches SET cancelling_at=?, cancelled_at=?, finished_at=coalesce(finished_at, ?)"
                " WHERE id=?",
                (now, now, self.clock.now(), b["id"]),
            )


def owner_email(owner: str) -> str:
    return f"user-{owner[:8]}@example.com"
