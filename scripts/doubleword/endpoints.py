"""THE endpoint table: everything the client knows about each batchable endpoint, stated once.

One frozen :class:`Endpoint` per endpoint (``chat``, ``embeddings``, ``responses``, ``completions``,
``messages``) says

- the request side: its ``url``, its body schema in ``references/schemas/``, the body field that holds the
  prompt (and whether the prompt becomes a user message), where the system text, the output-token limit, the
  stop sequences, structured output, image parts and the reasoning effort go, which reasoning fields the server
  refuses (``references/api_reference.md`` section 3.1) with its message, and which body fields have a
  hand-written fast check in the validator (``fast_paths``; the names are checker kinds of
  ``doubleword.validation``);
- the answer side (:class:`AnswerFields`): where, inside the response body of an output line, the answer text,
  the reasoning text, the tool calls, the finish reason (and which values mean "cut off") and the embedding
  come back.

Both output-line shapes carry the response body at the same place, ``line["response"]["body"]``
(:data:`BODY_PATH`): Doubleword's (failures only in the error file, where ``response`` is null and
``error.message`` is a JSON string; a body that is not JSON arrives as a JSON string holding the raw text) and
OpenAI's (``response.status_code >= 400`` lines with an error body; ``batch_cancelled``/``batch_expired``
error lines). So the answer paths below hold for both; telling a failure from an answer is the results code's
job.

Typed API (import from here, never restate these facts elsewhere):

    ENDPOINTS                      name -> Endpoint, in a stable order (chat first: the default)
    endpoint_for_url(url)          Endpoint or None (exact batchable path, e.g. "/v1/chat/completions")
    endpoint_named(name_or_url)    Endpoint; raises UsageError naming the choices
    endpoint_for_body(body)        Endpoint whose answer this response body is (by "object"/"type"), or None
    read_answer(endpoint, body)    Answer(text, reasoning, tool_calls, finish_reason, truncated, embedding,
                                   usage) read from one response body
    pick(value, path)              every value found at a path (a path is a tuple of keys, indexes and Each)
    REASONING_EFFORTS              the effort values the server accepts

A path step is a dict key (``str``), a list index (``int``), or :class:`Each` (every item of a list,
optionally only the items whose ``"type"`` is given). ``("choices", 0, "message", "content")`` is
``body["choices"][0]["message"]["content"]``; ``("output", Each("message"), "content", Each("output_text"),
"text")`` is every output text of a Responses answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from doubleword.errors import UsageError

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# Both output-line shapes (Doubleword and OpenAI) put the upstream response body here.
BODY_PATH = ("response", "body")


@dataclass(frozen=True)
class Each:
    """A path step: every item of a list (only those whose ``"type"`` equals ``type`` when it is set)."""

    type: str | None = None


Step: TypeAlias = "str | int | Each"
Path: TypeAlias = "tuple[Step, ...]"


@dataclass(frozen=True)
class AnswerFields:
    """Where the answer lives inside a response body. Each member is a tuple of alternative paths: the
    first path that finds something wins (``reasoning_content`` before ``reasoning``, say)."""

    text: tuple[Path, ...]
    reasoning: tuple[Path, ...] = ()
    tool_calls: tuple[Path, ...] = ()
    finish_reason: tuple[Path, ...] = ()
    truncated_when: frozenset[str] = frozenset()  # finish_reason values meaning "cut off by the limit"
    embedding: tuple[Path, ...] = ()
    usage: Path = ("usage",)
    objects: tuple[str, ...] = ()  # the body's "object" (or "type") values that identify this answer


@dataclass(frozen=True)
class Endpoint:
    """One batchable endpoint: the request fields and the answer fields (see the module docstring)."""

    name: str  # the --endpoint choice
    url: str  # the line's url and the batch's endpoint
    schema_file: str  # the body schema in references/schemas/
    prompt_field: str  # the body key that holds the prompt
    prompt_in_messages: bool  # the prompt becomes [{"role": "user", "content": PROMPT}] in that key
    system_field: str | None  # "messages": a leading system message; else that body key; None: none
    max_tokens_field: str | None
    max_tokens_required: bool
    stop_field: str | None
    sampling: bool  # temperature and top_p apply
    json_schema_field: str | None  # "response_format" ({"type": "json_schema", "json_schema": F}) or
    #                                "text" ({"format": {"type": "json_schema", **F}})
    image_part: str | None  # the content-part "type" carrying an image after the text (None: no images)
    reasoning_effort: Path | None  # where the effort goes; None: no reasoning control
    refused_reasoning: tuple[str, ...]  # dotted body fields the server refuses, in the order it checks
    reasoning_message: str  # the server's refusal, with {field} (and the fix it names)
    fast_paths: tuple[tuple[str, str], ...]  # (body key, validator fast-check kind)
    answer: AnswerFields

    def place_reasoning_effort(self, body: dict[str, Any], effort: str) -> None:
        """Write ``effort`` where this endpoint takes it (``reasoning_effort`` or ``reasoning.effort``)."""
        if self.reasoning_effort is None:
            raise UsageError(
                f"the {self.name} endpoint takes no reasoning effort ({self.reasoning_message_for('reasoning_effort')})"
            )
        *parents, last = self.reasoning_effort
        target = body
        for key in parents:
            target = target.setdefault(str(key), {})
        target[str(last)] = effort

    def reasoning_message_for(self, field: str) -> str:
        return self.reasoning_message.format(field=field)


_CHAT_CHOICE: Path = ("choices", 0)
_CHAT_MESSAGE: Path = (*_CHAT_CHOICE, "message")
_TEMPLATE_FIELDS = (
    "chat_template_kwargs.thinking",
    "chat_template_kwargs.enable_thinking",
    "chat_template_kwargs",
)

_TABLE = (
    Endpoint(
        name="chat",
        url="/v1/chat/completions",
        schema_file="chat_completions.body.schema.json",
        prompt_field="messages",
        prompt_in_messages=True,
        system_field="messages",
        max_tokens_field="max_tokens",
        max_tokens_required=False,
        stop_field="stop",
        sampling=True,
        json_schema_field="response_format",
        image_part="image_url",  # {"type": "image_url", "image_url": {"url": URL_OR_DATA_URI}}
        reasoning_effort=("reasoning_effort",),
        refused_reasoning=(*_TEMPLATE_FIELDS, "thinking", "thinking_token_budget", "reasoning"),
        reasoning_message="Unsupported parameter '{field}'; use 'reasoning_effort'.",
        fast_paths=(("messages", "chat_messages"),),
        answer=AnswerFields(
            text=((*_CHAT_MESSAGE, "content"),),
            reasoning=((*_CHAT_MESSAGE, "reasoning_content"), (*_CHAT_MESSAGE, "reasoning")),
            tool_calls=((*_CHAT_MESSAGE, "tool_calls"),),
            finish_reason=((*_CHAT_CHOICE, "finish_reason"),),
            truncated_when=frozenset({"length"}),
            objects=("chat.completion",),
        ),
    ),
    Endpoint(
        name="embeddings",
        url="/v1/embeddings",
        schema_file="embeddings.body.schema.json",
        prompt_field="input",
        prompt_in_messages=False,
        system_field=None,
        max_tokens_field=None,
        max_tokens_required=False,
        stop_field=None,
        sampling=False,
        json_schema_field=None,
        image_part=None,
        reasoning_effort=None,
        refused_reasoning=(),
        reasoning_message="'{field}' does not apply to /v1/embeddings.",
        fast_paths=(("input", "text_input"),),
        answer=AnswerFields(text=(), embedding=(("data", Each(), "embedding"),), objects=("list",)),
    ),
    Endpoint(
        name="responses",
        url="/v1/responses",
        schema_file="responses.body.schema.json",
        prompt_field="input",
        prompt_in_messages=False,  # a string input is the prompt; with images it becomes one user message
        system_field="instructions",
        max_tokens_field="max_output_tokens",
        max_tokens_required=False,
        stop_field=None,
        sampling=True,
        json_schema_field="text",
        image_part="input_image",  # {"type": "input_image", "image_url": URL_OR_DATA_URI}
        reasoning_effort=("reasoning", "effort"),
        refused_reasoning=(*_TEMPLATE_FIELDS, "thinking", "thinking_token_budget", "reasoning_effort"),
        reasoning_message="Unsupported parameter '{field}'; use 'reasoning.effort'.",
        fast_paths=(("input", "responses_input"), ("instructions", "string")),
        answer=AnswerFields(
            text=(("output", Each("message"), "content", Each("output_text"), "text"), ("output_text",)),
            reasoning=(
                ("output", Each("reasoning"), "content", Each(), "text"),
                ("output", Each("reasoning"), "summary", Each(), "text"),
            ),
            tool_calls=(("output", Each("function_call")),),
            finish_reason=(("incomplete_details", "reason"), ("status",)),
            truncated_when=frozenset({"max_output_tokens"}),
            objects=("response",),
        ),
    ),
    Endpoint(
        name="completions",
        url="/v1/completions",
        schema_file="completions.body.schema.json",
        prompt_field="prompt",
        prompt_in_messages=False,
        system_field=None,
        max_tokens_field="max_tokens",
        max_tokens_required=False,
        stop_field="stop",
        sampling=True,
        json_schema_field=None,
        image_part=None,
        reasoning_effort=None,
        refused_reasoning=(
            "reasoning_effort",
            "reasoning",
            "thinking",
            "thinking_token_budget",
            "chat_template_kwargs",
        ),
        reasoning_message=(
            "Parameter '{field}' is not supported by /v1/completions. Use /v1/chat/completions or /v1/responses."
        ),
        fast_paths=(("prompt", "text_input"),),
        answer=AnswerFields(
            text=((*_CHAT_CHOICE, "text"),),
            reasoning=((*_CHAT_CHOICE, "reasoning_content"),),
            finish_reason=((*_CHAT_CHOICE, "finish_reason"),),
            truncated_when=frozenset({"length"}),
            objects=("text_completion",),
        ),
    ),
    Endpoint(
        name="messages",
        url="/v1/messages",
        schema_file="messages.body.schema.json",
        prompt_field="messages",
        prompt_in_messages=True,
        system_field="system",
        max_tokens_field="max_tokens",
        max_tokens_required=True,
        stop_field="stop_sequences",
        sampling=True,
        json_schema_field=None,
        image_part="image",  # {"type": "image", "source": {"type": "base64"|"url", ...}}
        reasoning_effort=None,  # Anthropic's own "thinking" object; the server's effort rules do not cover it
        refused_reasoning=(),
        reasoning_message="use the Anthropic 'thinking' object on /v1/messages",
        fast_paths=(("messages", "anthropic_messages"), ("system", "string")),
        answer=AnswerFields(
            text=(("content", Each("text"), "text"),),
            reasoning=(("content", Each("thinking"), "thinking"),),
            tool_calls=(("content", Each("tool_use")),),
            finish_reason=(("stop_reason",),),
            truncated_when=frozenset({"max_tokens"}),
            objects=("message",),
        ),
    ),
)

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in _TABLE}
_BY_URL: dict[str, Endpoint] = {e.url: e for e in _TABLE}
_BY_OBJECT: dict[str, Endpoint] = {o: e for e in _TABLE for o in e.answer.objects}


def endpoint_for_url(url: Any) -> Endpoint | None:
    """The endpoint of a batchable path (``/v1/chat/completions``), or None for anything else."""
    return _BY_URL.get(url) if isinstance(url, str) else None


def endpoint_named(name_or_url: str) -> Endpoint:
    """``chat`` or ``/v1/chat/completions`` -> the chat endpoint; a usage error for anything else."""
    found = ENDPOINTS.get(name_or_url) or _BY_URL.get(name_or_url)
    if found is None:
        raise UsageError(f"unknown endpoint {name_or_url!r}; use one of {', '.join(ENDPOINTS)}")
    return found


def endpoint_for_body(body: Any) -> Endpoint | None:
    """The endpoint whose answer ``body`` is (by its ``object``, or ``type`` for Anthropic), or None."""
    if not isinstance(body, dict):
        return None
    kind = body.get("object")
    if not isinstance(kind, str):
        kind = body.get("type")
    return _BY_OBJECT.get(kind) if isinstance(kind, str) else None


# --------------------------------------------------------------------------- reading answers


def pick(value: Any, path: Path) -> list[Any]:
    """Every value found at ``path`` inside ``value`` (missing keys, short lists, wrong types: skipped)."""
    found = [value]
    for step in path:
        nxt: list[Any] = []
        for item in found:
            if isinstance(step, Each):
                if isinstance(item, list):
                    nxt.extend(
                        x
                        for x in item
                        if step.type is None or (isinstance(x, dict) and x.get("type") == step.type)
                    )
            elif isinstance(step, str):
                if isinstance(item, dict) and step in item:
                    nxt.append(item[step])
            elif isinstance(item, list) and -len(item) <= step < len(item):
                nxt.append(item[step])
        found = nxt
        if not found:
            break
    return found


def _first(body: Any, paths: tuple[Path, ...]) -> list[Any] | None:
    for path in paths:
        found = [v for v in pick(body, path) if v is not None]
        if found:
            return found
    return None


def _text(values: list[Any] | None) -> str | None:
    """Text values joined; a chat content list contributes its text parts."""
    if values is None:
        return None
    parts: list[str] = []
    for value in values:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(
                str(p.get("text", ""))
                for p in value
                if isinstance(p, dict) and p.get("type") in ("text", "output_text")
            )
        else:
            parts.append(str(value))
    return "".join(parts)


@dataclass(frozen=True)
class Answer:
    """What one response body answered (None where the endpoint or the body has nothing)."""

    text: str | None
    reasoning: str | None
    tool_calls: list[Any] | None
    finish_reason: str | None
    truncated: bool
    embedding: Any  # one vector, or a list of vectors for a list input
    usage: Any


def read_answer(endpoint: Endpoint, body: Any) -> Answer:
    """The answer fields of one response body (``line["response"]["body"]``, already a dict)."""
    fields = endpoint.answer
    finish = _first(body, fields.finish_reason)
    finish_reason = str(finish[0]) if finish else None
    tools = _first(body, fields.tool_calls)
    if tools is not None and len(tools) == 1 and isinstance(tools[0], list):
        tools = tools[0]  # chat: the message's tool_calls list itself
    embedding = _first(body, fields.embedding)
    if embedding is not None and len(embedding) == 1:
        embedding = embedding[0]
    usage = pick(body, fields.usage)
    return Answer(
        text=_text(_first(body, fields.text)),
        reasoning=_text(_first(body, fields.reasoning)),
        tool_calls=tools or None,
        finish_reason=finish_reason,
        truncated=finish_reason in fields.truncated_when,
        embedding=embedding,
        usage=usage[0] if usage else None,
    )
