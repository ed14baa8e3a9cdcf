"""Files routes: streaming multipart upload with the 4.3 checks, list, get, delete, content, cost-estimate."""

from __future__ import annotations

import logging
import marshal
import tempfile
from decimal import Decimal

from aiohttp import web

from .config import FALLBACK_PRICE, FILE_TTL_S, MULTIPART_OVERHEAD, PRICES, is_embedding_model
from .responses import (
    _default,
    found_or_404,
    id_or_400,
    json_ok,
    parse_uuid,
    query_int,
    text_error,
)
from .store import new_id
from .validation import LineValidator, UploadError

CHUNK = 256 * 1024
log = logging.getLogger("emulator.files")
INSERT_BATCH = 5000
INSERT_BYTES = 2 * 1024 * 1024


def _state(request: web.Request):  # type: ignore[no-untyped-def]
    from .app import STATE

    return request.app[STATE]


def file_id_or_400(state, raw: str) -> str:  # type: ignore[no-untyped-def]
    return id_or_400(raw, "file-" if state.cfg.flavor == "openai" else "", "file")


def lookup_file(state, owner: str, raw: str):  # type: ignore[no-untyped-def]
    return found_or_404(state.store.get_file(owner, file_id_or_400(state, raw)), "File", raw)


def too_big(limit: int) -> UploadError:
    return UploadError(413, f"File exceeds the maximum allowed size of {limit} bytes")


async def upload(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    cfg = state.cfg
    if (
        request.content_length is not None
        and request.content_length > cfg.max_file_bytes + MULTIPART_OVERHEAD
    ):
        return text_error(413, f"File exceeds the maximum allowed size of {cfg.max_file_bytes} bytes")
    if not request.content_type.startswith("multipart/"):
        return text_error(
            400, "Invalid multipart request: Invalid `boundary` for `multipart/form-data` request"
        )
    with tempfile.TemporaryFile() as spool:
        try:
            return await _upload(request, state, owner, spool)
        except ConnectionResetError:  # the client went away mid-upload: nothing was stored
            log.info("upload abandoned by the client; nothing stored")
            return text_error(400, "Invalid multipart request: connection lost")


async def _upload(request: web.Request, state, owner: str, spool) -> web.Response:  # type: ignore[no-untyped-def]
    cfg = state.cfg
    purpose: str | None = None
    expires_after: int | None = None
    filename: str | None = None
    size = 0
    have_file = False
    validator = LineValidator(cfg.models, cfg.max_requests)
    try:
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = getattr(part, "name", None)
                if name == "purpose":
                    purpose = (await part.text()).strip()
                    if purpose.lower() != "batch":
                        raise UploadError(400, f"Invalid purpose '{purpose}'. Only 'batch' is supported.")
                elif name == "expires_after[seconds]":
                    raw = (await part.text()).strip()
                    try:
                        expires_after = int(raw)
                    except ValueError:
                        raise UploadError(400, f"Invalid expires_after[seconds] value '{raw}'")
                elif name == "file" and not have_file:
                    have_file = True
                    filename = part.filename  # type: ignore[union-attr]
                    size = await _read_file_part(part, validator, spool, cfg.max_file_bytes)
                else:
                    await part.release()  # type: ignore[union-attr]
        except (ValueError, AssertionError, RuntimeError) as exc:
            if isinstance(exc, UploadError):
                raise
            raise UploadError(400, f"Invalid multipart request: {exc}")
        if not have_file:
            raise UploadError(400, "No file field found in multipart upload")
        if validator.count == 0:
            raise UploadError(400, "File contains no valid request templates")
        fid = new_id()
        now = state.clock.now_i()
        st = state.store
        spool.seek(0)
        with st.db:
            st.db.execute("BEGIN")
            st.db.execute(
                "INSERT INTO files (id, owner, kind, bytes, created_at, filename, purpose, expires_at, lines)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    fid,
                    owner,
                    "input",
                    size,
                    now,
                    filename or f"upload-{new_id()}",
                    purpose if purpose is not None else "batch",
                    now + (expires_after if expires_after is not None else FILE_TTL_S),
                    validator.count,
                ),
            )
            rows, held = [], 0
            for i in range(validator.count):  # one marshalled row per counted line
                row = marshal.load(spool)
                rows.append((fid, i, *row))
                held += sum(len(v) for v in row if isinstance(v, (str, bytes)))
                if len(rows) >= INSERT_BATCH or held >= INSERT_BYTES:  # large lines: bounded by bytes too
                    st.db.executemany("INSERT INTO input_lines VALUES (?,?,?,?,?,?,?)", rows)
                    rows, held = [], 0
            st.db.executemany("INSERT INTO input_lines VALUES (?,?,?,?,?,?,?)", rows)
        state.files_created += 1
        f = st.q1("SELECT * FROM files WHERE id=?", fid)
        return json_ok(st.file_object(f, full=False), 201 if cfg.flavor != "openai" else 200)
    except UploadError as exc:
        return text_error(exc.status, exc.message)


