"""Batches routes: create (4.4 check order), get, list with filters, cancel, retry, retry-requests,
delete, results and analytics."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

from aiohttp import web

from .config import BATCH_URLS, FALLBACK_PRICE, PRICES, WINDOWS
from .files_api import _state, decimal_str, list_envelope, ndjson, stream_ndjson
from .responses import (
    Reject,
    _default,
    capacity_429,
    found_or_404,
    id_or_400,
    json_ok,
    parse_uuid,
    query_int,
    text_error,
)
from .store import TERMINAL, owner_email
from .validation import serde_kind

RESERVED_METADATA = {
    "created_by_email",
    "context_name",
    "context_type",
    "request_source",
    "created_by",
    "dw_user_agent",
    "dw_source_id",
    "dw_source_name",
    "dw_sync_id",
    "dw_external_key",
}
STATUS_FILTERS = ("in_progress", "completed", "failed", "cancelled", "expired")


def batch_id_or_400(state, raw: str) -> str:  # type: ignore[no-untyped-def]
    return id_or_400(raw, "batch_" if state.cfg.flavor == "openai" else "", "batch")


def lookup_batch(state, owner: str, raw: str):  # type: ignore[no-untyped-def]
    return found_or_404(state.store.get_batch(owner, batch_id_or_400(state, raw)), "Batch", raw)


def is_json_content_type(mime: str) -> bool:
    """axum's Json extractor: `application/json` or any `application/*+json`, parameters ignored."""
    kind, _, sub = mime.lower().partition("/")
    return kind == "application" and (sub == "json" or sub.endswith("+json"))


def _unprocessable(detail: str, text: str) -> Reject:
    return Reject(
        text_error(
            422,
            f"Failed to deserialize the JSON body into the target type: {detail} at line 1 column {len(text)}",
        )
    )


