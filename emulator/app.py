"""The aiohttp application: the API-call log and fault middleware, the route table under `/v1` and
`/ai/v1` (references/api_reference.md section 2), and the test-control endpoints (control.py)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import batches_api, control, files_api, inference_api, responses
from .config import Config
from .faults import drop, status_fault, truncate
from .responses import Reject, text_error
from .state import STATE, State

API_PREFIXES = ("/v1", "/ai/v1")


def is_mutating(request: web.Request) -> bool:
    return request.method in ("POST", "DELETE")


# The server's CORS layer (tower-http) answers every OPTIONS request itself, before routing or auth: 200,
# empty body, Vary on the preflight headers. Allowed origins are deployment config, so none are echoed.
PREFLIGHT_VARY = "origin, access-control-request-method, access-control-request-headers"


@web.middleware
async def api_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    path = request.path
    if request.method == "OPTIONS":
        if not path.startswith("/_emulator"):
            request.app[STATE].calls.append(
                {
                    "method": "OPTIONS",
                    "path": path,
                    "query": request.query_string,
                    "status": 200,
                    "fault": None,
                }
            )
        return web.Response(status=200, headers={"Vary": PREFLIGHT_VARY})
    if path == "/healthz" or path.startswith("/_emulator"):
        try:
            return await handler(request)
        except Reject as exc:
            return exc.response
    state = request.app[STATE]
    entry: dict = {
        "method": request.method,
        "path": path,
        "query": request.query_string,
        "status": None,
        "fault": None,
    }
    state.calls.append(entry)
    fault = state.faults.pick(state.cfg.fault_rate, is_mutating(request))
    if fault is not None:
        entry["fault"] = fault.kind
        if fault.kind in ("500", "503", "429"):
            resp = status_fault(fault.kind, state.cfg.fault_retry_after)
            entry["status"] = resp.status
            return resp
        if not fault.after:
            if fault.kind == "drop":
                return drop(request)
            entry["status"] = 200
            return await truncate(request, 200, b'{"id":"' + b"0" * 120, "application/json")
    try:
        resp = await handler(request)
    except Reject as exc:
        resp = exc.response
    except web.HTTPException as exc:
        resp = exc
        if resp.status == 404:
            resp = text_error(404, "Not Found")
        elif resp.status == 405:
            resp = text_error(405, "Method Not Allowed")
    entry["status"] = resp.status
    if fault is not None:
        if fault.kind == "drop":
            entry["status"] = None
            return drop(request)
        if isinstance(resp, web.Response) and not resp.prepared and resp.body is not None:
            body = resp.body if isinstance(resp.body, bytes) else b""
            return await truncate(request, resp.status, body, resp.content_type)
        entry["fault"] = None  # already streamed: nothing left to cut, so no fault after all
        state.faults.injected -= 1
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="OK", content_type="text/plain")


def build_app(cfg: Config) -> web.Application:
    responses.FLAVOR["openai"] = cfg.flavor == "openai"
    app = web.Application(middlewares=[api_middleware], client_max_size=1024**4)
    state = State(cfg)
    app[STATE] = state
    app.router.add_get("/healthz", healthz)  # add_get also routes HEAD
    for method, path, handler in control.ROUTES:
        app.router.add_route(method, path, handler)
    for prefix in API_PREFIXES:
        for method, path, handler in (
            *files_api.ROUTES,
            *batches_api.ROUTES,
            *inference_api.ROUTES,
        ):
            app.router.add_route(method, prefix + path, handler)
            if method == "GET":  # axum's get() also answers HEAD: same status and headers, no body
                app.router.add_route("HEAD", prefix + path, handler)

    async def start_worker(app: web.Application):  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(state.worker.run())
        yield
        task.cancel()
        for t in list(state.worker.inflight):
            t.cancel()
        if state.upstream is not None:
            await state.upstream.close()
        state.store.close()

    app.cleanup_ctx.append(start_worker)
    return app
