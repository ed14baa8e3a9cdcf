"""Forwarding to any OpenAI-compatible server (`--upstream URL`) instead of the built-in model."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from .outcome import Outcome


def usage_of(body_text: str) -> tuple[int, int]:
    """(prompt, completion) tokens from an upstream JSON body, 0 when absent."""
    try:
        usage = json.loads(body_text).get("usage") or {}
    except (ValueError, AttributeError):
        return 0, 0
    pt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    ct = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    return int(pt), int(ct)


class Upstream:
    """Forwards a request to `base + <path without /v1>` of an OpenAI-compatible server."""

    def __init__(self, base: str, key: str | None, timeout_s: float = 120.0) -> None:
        self.base = base.rstrip("/")
        self.key = key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def call(self, path: str, body_text: str) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        endpoint = path.removeprefix("/ai").removeprefix("/v1")
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            async with self._session.post(
                self.base + endpoint, data=body_text.encode(), headers=headers
            ) as r:
                text = await r.text()
                pt, ct = usage_of(text) if 200 <= r.status < 300 else (0, 0)
                return Outcome(r.status, text, prompt_tokens=pt, completion_tokens=ct)
        except asyncio.TimeoutError as exc:
            return Outcome(0, failure="Timeout", body=str(exc) or "request timed out")
        except aiohttp.ClientError as exc:
            return Outcome(0, failure="NetworkError", body=str(exc) or type(exc).__name__)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