async def create_batch(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    if not is_json_content_type(request.content_type):
        return text_error(415, "Expected request with `Content-Type: application/json`")
    raw = await request.text()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return text_error(400, f"Failed to parse the request body as JSON: {exc}")
    if not isinstance(body, dict):
        raise _unprocessable(f"invalid type: {serde_kind(body)}, expected struct CreateBatchRequest", raw)
    for key in ("input_file_id", "endpoint", "completion_window"):
        if key not in body:
            raise _unprocessable(f"missing field `{key}`", raw)
        if not isinstance(body[key], str):
            raise _unprocessable(f"{key}: invalid type: {serde_kind(body[key])}, expected a string", raw)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _unprocessable(f"metadata: invalid type: {serde_kind(metadata)}, expected a map", raw)
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise _unprocessable(f"metadata.{k}: invalid type: {serde_kind(v)}, expected a string", raw)
    window = body["completion_window"]
    if window == "background":
        return text_error(403, "Insufficient permissions to use the background completion window")
    if window not in WINDOWS:
        return text_error(400, "Unsupported completion_window. Allowed values: 24h, 1h")
    if body["endpoint"] not in BATCH_URLS:
        return text_error(
            400, f"Unsupported endpoint '{body['endpoint']}'. Supported: {', '.join(BATCH_URLS)}"
        )
    openai = state.cfg.flavor == "openai"
    fid = parse_uuid(body["input_file_id"], "file-" if openai else "")
    if fid is None:
        return text_error(400, "Invalid input_file_id format")
    if state.cfg.batch_create_error == "balance":
        return text_error(402, "Account balance too low. Please add credits to continue.")
    st = state.store
    f = st.q1("SELECT * FROM files WHERE id=? AND deleted=0", fid)
    if f is None:
        return text_error(404, f"File with ID {body['input_file_id']} not found")
    if f["owner"] != owner:
        return text_error(403, f"Insufficient permissions to access file {body['input_file_id']}")
    if state.cfg.batch_create_error == "capacity":
        models = [r[0] for r in st.q("SELECT DISTINCT model FROM input_lines WHERE file_id=?", fid)]
        return capacity_429(window, models)
    meta = {}
    for k, v in (metadata or {}).items():
        if k.lower().replace("-", "_") not in RESERVED_METADATA:
            meta[k] = v
    if not openai:
        meta["request_source"] = "api"
        meta["created_by_email"] = owner_email(owner)
    b = st.create_batch(owner, f, body["endpoint"], window, meta, state.cfg.start_delay)
    state.batches_created += 1
    state.worker.wake.set()
    return json_ok(st.batch_object(b, full=False), 200 if openai else 201)


async def get_batch(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    return json_ok(state.store.batch_object(b))


def _iso(raw: str, name: str) -> int:
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Reject(
            text_error(400, f"Failed to deserialize query string: {name}: input contains invalid characters")
        )
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


async def list_batches(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    st = state.store
    q = request.query
    limit = max(1, min(101, _default(query_int(request, "limit"), 20)))
    status_filter = q.get("status")
    if status_filter is not None and status_filter not in STATUS_FILTERS:
        return text_error(
            400,
            f"Unknown batch status filter: '{status_filter}'. Valid values: in_progress, completed, failed, "
            "cancelled, expired",
        )
    where, args = ["owner=?", "deleted=0"], [owner]
    if q.get("search"):
        where.append(
            "(instr(lower(metadata), lower(?)) > 0 OR instr(lower(input_filename), lower(?)) > 0"
            " OR instr(lower(id), lower(?)) > 0)"
        )
        args += [q["search"]] * 3
    if q.get("created_after"):
        where.append("created_at > ?")
        args.append(_iso(q["created_after"], "created_after"))
    if q.get("created_before"):
        where.append("created_at < ?")
        args.append(_iso(q["created_before"], "created_before"))
    if q.get("completion_window"):
        windows = [w.strip() for w in q["completion_window"].split(",") if w.strip()]
        where.append(f"completion_window IN ({','.join('?' * len(windows))})")
        args += windows
    # The server sorts by its microsecond created_at (then id); whole seconds here, so creation order
    # (seq) breaks ties: two batches made in the same second still list newest first.
    rows = st.q(
        f"SELECT * FROM batches WHERE {' AND '.join(where)} ORDER BY created_at DESC, seq DESC", *args
    )
    now = st.clock.now()
    items = []
    for b in rows:
        b = st.finish_if_done(b)
        status = st.status(b, st.counts(b["id"]))
        if status_filter and not _matches(status_filter, status, b, now):
            continue
        items.append((b, status))
    if q.get("active_first") == "true":
        items.sort(key=lambda it: it[1] in TERMINAL)  # stable: keeps newest first within each group
    after = q.get("after")
    if after:
        aid = parse_uuid(after, "batch_")
        idx = next((i for i, (b, _) in enumerate(items) if b["id"] == aid), None)
        if idx is not None:
            items = items[idx + 1 :]
    page = items[:limit]
    data = []
    for b, _ in page:
        obj = st.batch_object(b)
        if q.get("include") == "analytics":
            obj["analytics"] = analytics_of(st, b)
        data.append(obj)
    return json_ok(list_envelope(data, len(items) > limit))


def _matches(flt: str, status: str, b, now: float) -> bool:  # type: ignore[no-untyped-def]
    if flt == "in_progress":
        return status in ("validating", "in_progress", "finalizing")
    if flt == "cancelled":
        return status in ("cancelled", "cancelling")
    if flt == "expired":
        finished_at = b["finished_at"]
        return (finished_at is None and now > b["expires_at"]) or (
            finished_at is not None and finished_at > b["expires_at"]
        )
    return status == flt


async def cancel_batch(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    if state.cfg.flavor == "openai":
        status = st.status(st.finish_if_done(b), st.counts(b["id"]))
        if status in TERMINAL:
            return text_error(409, f"Cannot cancel a batch with status '{status}'.")
    st.cancel(b)
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


def _clear_terminal(st, bid: str) -> None:  # type: ignore[no-untyped-def]
    st.db.execute(
        "UPDATE batches SET finalizing_at=NULL, completed_at=NULL, failed_at=NULL, cancelling_at=NULL,"
        " cancelled_at=NULL, finished_at=NULL WHERE id=?",
        (bid,),
    )


async def retry_batch(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    c = st.counts(b["id"])
    cancelled = b["cancelling_at"] is not None
    if not c["failed"] and not cancelled:
        return text_error(
            400, "Nothing to retry: no failed or canceled requests, and the batch is not cancelled"
        )
    with st.db:
        st.db.execute("BEGIN")
        st.db.execute(
            "UPDATE requests SET state='pending', attempts=0, next_at=0, done_seq=NULL, done_at=NULL, line=NULL"
            " WHERE batch_id=? AND state='failed'",
            (b["id"],),
        )
        _clear_terminal(st, b["id"])
    state.worker.wake.set()
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


async def retry_requests(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    if not is_json_content_type(request.content_type):
        return text_error(415, "Expected request with `Content-Type: application/json`")
    try:
        body = await request.json()
    except ValueError as exc:
        return text_error(400, f"Failed to parse the request body as JSON: {exc}")
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return text_error(
            422, "Failed to deserialize the JSON body into the target type: missing field `request_ids`"
        )
    valid = [
        i
        for i in (
            parse_uuid(x) if isinstance(x, str) and not x.startswith("batch_req_") else None for x in ids
        )
        if i
    ]
    if not valid:
        return text_error(400, "No valid request IDs provided")
    with st.db:
        st.db.execute("BEGIN")
        st.db.executemany(
            "UPDATE requests SET state='pending', attempts=0, next_at=0, done_seq=NULL, done_at=NULL, line=NULL"
            " WHERE batch_id=? AND id=? AND state='failed'",
            [(b["id"], i) for i in valid],
        )
        _clear_terminal(st, b["id"])
    state.worker.wake.set()
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


async def delete_batch(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    if st.status(st.finish_if_done(b), st.counts(b["id"])) not in TERMINAL:
        st.cancel(b)
    st.db.execute("UPDATE batches SET deleted=1 WHERE id=?", (b["id"],))
    return web.Response(status=204)


async def batch_results(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    b = st.finish_if_done(b)
    skip = max(0, query_int(request, "skip") or 0)
    limit = query_int(request, "limit")
    if limit is not None:
        limit = max(1, min(101, limit))
    where, args = "batch_id=?", [b["id"]]
    if request.query.get("search"):
        where += " AND instr(lower(custom_id), lower(?)) > 0"
        args.append(request.query["search"])
    status = request.query.get("status")
    if status:
        where += " AND state=?"
        args.append(status)
    sql = (
        "SELECT json_object('id', id, 'custom_id', custom_id, 'model', model, 'input_body', json(body),"
        " 'response_body', CASE WHEN state='completed' THEN json_extract(line, '$.response.body') END,"
        " 'error', CASE WHEN state='failed' THEN json_extract(line, '$.error.message') END,"
        " 'status', state) FROM requests"
        f" WHERE {where} ORDER BY line_no"
    )
    c = st.counts(b["id"])
    running = not st.is_finished(b, c) or bool(
        b["cancelling_at"] is None and (c["pending"] or c["in_progress"])
    )
    if limit is not None:
        lines = [r[0] for r in st.q(sql + " LIMIT ? OFFSET ?", *args, limit + 1, skip)]
        more = len(lines) > limit
        lines = lines[:limit]
        return ndjson(
            lines,
            {"X-Incomplete": str(more or running).lower(), "X-Last-Line": str(skip + len(lines))},
            False,
        )
    n = st.q1(f"SELECT count(*) FROM requests WHERE {where}", *args)[0] if status else b["total"]
    headers = {"X-Incomplete": str(running).lower(), "X-Last-Line": str(n)}
    return await stream_ndjson(request, st, sql, args, skip, None, headers, False)


def analytics_of(st, b) -> dict:  # type: ignore[no-untyped-def]
    row = st.q1(
        "SELECT model, coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0), avg(duration_ms)"
        " FROM requests WHERE batch_id=? AND state='completed'",
        b["id"],
    )
    cost = Decimal(0)
    for r in st.q(
        "SELECT model, sum(prompt_tokens), sum(completion_tokens) FROM requests"
        " WHERE batch_id=? AND state='completed' GROUP BY model",
        b["id"],
    ):
        pin, pout = PRICES.get(r[0], FALLBACK_PRICE)[b["completion_window"]]
        cost += (Decimal(r[1] or 0) * Decimal(pin) + Decimal(r[2] or 0) * Decimal(pout)) / Decimal(1_000_000)
    pt, ct = int(row[1]), int(row[2])
    out = {
        "total_requests": b["total"],
        "total_prompt_tokens": pt,
        "total_completion_tokens": ct,
        "total_tokens": pt + ct,
        "total_cost": decimal_str(cost),
        "total_list_cost": decimal_str(cost),
    }
    if row[3] is not None:
        out["avg_duration_ms"] = round(row[3], 3)
    return out


async def batch_analytics(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    return json_ok(analytics_of(state.store, b))


ROUTES = (
    ("POST", "/batches", create_batch),
    ("GET", "/batches", list_batches),
    ("GET", "/batches/{batch_id}", get_batch),
    ("DELETE", "/batches/{batch_id}", delete_batch),
    ("POST", "/batches/{batch_id}/cancel", cancel_batch),
    ("POST", "/batches/{batch_id}/retry", retry_batch),
    ("POST", "/batches/{batch_id}/retry-requests", retry_requests),
    ("GET", "/batches/{batch_id}/results", batch_results),
    ("GET", "/batches/{batch_id}/analytics", batch_analytics),
)
