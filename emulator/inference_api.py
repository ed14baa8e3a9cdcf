"""Models and realtime inference routes (OpenAI JSON errors): /models, /chat/completions, /embeddings,
/completions, /responses, /messages, answered by the built-in model or the upstream."""

from __future__ import annotations

import hashlib
import json

from aiohttp import web

from .catalog import Catalog
from .jsonbody import BadJson
from .jsonbody import parse as parse_json
from .model import FAIL_TIMES_KEY
from .reasoning_rules import reasoning_problem
from .responses import json_ok, openai_error
from .state import state_of

MODEL_CREATED = 1767225600


def model_object(name: str, catalog: Catalog | None = None) -> dict:
    """The model object; with a catalog, `supported_reasoning_efforts` too (an empty list for a model
    without a reasoning control)."""
    obj: dict = {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "None"}
    if catalog is not None:
        obj["supported_reasoning_efforts"] = list(catalog.efforts(name) or ())
    return obj


async def list_models(request: web.Request) -> web.Response:
    state = state_of(request)
    state.auth_openai(request)
    catalog = state.model.catalog if request.query.get("include_reasoning_capabilities") == "true" else None
    data = [model_object(m, catalog) for m in sorted(state.cfg.models)]
    return json_ok({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    state = state_of(request)
    state.auth_openai(request)
    name = request.match_info["model"]
    if name not in state.cfg.models:
        return openai_error(
            404, f"The model `{name}` does not exist or you do not have access to it.", code="model_not_found"
        )
    return json_ok(model_object(name))


async def realtime(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    state.auth_openai(request)
    raw = await request.read()
    try:
        body = parse_json(raw)
    except BadJson:
        return openai_error(400, "Failed to parse the request body as JSON")
    if not isinstance(body, dict):
        return openai_error(400, "Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        return openai_error(400, "you must provide a model parameter")
    if model not in state.cfg.models:
        return openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    path = "/v1" + request.path.split("/v1", 1)[1]
    problem = reasoning_problem(path, body, state.model.catalog)
    if problem is not None:
        return openai_error(400, problem)
    if state.upstream is not None:
        o = await state.upstream.call(path, raw.decode("utf-8", "replace"))
        if o.failure:
            return openai_error(502, f"Upstream {o.failure}: {o.body}", "api_error", "upstream_error")
        return web.Response(status=o.status, body=o.body.encode(), content_type="application/json")
    attempt = 0
    if FAIL_TIMES_KEY in body:  # count identical requests so "fail k times, then succeed" works realtime too
        digest = hashlib.sha256(raw).hexdigest()
        attempt = state.seen_bodies.get(digest, 0)
        state.seen_bodies[digest] = attempt + 1
    o = state.model.answer(path, body, attempt, state.clock.now_i())
    if o.status != 200:
        return web.Response(status=o.status, body=o.text().encode(), content_type="application/json")
    obj = o.parsed() if body.get("stream") is True else None
    if obj is not None and obj.get("object") == "chat.completion":
        return await _stream_chat(request, obj)
    return web.Response(body=o.text().encode(), content_type="application/json")


async def _stream_chat(request: web.Request, obj: dict) -> web.StreamResponse:
    """SSE for stream:true chat: the reasoning, the content or tool calls, a finish chunk with usage,
    then [DONE] (enough for the OpenAI SDK's stream helpers)."""
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    choice = obj["choices"][0]
    message = choice["message"]
    base = {k: obj[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    deltas: list[dict] = [{"role": "assistant", "content": ""}]
    if message.get("reasoning_content"):
        deltas.append({"reasoning_content": message["reasoning_content"]})
    if message.get("content"):
        deltas.append({"content": message["content"]})
    for i, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": i, **call}]})
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    for c in chunks:
        await resp.write(f"data: {json.dumps(c)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


ROUTES = (
    ("GET", "/models", list_models),
    ("GET", "/models/{model:.+}", get_model),
    ("POST", "/chat/completions", realtime),
    ("POST", "/embeddings", realtime),
    ("POST", "/completions", realtime),
    ("POST", "/responses", realtime),
    ("POST", "/messages", realtime),
)
