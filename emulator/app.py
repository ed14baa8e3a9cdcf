"""The aiohttp application: shared state, auth, the API-call log and fault middleware, route table,
and the unauthenticated test-control endpoints under /_emulator/."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from . import batches_api, files_api, inference_api, responses
from .config import Clock, Config
from .faults import Faults, drop, status_fault, truncate
from .model import Upstream
from .responses import Reject, json_ok, openai_error, text_error
from .store import Store
from .worker import Worker

API_PREFIXES = ("/v1", "/ai/v1")


class State:
    """Everything a handler needs, stored on the app under STATE."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clock = Clock()
        self.store = Store(cfg.db, self.clock, cfg.flavor)
        self.upstream = Upstream(cfg.upstream, cfg.upstream_key) if cfg.upstream else None
        self.worker = Worker(self.store, cfg, self.upstream)
        self.faults = Faults(cfg.seed)
        self.calls: list[dict] = []
        self.files_created = 0
        self.batches_created = 0
        self.seen_bodies: dict[str, int] = {}

    def owner_for_key(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def auth_files(self, request: web.Request) -> str:
        """Files/batches routes: exactly `Bearer <key>`, else 401 plain text. Returns the owner."""
        header = request.headers.get("Authorization", "")
        key = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if not key or (self.cfg.api_keys and key not in self.cfg.api_keys):
            raise Reject(text_error(401, "Authentication required"))
        return self.owner_for_key(key)

    def auth_openai(self, request: web.Request) -> str:
        """Inference and /models routes: any case of the scheme; OpenAI JSON 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            raise Reject(
                openai_error(
                    401, "Missing authorization header", "authentication_error", "missing_authorization"
                )
            )
        key = key.strip()
        if self.cfg.api_keys and key not in self.cfg.api_keys:
            raise Reject(openai_error(401, "Invalid API key", "authentication_error", "invalid_api_key"))
        return self.owner_for_key(key)


STATE = web.AppKey("state", State)


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


async def control_requests(request: web.Request) -> web.Response:
    return json_ok({"requests": request.app[STATE].calls})


async def control_stats(request: web.Request) -> web.Response:
    s = request.app[STATE]
    return json_ok(
        {
            "files_created": s.files_created,
            "batches_created": s.batches_created,
            "api_calls": len(s.calls),
            "faults_injected": s.faults.injected,
        }
    )


async def control_config(request: web.Request) -> web.Response:
    s = request.app[STATE]
    if request.method == "POST":
        try:
            changes = await request.json()
        except ValueError:
            return json_ok({"error": "body must be a JSON object"}, 400)
        if not isinstance(changes, dict):
            return json_ok({"error": "body must be a JSON object"}, 400)
        unknown = sorted(set(changes) - set(Config.RUNTIME_KEYS))
        if unknown:
            return json_ok({"error": f"unknown keys: {unknown}", "allowed": list(Config.RUNTIME_KEYS)}, 400)
        for key, value in changes.items():
            current = getattr(s.cfg, key)
            if isinstance(current, bool) or key == "paused":
                value = bool(value)
            elif isinstance(current, float):
                value = float(value)
            elif isinstance(current, int):
                value = int(value)
            setattr(s.cfg, key, value)
        s.worker.wake.set()
    return json_ok(s.cfg.runtime())


async def control_clock(request: web.Request) -> web.Response:
    s = request.app[STATE]
    try:
        body = await request.json()
        secs = float(body.get("advance_seconds", 0))
    except (ValueError, AttributeError, TypeError):
        return json_ok({"error": 'expected {"advance_seconds": N}'}, 400)
    s.clock.offset += secs
    s.store.save_clock()
    s.worker.wake.set()
    return json_ok({"now": s.clock.now(), "offset": s.clock.offset})


def build_app(cfg: Config) -> web.Application:
    responses.FLAVOR["openai"] = cfg.flavor == "openai"
    app = web.Application(middlewares=[api_middleware], client_max_size=1024**4)
    state = State(cfg)
    app[STATE] = state
    app.router.add_get("/healthz", healthz)  # add_get also routes HEAD
    app.router.add_get("/_emulator/requests", control_requests)
    app.router.add_get("/_emulator/stats", control_stats)
    app.router.add_get("/_emulator/config", control_config)
    app.router.add_post("/_emulator/config", control_config)
    app.router.add_post("/_emulator/clock", control_clock)
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
        state.store.db.close()

    app.cleanup_ctx.append(start_worker)
    return app
