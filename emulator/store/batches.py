"""Batches and their request rows: the status rules (references/api_reference.md section 6), the batch
object (section 4), create, cancel, retry, delete, list, results and analytics queries."""

from __future__ import annotations

import json
import sqlite3

from ..config import WINDOWS
from ..prepared import LINE_SQL
from ..responses import compact
from .base import Database, Lines
from .schema import TERMINAL, new_id, owner_email

# Stored but never shown: the server's own keys and the sync/source extension keys.
INTERNAL_METADATA = {
    "dw_source_id",
    "dw_source_name",
    "dw_sync_id",
    "dw_external_key",
    "created_by",
    "dw_user_agent",
}
RESULTS_SQL = (  # one parameter first: the input file's id (LINE_SQL)
    "SELECT json_object('id', id, 'custom_id', custom_id, 'model', model, 'input_body', json(body),"
    f" 'response_body', CASE WHEN state='completed' THEN json_extract({LINE_SQL}, '$.response.body') END,"
    " 'error', CASE WHEN state='failed' THEN json_extract(line, '$.error.message') END,"
    " 'status', state) FROM requests"
)
RESET_SQL = (
    "UPDATE requests SET state='pending', attempts=0, next_at=0, done_seq=NULL, done_at=NULL, line=NULL"
    " WHERE batch_id=? AND state='failed'"
)


class BatchQueries(Database):
    def batch_row(self, bid: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM batches WHERE id=?", bid)

    def get_batch(self, owner: str, batch_id: str) -> sqlite3.Row | None:
        return self.q1("SELECT * FROM batches WHERE id=? AND owner=? AND deleted=0", batch_id, owner)

    def counts(self, batch_id: str) -> dict[str, int]:
        """Requests per state (pending, in_progress, completed, failed)."""
        cached = self.count_cache.get(batch_id)
        if cached is not None:
            return dict(cached)
        out = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0}
        for state, n in self.db.execute(
            "SELECT state, count(*) FROM requests WHERE batch_id=? GROUP BY state", (batch_id,)
        ):
            out[state] = n
        self.count_cache[batch_id] = dict(out)
        return out

    def finish_if_done(self, b: sqlite3.Row, counts: dict[str, int] | None = None) -> sqlite3.Row:
        """Lazily stamp terminal timestamps once every row is terminal (section 6)."""
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
        return self.batch_row(b["id"])  # type: ignore[return-value]

    def status(self, b: sqlite3.Row, c: dict[str, int]) -> str:
        """The status as the server computes it on every read (section 6): the first matching rule wins."""
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
        """Section 7's "finished": completed + failed + cancelled == total (cancelled = unrun rows once
        cancelled)."""
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
        meta = {k: v for k, v in json.loads(b["metadata"]).items() if k not in INTERNAL_METADATA}
        if not openai:
            meta["created_by_email"] = owner_email(b["owner"])
            if full:
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

    def write_off(self, batch_id: str, code: str, message: str) -> None:
        """OpenAI flavour: unrun requests of a cancelled/expired batch become error lines with `code`."""
        self.changed(batch_id)
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

    def cancel_if_running(self, b: sqlite3.Row) -> None:
        if self.status(self.finish_if_done(b), self.counts(b["id"])) not in TERMINAL:
            self.cancel(b)

    def delete_batch(self, b: sqlite3.Row) -> None:
        self.cancel_if_running(b)
        self.db.execute("UPDATE batches SET deleted=1 WHERE id=?", (b["id"],))

    def retry_failed(self, bid: str, request_ids: list[str] | None = None) -> None:
        """Failed requests (all, or those listed) back to pending; the batch runs again."""
        self.changed(bid)
        with self.db:
            self.db.execute("BEGIN")
            if request_ids is None:
                self.db.execute(RESET_SQL, (bid,))
            else:
                self.db.executemany(RESET_SQL + " AND id=?", [(bid, i) for i in request_ids])
            self.db.execute(
                "UPDATE batches SET finalizing_at=NULL, completed_at=NULL, failed_at=NULL, cancelling_at=NULL,"
                " cancelled_at=NULL, finished_at=NULL WHERE id=?",
                (bid,),
            )

    def list_batches(
        self,
        owner: str,
        search: str | None,
        created_after: int | None,
        created_before: int | None,
        windows: list[str],
    ) -> list[sqlite3.Row]:
        """The owner's batches matching the stored-field filters, newest first."""
        where, args = ["owner=?", "deleted=0"], [owner]
        if search:  # a LIKE over the stored metadata text: % and _ act as wildcards there
            where.append(
                "(metadata LIKE '%' || ? || '%' OR instr(lower(input_filename), lower(?)) > 0"
                " OR instr(lower(id), lower(?)) > 0)"
            )
            args += [search] * 3
        if created_after is not None:  # both bounds inclusive
            where.append("created_at >= ?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at <= ?")
            args.append(created_before)
        if windows:
            where.append(f"completion_window IN ({','.join('?' * len(windows))})")
            args += windows
        # The server sorts by its microsecond created_at (then id); whole seconds here, so creation order
        # (seq) breaks ties: two batches made in the same second still list newest first.
        return self.q(
            f"SELECT * FROM batches WHERE {' AND '.join(where)} ORDER BY created_at DESC, seq DESC", *args
        )

    def results(self, bid: str, search: str | None, state: str | None) -> tuple[Lines, int]:
        """`/results` lines in input order, and how many there are."""
        where, args = "batch_id=?", [bid]
        if search:
            where += " AND instr(lower(custom_id), lower(?)) > 0"
            args.append(search)
        if state:
            where += " AND state=?"
            args.append(state)
        row = self.q1(f"SELECT count(*) FROM requests WHERE {where}", *args)
        lines = Lines(self, f"{RESULTS_SQL} WHERE {where} ORDER BY line_no", [self.input_file_of(bid), *args])
        return lines, int(row[0]) if row else 0

    def usage_by_model(self, bid: str) -> list[sqlite3.Row]:
        """Per model of a batch's completed requests: prompt and completion tokens."""
        return self.q(
            "SELECT model, coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) FROM requests"
            " WHERE batch_id=? AND state='completed' GROUP BY model",
            bid,
        )

    def avg_duration_ms(self, bid: str) -> float | None:
        row = self.q1("SELECT avg(duration_ms) FROM requests WHERE batch_id=? AND state='completed'", bid)
        return row[0] if row else None
