"""One answer to one request, from the built-in model or the upstream, as the worker stores it."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Outcome:
    """An HTTP status and body (text, or `obj` when the built-in model made it), or a transport failure."""

    status: int = 200
    body: str = ""
    failure: str | None = None  # None, "NetworkError" or "Timeout"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    obj: dict | None = None  # the parsed body when the built-in model produced it
    sorted_json: bool = False  # `body` is already compact JSON with sorted keys (the output line's form)

    def parsed(self) -> dict | None:
        """The body as an object, when it is JSON."""
        if self.obj is None and self.sorted_json:
            self.obj = json.loads(self.body)
        return self.obj

    def text(self) -> str:
        if self.obj is not None and not self.body:
            self.body = json.dumps(self.obj)
        return self.body


def error_json(message: str, etype: str = "invalid_request_error", code: str | None = None) -> str:
    """An OpenAI-style error body."""
    return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
