"""Seeded HTTP fault injection on API calls: 500, 503, 429, dropped connections, truncated bodies.

For mutating calls a dropped or truncated reply happens, at random (seeded), either before the action
(nothing changed) or after it (the object exists but the client never learns about it)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from aiohttp import web

from .responses import dw_json_error, text_error

KINDS = ("500", "503", "429", "drop", "truncate")


@dataclass
class Fault:
    kind: str
    after: bool  # drop/truncate after the handler ran (its effect happened)


class Faults:
    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.injected = 0

    def pick(self, rate: float, mutating: bool) -> Fault | None:
        if rate <= 0 or self.rng.random() >= rate:
            return None
        kind = self.rng.choice(KINDS)
        after = kind in ("drop", "truncate") and (not mutating or self.rng.random() < 0.5)
        self.injected += 1
        return Fault(kind, after)


def status_fault(kind: str, retry_after: float) -> web.Response:
    """The reply for a 500/503/429 fault: always before any effect."""
    if kind == "500":
        return text_error(500, "Internal server error")
    if kind == "503":
        return dw_json_error(503, "service_unavailable", "Service temporarily unavailable", retry_after)
    return dw_json_error(429, "too_many_requests", "Too many requests. Please retry later.", retry_after)


def drop(request: web.Request) -> web.Response:
    """Close the socket with no response; aiohttp then fails to write and ignores it."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=200)


async def truncate(request: web.Request, status: int, body: bytes, content_type: str) -> web.StreamResponse:
    """Send headers declaring the full Content-Length, part of the body, then close the connection."""
    resp = web.StreamResponse(status=status)
    resp.content_type = content_type
    resp.content_length = max(len(body), 64)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return resp
