"""Batches routes (references/api_reference.md sections 2, 4, 6 and 8): create in the server's check
order, get, list with filters, cancel, retry, retry-requests, delete, results and analytics."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from decimal import Decimal

from aiohttp import web

from .config import BATCH_URLS, WINDOWS
from .jsonbody import BadJson
from .jsonbody import parse as parse_json
from .pricing import cost, decimal_str
from .responses import (
    Reject,
    capacity_429,
    found_or_404,
    id_or_400,
    json_ok,
    list_envelope,
    ndjson,
    or_default,
    paging,
    parse_uuid,
    query_int,
    stream_ndjson,
    text_error,
)
from .state import State, state_of
from .store import TERMINAL, Store
from .validation import serde_kind

# Input keys the server drops (compared case-insensitively, `-` as `_`): it sets them itself.
RESERVED_METADATA = {
    "created_by_email",
    "context_name",
    "context_type",
    "request_source",
    "created_by",
    "dw_user_agent",
}
STATUS_FILTERS = ("in_progress", "completed", "failed", "cancelled", "expired")


def lookup_batch(state: State, owner: str, raw: str) -> sqlite3.Row:
    bid = id_or_400(raw, "batch_" if state.openai else "", "batch")
    return found_or_404(state.store.get_batch(owner, bid), "Batch", raw)


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
    state = state_of(request)
    owner = state.auth_files(request)
    if not is_json_content_type(request.content_type):
        return text_error(415, "Expected request with `Content-Type: application/json`")
    data = await request.read()
    try:
        body = parse_json(data)
    except BadJson as exc:
        return text_error(400, f"Failed to parse the request body as JSON: {exc.reason}")
    raw = data.decode("utf-8")
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
        return text_error(
            403,
            "Insufficient permissions to Create background inference; assign the BackgroundInferenceUser role "
            "to use the background completion window",
        )
    if window not in WINDOWS:
        return text_error(400, "Unsupported completion_window. Allowed values: 24h, 1h")
    if body["endpoint"] not in BATCH_URLS:
        return text_error(
            400, f"Unsupported endpoint '{body['endpoint']}'. Supported: {', '.join(BATCH_URLS)}"
        )
    openai = state.openai
    fid = parse_uuid(body["input_file_id"], "file-" if openai else "")
    if fid is None:
        return text_error(400, "Invalid input_file_id format")
    if state.cfg.batch_create_error == "balance":
        return text_error(402, "Account balance too low. Please add credits to continue.")
    st = state.store
    f = st.live_file(fid)
    if f is None:
        return text_error(404, f"File with ID {body['input_file_id']} not found")
    if f["owner"] != owner:
        return text_error(403, f"Insufficient permissions to Create batch using file {body['input_file_id']}")
    if state.cfg.batch_create_error == "capacity":
        return capacity_429(window, st.file_models(fid))
    meta = {}
    for k, v in (metadata or {}).items():
        if k.lower().replace("-", "_") not in RESERVED_METADATA:
            meta[k] = v
    if not openai:  # stored as the server stores them; the batch object shows created_by_email instead
        meta["request_source"] = "api"
        meta["created_by"] = owner
        meta["dw_user_agent"] = request.headers.get("User-Agent", "")
    b = st.create_batch(owner, f, body["endpoint"], window, meta, state.cfg.start_delay)
    state.batches_created += 1
    state.worker.wake.set()
    return json_ok(st.batch_object(b, full=False), 200 if openai else 201)


async def get_batch(request: web.Request) -> web.Response:
    state = state_of(request)
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
    state = state_of(request)
    owner = state.auth_files(request)
    st = state.store
    q = request.query
    limit = max(1, min(101, or_default(query_int(request, "limit"), 20)))
    status_filter = q.get("status")
    if status_filter is not None and status_filter not in STATUS_FILTERS:
        return text_error(
            400,
            f"Unknown batch status filter: '{status_filter}'. Valid values: in_progress, completed, failed, "
            "cancelled, expired",
        )
    rows = st.list_batches(
        owner,
        q.get("search") or None,
        _iso(q["created_after"], "created_after") if q.get("created_after") else None,
        _iso(q["created_before"], "created_before") if q.get("created_before") else None,
        [w.strip() for w in q.get("completion_window", "").split(",") if w.strip()],
    )
    now = st.clock.now()
    items = []
    for b in rows:
        b = st.finish_if_done(b)
        status = st.status(b, st.counts(b["id"]))
        if status_filter and not _matches(status_filter, b, now):
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
    data = []
    for b, _ in items[:limit]:
        obj = st.batch_object(b)
        if "analytics" in q.get("include", "").split(","):
            obj["analytics"] = analytics_of(st, b)
        data.append(obj)
    return json_ok(list_envelope(data, len(items) > limit))


def _matches(flt: str, b: sqlite3.Row, now: float) -> bool:
    """The status filter compares stored timestamps, not the computed status: a batch cancelled after it
    completed matches both `completed` and `cancelled`."""
    if flt == "completed":
        return b["completed_at"] is not None
    if flt == "failed":
        return b["failed_at"] is not None
    if flt == "cancelled":
        return b["cancelling_at"] is not None
    if flt == "expired":
        finished_at = b["finished_at"]
        return (finished_at is None and now > b["expires_at"]) or (
            finished_at is not None and finished_at > b["expires_at"]
        )
    return b["completed_at"] is None and b["failed_at"] is None and b["cancelling_at"] is None  # in_progress


async def cancel_batch(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    if state.openai:
        status = st.status(st.finish_if_done(b), st.counts(b["id"]))
        if status in TERMINAL:
            return text_error(409, f"Cannot cancel a batch with status '{status}'.")
    st.cancel(b)
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


async def retry_batch(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    if not st.counts(b["id"])["failed"] and b["cancelling_at"] is None:
        return text_error(
            400, "Nothing to retry: no failed or canceled requests, and the batch is not cancelled"
        )
    st.retry_failed(b["id"])
    state.worker.wake.set()
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


async def retry_requests(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    if not is_json_content_type(request.content_type):
        return text_error(415, "Expected request with `Content-Type: application/json`")
    try:
        body = parse_json(await request.read())
    except BadJson as exc:
        return text_error(400, f"Failed to parse the request body as JSON: {exc.reason}")
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return text_error(
            422, "Failed to deserialize the JSON body into the target type: missing field `request_ids`"
        )
    parsed = (parse_uuid(x) if isinstance(x, str) and not x.startswith("batch_req_") else None for x in ids)
    valid = [i for i in parsed if i]
    b = lookup_batch(state, owner, request.match_info["batch_id"])  # after the body, as the server does
    st = state.store
    if not valid:
        return text_error(400, "No valid request IDs provided")
    st.retry_failed(b["id"], valid)
    state.worker.wake.set()
    return json_ok(st.batch_object(st.get_batch(owner, b["id"])))


async def delete_batch(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    state.store.delete_batch(b)
    return web.Response(status=204)


async def batch_results(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    owner = state.auth_files(request)
    b = lookup_batch(state, owner, request.match_info["batch_id"])
    st = state.store
    b = st.finish_if_done(b)
    skip, limit = paging(request)
    search = request.query.get("search") or None
    lines, count = st.results(b["id"], search, request.query.get("status") or None)
    c = st.counts(b["id"])
    # true only while rows wait or run: false while validating (no rows yet) and once cancelled
    running = b["cancelling_at"] is None and bool(c["pending"] or c["in_progress"])
    if limit is not None:
        page = lines.page(skip, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        headers = {"X-Incomplete": str(more or running).lower(), "X-Last-Line": str(skip + len(page))}
        return ndjson(page, headers)
    headers = {"X-Incomplete": str(running).lower()}
    if not search:
        headers["X-Last-Line"] = str(max(skip, count))
    return await stream_ndjson(request, lines, skip, None, headers)


_SETTLED_ANALYTICS: dict[tuple[object, ...], dict] = {}


def analytics_of(st: Store, b: sqlite3.Row) -> dict:
    """Token totals and cost of a batch's completed requests. A finished batch's figures no longer change
    (until a retry makes it run again, which changes its status and stamps): they are aggregated once, as
    the real server's analytics are aggregated apart from the requests (two scans of every request row
    cost ~100 ms at 50,000, on the one thread that serves everything else)."""
    counts = st.counts(b["id"])
    settled = b["finished_at"] is not None and not counts["pending"] and not counts["in_progress"]
    key = (id(st), b["id"], b["finished_at"], *sorted(counts.items()))
    if settled and key in _SETTLED_ANALYTICS:
        return dict(_SETTLED_ANALYTICS[key])
    out = _aggregate(st, b)
    if settled:
        _SETTLED_ANALYTICS[key] = dict(out)
    return out


def _aggregate(st: Store, b: sqlite3.Row) -> dict:
    total_cost = Decimal(0)
    pt = ct = 0
    for model, p_tokens, c_tokens in st.usage_by_model(b["id"]):
        total_cost += cost(model, b["completion_window"], p_tokens, c_tokens)
        pt += p_tokens
        ct += c_tokens
    out = {
        "total_requests": b["total"],
        "total_prompt_tokens": pt,
        "total_completion_tokens": ct,
        "total_tokens": pt + ct,
        "total_cost": decimal_str(total_cost),
        "total_list_cost": decimal_str(total_cost),
    }
    duration = st.avg_duration_ms(b["id"])
    if duration is not None:
        out["avg_duration_ms"] = round(duration, 3)
    return out


async def batch_analytics(request: web.Request) -> web.Response:
    state = state_of(request)
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