async def _read_file_part(part, validator: LineValidator, spool, limit: int) -> int:  # type: ignore[no-untyped-def]
    """Stream the file part: split lines, validate each as it arrives, spool the validated rows."""
    size = 0
    pending = b""
    line_start = 0  # byte offset of `pending` in the file
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_big(limit)
        pending += chunk
        start = 0
        while True:
            nl = pending.find(b"\n", start)
            if nl < 0:
                break
            _check(validator, pending[start:nl], line_start + start, spool)
            start = nl + 1
        pending = pending[start:]
        line_start += start
    if pending:
        _check(validator, pending, line_start, spool)
    return size


def _check(validator: LineValidator, raw: bytes, offset: int, spool) -> None:  # type: ignore[no-untyped-def]
    row = validator.check(raw, offset)
    if row is not None:
        # marshal, not JSON: re-encoding each (already validated) body cost a third of the upload time
        marshal.dump(row, spool)


async def list_files(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    st = state.store
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        return text_error(400, "Order must be 'asc' or 'desc'")
    limit = max(1, min(101, _default(query_int(request, "limit"), 20)))
    where, args = ["owner=?", "deleted=0"], [owner]
    if "purpose" in request.query:
        where.append("purpose=?")
        args.append(request.query["purpose"])
    if request.query.get("search"):
        where.append("instr(lower(filename), lower(?)) > 0")
        args.append(request.query["search"])
    after = request.query.get("after")
    if after:
        aid = parse_uuid(after, "file-")
        cur = st.q1("SELECT created_at, seq FROM files WHERE id=? AND owner=?", aid, owner) if aid else None
        if cur is not None:
            op = "<" if order == "desc" else ">"
            where.append(f"(created_at {op} ? OR (created_at = ? AND seq {op} ?))")
            args += [cur["created_at"], cur["created_at"], cur["seq"]]
    direction = "DESC" if order == "desc" else "ASC"
    # created_at is whole seconds here (microseconds on the server): creation order (seq) breaks ties.
    rows = st.q(
        f"SELECT * FROM files WHERE {' AND '.join(where)} ORDER BY created_at {direction}, seq {direction} LIMIT ?",
        *args,
        limit + 1,
    )
    data = [st.file_object(f) for f in rows[:limit]]
    return json_ok(list_envelope(data, len(rows) > limit))


def list_envelope(data: list[dict], has_more: bool) -> dict:
    env: dict = {"object": "list", "data": data}
    if data:
        env["first_id"] = data[0]["id"]
        env["last_id"] = data[-1]["id"]
    env["has_more"] = has_more
    return env


async def get_file(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    return json_ok(state.store.file_object(f))


async def delete_file(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    st = state.store
    with st.db:
        st.db.execute("BEGIN")
        st.db.execute("UPDATE files SET deleted=1 WHERE id=?", (f["id"],))
        if f["kind"] == "input":
            for b in st.q("SELECT * FROM batches WHERE input_file_id=?", f["id"]):
                if st.status(b, st.counts(b["id"])) not in ("completed", "failed", "cancelled", "expired"):
                    st.cancel(b)
            st.db.execute("UPDATE batches SET input_file_id='' WHERE input_file_id=?", (f["id"],))
        elif f["kind"] == "output":
            st.db.execute("UPDATE batches SET output_file_id=NULL WHERE id=?", (f["batch_id"],))
        else:
            st.db.execute("UPDATE batches SET error_file_id=NULL WHERE id=?", (f["batch_id"],))
    return json_ok({"id": st.ext_id("file", f["id"]), "object": "file", "deleted": True})


async def file_content(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    st = state.store
    openai = state.cfg.flavor == "openai"
    skip = max(0, query_int(request, "skip") or 0)
    limit = query_int(request, "limit")
    if limit is not None:
        limit = max(1, min(101, limit))
    search = request.query.get("search") or None
    if openai:
        skip, limit, search = 0, None, None
    headers: dict[str, str] = {}
    if f["kind"] == "input":
        where, args = "file_id=?", [f["id"]]
        if search:
            where += " AND instr(lower(custom_id), lower(?)) > 0"
            args.append(search)
        sql = (
            "SELECT '{\"custom_id\":' || json_quote(custom_id) || ',\"method\":' || json_quote(method) ||"
            " ',\"url\":' || json_quote(url) || ',\"body\":' || body || '}' FROM input_lines"
            f" WHERE {where} ORDER BY line_no"
        )
        if limit is not None:
            lines = [r[0] for r in st.q(sql + " LIMIT ? OFFSET ?", *args, limit + 1, skip)]
            more = len(lines) > limit
            lines = lines[:limit]
            headers = {"X-Incomplete": str(more).lower(), "X-Last-Line": str(skip + len(lines))}
            return ndjson(lines, headers, openai)
        headers = {"X-Incomplete": "false"}
        return await stream_ndjson(request, st, sql, args, skip, None, headers, openai)
    state_col = "completed" if f["kind"] == "output" else "failed"
    b = st.q1("SELECT * FROM batches WHERE id=?", f["batch_id"])
    finished = True
    if b is not None and not b["deleted"]:
        b = st.finish_if_done(b)
        finished = st.is_finished(b, st.counts(b["id"]))
    where, args = "batch_id=? AND state=?", [f["batch_id"], state_col]
    if search:
        where += " AND instr(lower(custom_id), lower(?)) > 0"
        args.append(search)
    sql = f"SELECT line FROM requests WHERE {where} ORDER BY done_seq, id"
    if limit is not None:
        lines = [r[0] for r in st.q(sql + " LIMIT ? OFFSET ?", *args, limit + 1, skip)]
        more = len(lines) > limit
        lines = lines[:limit]
        headers = {"X-Incomplete": str(more or not finished).lower(), "X-Last-Line": str(skip + len(lines))}
        return ndjson(lines, headers, openai)
    if b is None or b["deleted"]:
        headers = {"X-Incomplete": "false"}
        return await stream_ndjson(request, st, sql, args, skip, None, headers, openai)
    c = st.q1("SELECT count(*) FROM requests WHERE batch_id=? AND state=?", f["batch_id"], state_col)[0]
    headers = {"X-Incomplete": str(not finished).lower()}
    if search:
        cap = None
        where_seq = st.done_seq
        sql = f"SELECT line FROM requests WHERE {where} AND done_seq <= {where_seq} ORDER BY done_seq, id"
    else:
        headers["X-Last-Line"] = str(max(skip, c))
        cap = max(0, c - skip)
    return await stream_ndjson(request, st, sql, args, skip, cap, headers, openai)


def ndjson(lines: list[str], headers: dict[str, str], openai: bool) -> web.Response:
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    return web.Response(body=body, headers={} if openai else headers, content_type="application/x-ndjson")


async def stream_ndjson(  # type: ignore[no-untyped-def]
    request: web.Request, st, sql: str, args: list, skip: int, cap: int | None, headers: dict, openai: bool
) -> web.StreamResponse:
    """Without `limit` the body is streamed in chunks, never built whole in memory."""
    page = 2000
    first = st.q(sql + " LIMIT ? OFFSET ?", *args, page if cap is None else min(page, cap), skip)
    if len(first) < page:
        return ndjson([r[0] for r in first], headers, openai)
    resp = web.StreamResponse(headers={} if openai else headers)
    resp.content_type = "application/x-ndjson"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    sent, rows = 0, first
    while rows:
        await resp.write("".join(r[0] + "\n" for r in rows).encode("utf-8"))
        sent += len(rows)
        n = page if cap is None else min(page, cap - sent)
        if n <= 0:
            break
        rows = st.q(sql + " LIMIT ? OFFSET ?", *args, n, skip + sent)
    await resp.write_eof()
    return resp


def decimal_str(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")).normalize(), "f")


async def cost_estimate(request: web.Request) -> web.Response:
    state = _state(request)
    owner = state.auth_files(request)
    f = lookup_file(state, owner, request.match_info["file_id"])
    window = request.query.get("completion_window", "24h")
    if window not in ("24h", "1h"):
        return text_error(400, "Unsupported completion_window. Allowed values: 24h, 1h")
    st = state.store
    models = []
    total_in = total_out = 0
    total_cost = Decimal(0)
    total = 0
    for row in st.q(
        "SELECT model, count(*) AS n, sum(length(body)) AS nbytes FROM input_lines WHERE file_id=?"
        " GROUP BY model ORDER BY model",
        f["id"],
    ):
        n, tin = row["n"], int(row["nbytes"] or 0) // 4
        if is_embedding_model(row["model"]):
            tout = n
        else:
            avg = st.q1(
                "SELECT avg(completion_tokens) FROM requests WHERE model=? AND state='completed'",
                row["model"],
            )[0]
            tout = int(avg * n) if avg else int(tin * 1.1)
        pin, pout = PRICES.get(row["model"], FALLBACK_PRICE)[window]
        cost = (Decimal(tin) * Decimal(pin) + Decimal(tout) * Decimal(pout)) / Decimal(1_000_000)
        models.append(
            {
                "model": row["model"],
                "request_count": n,
                "estimated_input_tokens": tin,
                "estimated_output_tokens": tout,
                "estimated_cost": decimal_str(cost),
            }
        )
        total += n
        total_in += tin
        total_out += tout
        total_cost += cost
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
