"""Files routes (references/api_reference.md sections 4, 7 and 8): upload (in upload.py), list, get,
delete, content with `skip`/`limit`/`search` and `X-Incomplete`/`X-Last-Line`, cost estimate."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from aiohttp import web

from .catalog import is_embedding_model
from .pricing import cost, decimal_str
from .responses import (
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
from .upload import upload


def lookup_file(state: State, owner: str, raw: str) -> sqlite3.Row:
    fid = id_or_400(raw, "file-" if state.openai else "", "file")
    return found_or_404(state.store.get_file(owner, fid), "File", raw)


async def list_files(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        return text_error(400, "Order must be 'asc' or 'desc'")
    limit = max(1, min(101, or_default(query_int(request, "limit"), 20)))
    after = request.query.get("after")
    rows = state.store.list_files(
        owner,
        request.query.get("purpose"),
        request.query.get("search"),
        parse_uuid(after, "file-") if after else None,
        order == "asc",
        limit + 1,
    )
    data = [state.store.file_object(f) for f in rows[:limit]]
    return json_ok(list_envelope(data, len(rows) > limit))


async def get_file(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    return json_ok(state.store.file_object(f))


async def delete_file(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    state.store.delete_file(f)
    return json_ok({"id": state.store.ext_id("file", f["id"]), "object": "file", "deleted": True})


async def file_content(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    skip, limit = paging(request)
    search = request.query.get("search") or None
    if state.openai:  # OpenAI serves the whole file, without paging
        skip, limit, search = 0, None, None
    if f["kind"] == "input":
        lines = state.store.input_lines(f["id"], search)
        if limit is None:
            return await stream_ndjson(request, lines, skip, None, {"X-Incomplete": "false"}, state.openai)
        return limited_page(lines.page(skip, limit + 1), skip, limit, False, state.openai)
    return await result_content(request, state, f, skip, limit, search)


def limited_page(lines: list[str], skip: int, limit: int, running: bool, openai: bool) -> web.Response:
    """A `limit` page: one line more was read to tell whether more follow."""
    more = len(lines) > limit
    lines = lines[:limit]
    headers = {"X-Incomplete": str(more or running).lower(), "X-Last-Line": str(skip + len(lines))}
    return ndjson(lines, headers, openai)


async def result_content(
    request: web.Request, state: State, f: sqlite3.Row, skip: int, limit: int | None, search: str | None
) -> web.StreamResponse:
    """An output or error file: what has finished so far, with the headers of section 7."""
    st = state.store
    state_col = "completed" if f["kind"] == "output" else "failed"
    b = st.batch_row(f["batch_id"])
    finished = True
    if b is not None and not b["deleted"]:
        b = st.finish_if_done(b)
        finished = st.is_finished(b, st.counts(b["id"]))
    if limit is not None:
        lines = st.result_lines(f["batch_id"], state_col, search, None).page(skip, limit + 1)
        return limited_page(lines, skip, limit, not finished, state.openai)
    if b is None or b["deleted"]:
        lines = st.result_lines(f["batch_id"], state_col, search, None)
        return await stream_ndjson(request, lines, skip, None, {"X-Incomplete": "false"}, state.openai)
    headers = {"X-Incomplete": str(not finished).lower()}
    if search:  # no X-Last-Line; lines finished after this moment are left out
        lines = st.result_lines(f["batch_id"], state_col, search, st.done_seq)
        return await stream_ndjson(request, lines, skip, None, headers, state.openai)
    count = st.count_state(f["batch_id"], state_col)
    headers["X-Last-Line"] = str(max(skip, count))
    lines = st.result_lines(f["batch_id"], state_col, None, None)
    return await stream_ndjson(request, lines, skip, max(0, count - skip), headers, state.openai)


async def cost_estimate(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    window = request.query.get("completion_window", "24h")  # any other window: the realtime tariff
    st = state.store
    models = []
    total_in = total_out = total = 0
    total_cost = Decimal(0)
    for row in st.line_stats(f["id"]):
        n, tin = row["n"], int(row["nbytes"] or 0) // 4
        if is_embedding_model(row["model"]):
            tout = n
        else:
            avg = st.avg_completion_tokens(row["model"])
            tout = int(avg * n) if avg else int(tin * 1.1)
        price = cost(row["model"], window, tin, tout)
        models.append(
            {
                "model": row["model"],
                "request_count": n,
                "estimated_input_tokens": tin,
                "estimated_output_tokens": tout,
                "estimated_cost": decimal_str(price),
            }
        )
        total += n
        total_in += tin
        total_out += tout
        total_cost += price
    return json_ok(
        {
            "file_id": f["id"],
            "total_requests": total,
            "total_estimated_input_tokens": total_in,
            "total_estimated_output_tokens": total_out,
            "total_estimated_cost": decimal_str(total_cost),
            "models": models,
        }
    )


ROUTES = (
    ("POST", "/files", upload),
    ("GET", "/files", list_files),
    ("GET", "/files/{file_id}", get_file),
    ("DELETE", "/files/{file_id}", delete_file),
    ("GET", "/files/{file_id}/content", file_content),
    ("GET", "/files/{file_id}/cost-estimate", cost_estimate),
)
