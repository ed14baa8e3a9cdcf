"""Background processing (references/api_reference.md section 6): start batches after the start delay,
run pending requests at the configured rate through the built-in model or the upstream, retry transient
failures, write the output and error lines of section 5, stamp finished batches. Requests whose answer
was prepared at upload (emulator/prepared.py) are completed a range of rows at a time, in SQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator

from .config import Config
from .model import Model
from .outcome import Outcome, error_json
from .prepared import plain_output_line
from .responses import compact
from .store import Store
from .store.base import Order
from .upstream import Upstream

log = logging.getLogger("emulator.worker")

TICK_S = 0.02
CHUNK = 2000  # rows per tick
BURST_S = 0.1  # the rate's budget saved up at most (a tick after a pause runs this much of it)
RETRIABLE = {408, 404, 429, 499}
MAX_BACKOFF_S = 10.0


def is_retriable(o: Outcome) -> bool:
    return o.failure is not None or o.status in RETRIABLE or o.status >= 500


def refusal(seed: int | None, custom_id: str, body: str | bytes, rate: float) -> int | None:
    """400 or 422 for a ``rate`` fraction of requests, the same for the same (seed, custom_id, body)."""
    data = body.encode() if isinstance(body, str) else bytes(body)
    digest = hashlib.blake2b(f"{seed}\0{custom_id}\0".encode() + data, digest_size=8).digest()
    if int.from_bytes(digest[:6], "big") >= rate * 2**48:
        return None
    return 400 if digest[7] & 1 else 422


def output_line(req_id: str, custom_id: str, o: Outcome) -> str:
    """Section 5 of references/api_reference.md: keys id, custom_id, response{status_code, request_id:
    null, body}, error:null; body keys sorted."""
    if o.sorted_json:
        text = o.body
    else:
        if o.obj is not None:
            body = o.obj
        else:
            try:
                body = json.loads(o.body)
            except ValueError:
                body = o.body
        text = compact(body, sort_keys=True)
    return plain_output_line(req_id, custom_id, o.status or 200, text)


def failure_reason(o: Outcome) -> str:
    """The error line's message: the FailureReason serialised as a JSON string (references/api_reference.md
    section 5)."""
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

    def __init__(self, store: Store, cfg: Config, model: Model, upstream: Upstream | None) -> None:
        self.store = store
        self.cfg = cfg
        self.model = model
        self.upstream = upstream
        self.rng = random.Random(cfg.seed)
        self.order_rng = random.Random(cfg.seed)  # apart: the order never changes which requests fail
        self.fates: dict[int, int] = {}  # rid -> forced failure status (from --fail-rate)
        self.inflight: set[asyncio.Task] = set()
        self.budget = 0.0
        self.last = time.monotonic()
        self.wake = asyncio.Event()
        self.prepared_answers = 0  # requests completed as prepared (shown in /_emulator/stats)

    async def run(self) -> None:
        while True:
            busy = False
            try:
                busy = await self.tick() >= CHUNK
            except asyncio.CancelledError:
                raise
            except Exception:  # keep processing whatever one tick hit
                log.exception("worker tick failed")
            if busy:  # a full chunk: more is waiting and the rate allows it, so only let the server answer
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(self.wake.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def tick(self) -> int:
        """One round: start due batches, run what the rate allows. Returns how many requests ran."""
        st, now = self.store, self.store.clock.now()
        for b in st.due_batches(now):
            st.populate(b)
        if self.cfg.flavor == "openai":
            for b in st.overdue_batches(now):
                st.expire(b["id"], now)
        want = self.allowance()
        if want <= 0:
            return 0
        active = st.active_batches()
        ran = 0
        if self.upstream is None:
            with st.transaction():  # one commit per tick
                for b in active:
                    if ran >= want:
                        break
                    ran += self.run_builtin(b, now, want - ran)
        else:
            rows: list[sqlite3.Row] = []
            for b in active:
                if len(rows) >= want:
                    break
                rows += st.pending_requests(b, now, want - len(rows))
            ran = len(rows)
            if rows:  # no empty transaction every tick
                st.mark_in_progress([r["rid"] for r in rows], [r["batch_id"] for r in rows])
            for r in rows:
                task = asyncio.ensure_future(self.call_upstream(r))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
        self.budget -= ran
        for b in active:
            if not st.has_unfinished(b["id"]):  # an index probe: the full count only once it is done
                row = st.batch_row(b["id"])
                if row is not None:
                    st.finish_if_done(row)
        return ran

    def run_builtin(self, b: sqlite3.Row, now: float, limit: int) -> int:
        """Run up to `limit` due requests of the batch with the built-in model, at once: with --order
        completion they finish in a random order among themselves (a real server's output is in
        completion order), with --order input in input order. Prepared answers are completed a range of
        rows at a time in SQL, unless failures or the sloppy model are on; the rest are answered here."""
        st = self.store
        prepared = not (self.fates or self.cfg.fail_rate or self.cfg.sloppy_rate)
        if not prepared:
            rows = st.pending_requests(b, now, limit)
            order = st.finishing(len(rows), self.rng_for_order())
            self.settle([(r, self.call_builtin(r)) for r in rows], seq=by_position(rows, order))
            return len(rows)
        rids = st.due_rids(b, now, limit)
        order = st.finishing(len(rids), self.rng_for_order())
        for position, lo, hi in ranges(rids):
            done = st.complete_prepared(b["id"], lo, hi, order, position, now)
            self.prepared_answers += done
            if done < hi - lo + 1:
                rest = [(r, self.call_builtin(r)) for r in st.unprepared(b, lo, hi)]
                self.settle(rest, seq=lambda r, at=lo - position: order.seq(r["rid"] - at))
        return len(rids)

    def rng_for_order(self) -> random.Random | None:
        return self.order_rng if self.cfg.order == "completion" else None

    def allowance(self) -> int:
        """How many requests this tick may run: the rate's budget, bounded per tick and by concurrency."""
        mono = time.monotonic()
        elapsed, self.last = mono - self.last, mono
        if self.cfg.paused:
            self.budget = 0.0
            return 0
        if self.cfg.rate <= 0:
            self.budget = float(CHUNK)
        else:
            self.budget = min(self.budget + self.cfg.rate * elapsed, max(self.cfg.rate * BURST_S, 1.0))
        want = min(int(self.budget), CHUNK)
        if self.upstream is not None:
            want = min(want, self.cfg.upstream_concurrency - len(self.inflight))
        return want

    def forced_status(self, r: sqlite3.Row) -> int | None:
        """The failure --fail-rate gives this request, or None; a third each of 400, 422 and 500. As on a
        real server, a 400 or 422 is the request's own fault: the same request (custom_id and body) sent
        again, in this batch or a later one, is refused again. A 500 is drawn afresh for each batch row
        (resending may succeed), and sticks to the row through the server's own retries. Without --seed
        the refused requests are still fixed by the requests themselves (the 500s are random)."""
        rate, rid = self.cfg.fail_rate, r["rid"]  # 0 to 1 (config.fraction)
        if r["attempts"] == 0 and rate > 0:
            refused = refusal(self.cfg.seed, r["custom_id"], r["body"], 2 * rate / 3)
            if refused is not None:
                self.fates[rid] = refused
            elif self.rng.random() < (rate / 3) / (1 - 2 * rate / 3):  # a third of all rows, overall
                self.fates[rid] = 500
        return self.fates.get(rid)

    def call_builtin(self, r: sqlite3.Row) -> Outcome:
        forced = self.forced_status(r)
        if forced is not None:
            return Outcome(forced, error_json(f"Emulated failure (status {forced})", "emulated_error"))
        try:
            body = json.loads(r["body"])
        except ValueError:
            return Outcome(400, error_json("Invalid JSON body"))
        return self.model.answer(r["url"], body, r["attempts"], self.store.clock.now_i(), r["id"])

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
            self.settle([(r, o)], (time.monotonic() - start) * 1000, "in_progress")
        except sqlite3.Error:
            log.exception("could not store an upstream result")
        self.wake.set()

    def settle(
        self,
        results: list[tuple[sqlite3.Row, Outcome]],
        duration_ms: float = 1.0,
        was: str = "pending",
        seq: Callable[[sqlite3.Row], int] | None = None,
    ) -> None:
        """Store outcomes of requests that were in state `was`: 2xx -> output line; retriable -> pending
        again with backoff (bounded, never past the deadline); anything else -> error line. One pass, one
        executemany. A finished request's done_seq is `seq(row)`, else the next one."""
        st, now = self.store, self.store.clock.now()
        fates = self.fates
        next_seq = seq or (lambda _: st.next_done_seq())
        rows = []
        for r, o in results:
            rid, attempts = r["rid"], r["attempts"] + 1
            if o.failure is None and 200 <= o.status < 300:
                if fates:
                    fates.pop(rid, None)
                line = output_line(r["id"], r["custom_id"], o)
                rows.append(
                    (
                        "completed",
                        attempts,
                        0,
                        next_seq(r),
                        now,
                        line,
                        o.prompt_tokens,
                        o.completion_tokens,
                        duration_ms,
                        rid,
                    )
                )
                continue
            if is_retriable(o) and attempts <= self.cfg.max_retries:
                delay = min(self.cfg.retry_base * (2 ** (attempts - 1)), MAX_BACKOFF_S)
                if now + delay <= r["expires_at"]:
                    rows.append(("pending", attempts, now + delay, None, None, None, None, None, None, rid))
                    continue
            fates.pop(rid, None)
            line = self.failure_line(r, o)
            rows.append(("failed", attempts, 0, next_seq(r), now, line, None, None, duration_ms, rid))
        st.save_outcomes(rows, [r["batch_id"] for r, _ in results], was)

    def failure_line(self, r: sqlite3.Row, o: Outcome) -> str:
        if self.cfg.flavor == "openai":
            return openai_failure_line(r["id"], r["custom_id"], o)
        return error_line(r["id"], r["custom_id"], failure_reason(o))


def ranges(rids: list[int]) -> Iterator[tuple[int, int, int]]:
    """(position of its first, first rid, last rid) of each run of consecutive rids (one, unless some
    requests wait to be retried)."""
    start = 0
    for i in range(1, len(rids) + 1):
        if i == len(rids) or rids[i] != rids[i - 1] + 1:
            yield start, rids[start], rids[i - 1]
            start = i


def by_position(rows: list[sqlite3.Row], order: Order) -> Callable[[sqlite3.Row], int]:
    position = {r["rid"]: i for i, r in enumerate(rows)}
    return lambda r: order.seq(position[r["rid"]])
