"""Background processing: populate batches after the start delay, run pending requests at the configured
rate through the built-in model or the upstream, retry transient failures, stamp finished batches."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time

from .config import Config
from .model import Outcome, Upstream, builtin, error_json
from .responses import compact
from .store import Store

log = logging.getLogger("emulator.worker")

TICK_S = 0.02
CHUNK = 2000  # rows per transaction
RETRIABLE = {408, 404, 429, 499}
MAX_BACKOFF_S = 10.0


def is_retriable(o: Outcome) -> bool:
    return o.failure is not None or o.status in RETRIABLE or o.status >= 500


def output_line(req_id: str, custom_id: str, o: Outcome) -> str:
    """7.1: keys id, custom_id, response{status_code, request_id:null, body}, error:null; body keys sorted."""
    if o.obj is not None:
        body = o.obj
    else:
        try:
            body = json.loads(o.body)
        except ValueError:
            body = o.body
    return (
        f'{{"id":"batch_req_{req_id}","custom_id":{compact(custom_id)},"response":{{"status_code":'
        f'{o.status or 200},"request_id":null,"body":{compact(body, sort_keys=True)}}},"error":null}}'
    )


def failure_reason(o: Outcome) -> str:
    """7.2: the FailureReason serialised as a JSON string."""
    if o.failure:
        return compact({"type": o.failure, "details": {"error": o.body}})
    kind = "RetriableHttpStatus" if is_retriable(o) else "NonRetriableHttpStatus"
    return compact({"type": kind, "details": {"status": o.status, "body": o.text()}})


def error_line(req_id: str, custom_id: str, message: str) -> str:
    return compact(
        {
            "id": f"batch_req_{req_id}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": None, "message": message},
        }
    )


def openai_failure_line(req_id: str, custom_id: str, o: Outcome) -> str:
    """OpenAI flavour: a failed call is a response line with status_code >= 400."""
    if o.failure:
        return compact(
            {
                "id": f"batch_req_{req_id}",
                "custom_id": custom_id,
                "response": None,
                "error": {"code": o.failure.lower(), "message": o.body},
            }
        )
    try:
        body = json.loads(o.text())
    except ValueError:
        body = o.text()
    return compact(
        {
            "id": f"batch_req_{req_id}",
            "custom_id": custom_id,
            "response": {"status_code": o.status, "request_id": f"req_{req_id[:8]}", "body": body},
            "error": None,
        }
    )


class Worker:
    """Runs as one asyncio task for the life of the server."""

    def __init__(self, store: Store, cfg: Config, upstream: Upstream | None) -> None:
        self.store = store
        self.cfg = cfg
        self.upstream = upstream
        self.rng = random.Random(cfg.seed)
        self.fates: dict[int, int] = {}  # rid -> forced failure status (from --fail-rate)
        self.inflight: set[asyncio.Task] = set()
        self.budget = 0.0
        self.last = time.monotonic()
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep processing whatever one tick hit
                log.exception("worker tick failed")
            try:
                await asyncio.wait_for(self.wake.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def tick(self) -> None:
        st, now = self.store, self.store.clock.now()
        for b in st.q(
            "SELECT * FROM batches WHERE in_progress_at IS NULL AND cancelling_at IS NULL AND deleted=0"
            " AND start_after <= ? ORDER BY seq",
            now,
        ):
            st.populate(b)
        if self.cfg.flavor == "openai":
            for b in st.q(
                "SELECT id FROM batches WHERE in_progress_at IS NOT NULL AND cancelling_at IS NULL AND expired=0"
                " AND completed_at IS NULL AND failed_at IS NULL AND expires_at < ?",
                now,
            ):
                with st.db:
                    st.db.execute("BEGIN")
                    st.write_off(
                        b["id"], "batch_expired", "This request could not be executed before the deadline."
                    )
                    st.db.execute("UPDATE batches SET expired=1, finished_at=? WHERE id=?", (now, b["id"]))
        mono = time.monotonic()
        elapsed, self.last = mono - self.last, mono
        if self.cfg.paused:
            self.budget = 0.0
            return
        if self.cfg.rate <= 0:
            self.budget = float(CHUNK)
        else:
            self.budget = min(self.budget + self.cfg.rate * elapsed, max(self.cfg.rate * 0.1, 1.0))
        want = min(int(self.budget), CHUNK)
        if self.upstream is not None:
            want = min(want, self.cfg.upstream_concurrency - len(self.inflight))
        if want <= 0:
            return
        active = st.q(
            "SELECT id, expires_at FROM batches WHERE in_progress_at IS NOT NULL AND cancelling_at IS NULL"
            " AND deleted=0 AND completed_at IS NULL AND failed_at IS NULL AND expired=0 ORDER BY expires_at, seq"
        )
        rows: list[sqlite3.Row] = []
        for b in active:
            if len(rows) >= want:
                break
            rows += st.q(
                "SELECT r.rid, r.id, r.custom_id, r.url, r.body, r.attempts, r.batch_id, ? AS expires_at"
                " FROM requests r WHERE r.batch_id=? AND r.state='pending' AND r.next_at<=? ORDER BY r.rid LIMIT ?",
                b["expires_at"],
                b["id"],
                now,
                want - len(rows),
            )
        touched = {b["id"] for b in active}
        if rows:
            self.budget -= len(rows)
            if self.upstream is None:
                self.settle([(r, self.call_builtin(r)) for r in rows])
            else:
                with st.db:
                    st.db.execute("BEGIN")
                    st.db.executemany(
                        "UPDATE requests SET state='in_progress' WHERE rid=?", [(r["rid"],) for r in rows]
                    )
                for r in rows:
                    task = asyncio.ensure_future(self.call_upstream(r))
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
        for bid in touched:
            b = st.q1("SELECT * FROM batches WHERE id=?", bid)
            if b is not None:
                st.finish_if_done(b)

    def forced_status(self, r: sqlite3.Row) -> int | None:
        if r["attempts"] == 0 and self.cfg.fail_rate > 0 and self.rng.random() < self.cfg.fail_rate:
            self.fates[r["rid"]] = self.rng.choice((400, 422, 500))
        return self.fates.get(r["rid"])

    def call_builtin(self, r: sqlite3.Row) -> Outcome:
        forced = self.forced_status(r)
        if forced is not None:
            return Outcome(forced, error_json(f"Emulated failure (status {forced})", "emulated_error"))
        try:
            body = json.loads(r["body"])
        except ValueError:
            return Outcome(400, error_json("Invalid JSON body"))
        return builtin(r["url"], body, r["attempts"], self.store.clock.now_i())

    async def call_upstream(self, r: sqlite3.Row) -> None:
        assert self.upstream is not None
        forced = self.forced_status(r)
        start = time.monotonic()
        if forced is not None:
            o = Outcome(forced, error_json(f"Emulated failure (status {forced})", "emulated_error"))
        else:
            try:
                o = await self.upstream.call(r["url"], r["body"])
            except Exception as exc:  # any transport surprise is a network error, never a stuck row
                o = Outcome(0, failure="NetworkError", body=f"{type(exc).__name__}: {exc}")
        try:
            self.settle([(r, o)], (time.monotonic() - start) * 1000)
        except sqlite3.Error:
            log.exception("could not store an upstream result")
        self.wake.set()

    def settle(self, results: list[tuple[sqlite3.Row, Outcome]], duration_ms: float = 1.0) -> None:
        """Store outcomes: 2xx -> output line; retriable -> pending again with backoff (bounded, never past
        the deadline); anything else -> error line."""
        st, now = self.store, self.store.clock.now()
        openai = self.cfg.flavor == "openai"
        updates = []
        for r, o in results:
            rid, attempts = r["rid"], r["attempts"] + 1
            if o.failure is None and 200 <= o.status < 300:
                self.fates.pop(rid, None)
                line = output_line(r["id"], r["custom_id"], o)
                updates.append(("completed", attempts, 0, st.next_done_seq(), now, line, o, rid))
                continue
            if is_retriable(o) and attempts <= self.cfg.max_retries:
                delay = min(self.cfg.retry_base * (2 ** (attempts - 1)), MAX_BACKOFF_S)
                if now + delay <= r["expires_at"]:
                    updates.append(("pending", attempts, now + delay, None, None, None, None, rid))
                    continue
            self.fates.pop(rid, None)
            if openai:
                line = openai_failure_line(r["id"], r["custom_id"], o)
            else:
                line = error_line(r["id"], r["custom_id"], failure_reason(o))
            updates.append(("failed", attempts, 0, st.next_done_seq(), now, line, None, rid))
        with st.db:
            st.db.execute("BEGIN")
            st.db.executemany(
                "UPDATE requests SET state=?, attempts=?, next_at=?, done_seq=?, done_at=?, line=?,"
                " prompt_tokens=?, completion_tokens=?, duration_ms=? WHERE rid=?",
                [
                    (
                        s,
                        a,
                        n,
                        seq,
                        at,
                        line,
                        o.prompt_tokens if o else 0,
                        o.completion_tokens if o else 0,
                        duration_ms if line else None,
                        rid,
                    )
                    for s, a, n, seq, at, line, o, rid in updates
                ],
            )
