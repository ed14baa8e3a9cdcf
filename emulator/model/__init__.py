"""The deterministic built-in model (references/api_reference.md sections 3 and 5 describe what it
imitates). `Model.answer` turns one request body into an Outcome:

- chat completions, completions, responses and messages: `compose` builds the answer (reasoning for
  reasoning models, JSON valid for a response schema, tool calls valid for a tool's parameters, the
  output-token budget, stop sequences, sloppiness) and `shapes` writes the endpoint's body;
- embeddings: `embeddings` (the model's real size).

Test hooks in a request body (not part of any real API): ``"x_emulator_status": N`` answers HTTP N; with
``"x_emulator_fail_times": k`` only the first k attempts fail."""

from __future__ import annotations

import time
import uuid

from ..catalog import Catalog, is_embedding_model
from ..config import Config
from ..outcome import Outcome, error_json
from .compose import ModelError, compose
from .embeddings import embeddings
from .fast import plain_parts
from .shapes import SHAPES

STATUS_KEY = "x_emulator_status"
FAIL_TIMES_KEY = "x_emulator_fail_times"
# The paths `answer` reads as the chat endpoint (it strips an "/ai" and a "/v1" prefix).
CHAT_PATHS = frozenset(
    {"/v1/chat/completions", "/ai/v1/chat/completions", "/ai/chat/completions", "/chat/completions"}
)


class Model:
    """Answers requests for the served models; reads the live configuration (sloppy rate)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.catalog = Catalog(cfg.models, cfg.reasoning_models)
        self.plain_models: dict[str, bool] = {}  # model -> whether its plain chat answers take the fast path

    def answer(
        self, path: str, body: object, attempt: int = 0, now: int | None = None, key: str | None = None
    ) -> Outcome:
        """One request's outcome. `path` is e.g. /v1/chat/completions; `key` makes the answer's id."""
        fast = self.plain_answer(path, body, now, key)
        if fast is not None:
            return Outcome(200, fast[0], prompt_tokens=fast[1], completion_tokens=fast[2], sorted_json=True)
        if not isinstance(body, dict):
            return Outcome(400, error_json("Request body must be a JSON object"))
        forced = forced_status(body, attempt)
        if forced is not None:
            return Outcome(forced, error_json(f"Emulated upstream status {forced}", "emulated_error"))
        model = body.get("model")
        if not isinstance(model, str):
            return Outcome(400, error_json("you must provide a model parameter"))
        endpoint = path.removeprefix("/ai").removeprefix("/v1")
        try:
            if endpoint == "/embeddings":
                resp, pt = embeddings(body, model)
                return Outcome(200, prompt_tokens=pt, obj=resp)
            shape = SHAPES.get(endpoint)
            if shape is None:
                return Outcome(404, error_json(f"Unknown endpoint {path}", "not_found_error"))
            if is_embedding_model(model):
                raise ModelError(400, f"Model '{model}' does not support {endpoint}")
            c = compose(endpoint, body, model, self.catalog, self.cfg.sloppy_rate)
        except ModelError as exc:
            return Outcome(exc.status, error_json(exc.message))
        resp = shape(c, rid_of(key), model, created_of(now), self.catalog.reasons(model))
        return Outcome(200, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, obj=resp)

    def plain_answer(
        self, path: str, body: object, now: int | None, key: str | None
    ) -> tuple[str, int, int] | None:
        """The common case at speed (the realtime routes rest on it): `plain_parts` made whole, with the
        sloppy model off, as (sorted JSON body, prompt tokens, completion tokens); None otherwise."""
        if self.cfg.sloppy_rate:
            return None
        parts = self.plain_parts(path, body)
        if parts is None:
            return None
        head, tail, pt, ct = parts
        return f'{head}{created_of(now)},"id":"chatcmpl-{rid_of(key)}{tail}', pt, ct

    def plain_parts(self, path: str, body: object) -> tuple[str, str, int, int] | None:
        """A plain chat request to a model that neither reasons nor embeds, answered by
        `fast.plain_parts` (all but its created time and id); None for anything else. The sloppy model,
        which can change at any time, is the caller's to check."""
        if path not in CHAT_PATHS or type(body) is not dict:
            return None
        model = body.get("model")
        if type(model) is not str:
            return None
        plain = self.plain_models.get(model)
        if plain is None:
            plain = not is_embedding_model(model) and not self.catalog.reasons(model)
            self.plain_models[model] = plain
        if not plain:
            return None
        return plain_parts(body, model)


def rid_of(key: str | None) -> str:
    """The answer's id suffix: from the request row's id (batches), else random (realtime)."""
    return (key or uuid.uuid4().hex).replace("-", "")


def created_of(now: int | None) -> int:
    return int(time.time()) if now is None else now


def forced_status(body: dict, attempt: int) -> int | None:
    forced = body.get(STATUS_KEY)
    fail_times = body.get(FAIL_TIMES_KEY)
    if (
        isinstance(forced, int)
        and 400 <= forced <= 599  # an HTTP status a server can send (anything else: no forced failure)
        and (not isinstance(fail_times, int) or attempt < fail_times)
    ):
        return forced
    return None
