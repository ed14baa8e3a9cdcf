"""The test-control endpoints under /_emulator/ (no auth, never faulted, not logged): the call log,
counters, the runtime configuration and the clock. They are part of the emulator's contract."""

from __future__ import annotations

import math

from aiohttp import web

from .config import FRACTIONS, ORDERS, Config, fraction
from .jsonbody import BadJson
from .jsonbody import parse as parse_json
from .responses import json_ok
from .state import state_of


async def control_requests(request: web.Request) -> web.Response:
    return json_ok({"requests": state_of(request).calls})


async def control_stats(request: web.Request) -> web.Response:
    s = state_of(request)
    return json_ok(
        {
            "files_created": s.files_created,
            "batches_created": s.batches_created,
            "api_calls": len(s.calls),
            "faults_injected": s.faults.injected,
            "prepared_answers": s.worker.prepared_answers,
        }
    )


async def control_config(request: web.Request) -> web.Response:
    s = state_of(request)
    if request.method == "POST":
        try:
            changes = parse_json(await request.read())
        except BadJson:
            return json_ok({"error": "body must be a JSON object"}, 400)
        if not isinstance(changes, dict):
            return json_ok({"error": "body must be a JSON object"}, 400)
        unknown = sorted(set(changes) - set(Config.RUNTIME_KEYS))
        if unknown:
            return json_ok({"error": f"unknown keys: {unknown}", "allowed": list(Config.RUNTIME_KEYS)}, 400)
        checked = {}
        for key, value in changes.items():
            try:
                checked[key] = runtime_value(key, getattr(s.cfg, key), value)
            except ValueError as exc:
                return json_ok({"error": f"{key}: {exc}"}, 400)
        for key, value in checked.items():  # all or nothing
            setattr(s.cfg, key, value)
        s.worker.wake.set()
    return json_ok(s.cfg.runtime())


BATCH_CREATE_ERRORS = (None, "balance", "capacity")


def runtime_value(key: str, current: object, value: object) -> object:
    """A new value for a runtime setting, of the setting's type; ValueError says why not."""
    if isinstance(current, bool) or key == "paused":
        return bool(value)
    if key == "batch_create_error":
        if value not in BATCH_CREATE_ERRORS:
            raise ValueError(f"expected one of {list(BATCH_CREATE_ERRORS)}")
        return value
    if key == "order":
        if value not in ORDERS:
            raise ValueError(f"expected one of {list(ORDERS)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("expected a finite number")
    if isinstance(current, int):
        if value != int(value):
            raise ValueError("expected an integer")
        return int(value)
    return fraction(float(value)) if key in FRACTIONS else float(value)


async def control_clock(request: web.Request) -> web.Response:
    s = state_of(request)
    try:
        body = parse_json(await request.read())
        secs = float(body.get("advance_seconds", 0))  # type: ignore[union-attr]
        if not math.isfinite(secs):
            raise ValueError(secs)
    except (ValueError, AttributeError, TypeError):
        return json_ok({"error": 'expected {"advance_seconds": N}'}, 400)
    s.clock.offset += secs
    s.store.save_clock()
    s.worker.wake.set()
    return json_ok({"now": s.clock.now(), "offset": s.clock.offset})


ROUTES = (
    ("GET", "/_emulator/requests", control_requests),
    ("GET", "/_emulator/stats", control_stats),
    ("GET", "/_emulator/config", control_config),
    ("POST", "/_emulator/config", control_config),
    ("POST", "/_emulator/clock", control_clock),
)
