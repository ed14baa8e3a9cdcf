"""One answer, endpoint-neutral: reasoning (for reasoning models), then a text, a JSON value valid for the
requested schema, or tool calls valid for the tool's parameters; the output-token budget spent in that
order (`finish` `length` when it runs out), stop sequences, and the optional sloppiness of real models."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from ..catalog import DEFAULT_EFFORT, IMAGE_TOKENS, REASONING_TOKENS, Catalog, is_vision_model
from .prompt import Prompt, budget_of, cut, read_prompt, tokens
from .schema_values import Unsatisfiable, value_for

MAX_REPLY_CHARS = 2000
SLOPPY_KINDS = ("fence", "prose", "long")
# a sloppy model's answer that runs long: this many tokens (by the prompt), whatever the max_tokens
LONG_ANSWER_TOKENS = (300, 800)
RAMBLE = (
    "To put it another way, it depends on the details.",
    "There is more to say about each part of this.",
    "Some background helps here as well.",
    "Each of these points deserves a closer look.",
)
REASONING_STEPS = (
    "First, what exactly is being asked?",
    "The key facts are in the question itself.",
    "Check the constraints before answering.",
    "A short, direct answer fits best.",
    "Make sure the format matches the request.",
)


class ModelError(Exception):
    """The request cannot be answered: an HTTP status and an OpenAI-style message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as the API carries it
    call_id: str


@dataclass
class Completion:
    reasoning: str | None = None  # None: the model did not reason
    content: str | None = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str = "stop"  # stop | length | tool_calls
    prompt_tokens: int = 0
    reasoning_tokens: int = 0
    completion_tokens: int = 0
    structured: bool = False
    stop_sequence: str | None = None  # the stop sequence that ended the text, if one did


def seed_of(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).digest()[:8], "big")


def compose(endpoint: str, body: dict, model: str, catalog: Catalog, sloppy_rate: float) -> Completion:
    """The answer to one chat-like request. Raises ModelError when it cannot be answered."""
    prompt = read_prompt(endpoint, body)
    if prompt.images and not is_vision_model(model):
        raise ModelError(400, f"{model} is not a multimodal model: image input is not supported")
    seed = seed_of(model, prompt.text)
    out = Completion(prompt_tokens=max(1, tokens(prompt.text) + IMAGE_TOKENS * prompt.images))
    effort = effort_of(endpoint, body, model, catalog)
    if effort is not None:
        base = REASONING_TOKENS[effort]
        out.reasoning = reasoning_text(prompt, base + seed % (base // 2 + 1))
    tool = tool_to_call(endpoint, body, prompt, seed)
    if tool is not None:
        name, params = tool
        out.tool_calls = [
            ToolCall(
                name,
                json.dumps(schema_answer(params, prompt, seed, f"tool {name!r}")),
                f"call_{seed:016x}"[:29],
            )
        ]
        out.content, out.finish = None, "tool_calls"
    else:
        out.content, out.structured = answer_text(endpoint, body, model, prompt, seed)
    if sloppy_rate > 0:
        make_sloppy(out, sloppy_rate, seed, prompt)
    spend_budget(out, budget_of(body))
    apply_stop(out, body.get("stop", body.get("stop_sequences")))  # messages: stop_sequences
    out.reasoning_tokens = tokens(out.reasoning or "")
    out.completion_tokens = out.reasoning_tokens + tokens(out.content or "")
    out.completion_tokens += sum(tokens(t.arguments) for t in out.tool_calls)
    return out


def effort_of(endpoint: str, body: dict, model: str, catalog: Catalog) -> str | None:
    """The reasoning effort to use; None when the model does not reason (or was told `none`)."""
    if not catalog.reasons(model) or endpoint == "/completions":
        return None
    if endpoint == "/responses":
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    elif endpoint == "/messages":
        thinking = body.get("thinking")
        effort = "none" if isinstance(thinking, dict) and thinking.get("type") == "disabled" else None
    else:
        effort = body.get("reasoning_effort")
    if not isinstance(effort, str):
        effort = DEFAULT_EFFORT
    allowed = catalog.efforts(model) or ()
    if effort == "none" and "none" in allowed:
        return None
    return effort if effort in REASONING_TOKENS else DEFAULT_EFFORT


def reasoning_text(prompt: Prompt, count: int) -> str:
    """Exactly `count` tokens of thinking about the prompt."""
    text = f"The user asks: {prompt.last_user[:200]}"
    i = 0
    while tokens(text) < count:
        text += " " + REASONING_STEPS[i % len(REASONING_STEPS)]
        i += 1
    return cut(text, count)


def echo(model: str, prompt: Prompt) -> str:
    said = prompt.last_user
    if prompt.after_tool:
        said = "the tool returned " + prompt.text.rsplit("\n", 1)[-1]
    if prompt.images:
        said += f" [{prompt.images} image{'s' if prompt.images > 1 else ''}]"
    return f"Echo from {model}: {said}"[:MAX_REPLY_CHARS]


def response_format(endpoint: str, body: dict) -> dict | None:
    """The requested JSON output format: chat `response_format` or responses `text.format`."""
    fmt = body.get("response_format")
    if endpoint == "/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return fmt
    return None


def answer_text(endpoint: str, body: dict, model: str, prompt: Prompt, seed: int) -> tuple[str, bool]:
    """(text, structured): JSON for a structured-output request, else the echo reply."""
    fmt = response_format(endpoint, body) if endpoint in ("/chat/completions", "/responses") else None
    if fmt is None:
        return echo(model, prompt), False
    if fmt["type"] == "json_object":
        return json.dumps({"answer": echo(model, prompt)}, ensure_ascii=False), True
    spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
    schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
    return json.dumps(schema_answer(schema, prompt, seed, "response_format"), ensure_ascii=False), True


def schema_answer(schema: object, prompt: Prompt, seed: int, what: str) -> object:
    try:
        return value_for(schema, prompt.last_user.split() or prompt.text.split(), seed)
    except Unsatisfiable as exc:
        raise ModelError(400, f"The {what} schema cannot be satisfied: {exc}") from exc


JSON_KINDS = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (object, "an object"),
)


def tool_to_call(endpoint: str, body: dict, prompt: Prompt, seed: int) -> tuple[str, object] | None:
    """(name, parameter schema) of the tool the model calls, or None to answer in words."""
    given = body.get("tools")
    if given is not None and not isinstance(given, list):
        kind = next(k for t, k in JSON_KINDS if isinstance(given, t))
        raise ModelError(400, f"Invalid type for 'tools': expected an array, but got {kind} instead.")
    tools = [t for t in (tool_spec(t) for t in given or []) if t is not None]
    if not tools:
        return None
    choice = body.get("tool_choice", "auto")
    forced = None
    if isinstance(choice, dict):
        kind = choice.get("type")
        fn = choice.get("function")
        forced = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        choice = "required" if kind in ("function", "tool", "any") else "auto"
    if choice == "none" or (choice == "auto" and prompt.after_tool):
        return None
    if forced is not None:
        return next(((n, p) for n, p in tools if n == forced), None)
    said = prompt.last_user.lower()
    named = [(n, p) for n, p in tools if n.lower() in said or n.lower().replace("_", " ") in said]
    return named[0] if named else tools[seed % len(tools)]


def tool_spec(tool: object) -> tuple[str, object] | None:
    """(name, parameters) of a tool in the chat, responses or messages shape."""
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = fn.get("name")
    if not isinstance(name, str):
        return None
    params = fn.get("parameters", fn.get("input_schema", {"type": "object", "properties": {}}))
    return name, params


def make_sloppy(out: Completion, rate: float, seed: int, prompt: Prompt) -> None:
    """What real models do now and then: a code fence around JSON, prose instead of JSON, or an answer
    that runs long (LONG_ANSWER_TOKENS, by the prompt alone): a max_tokens below its length cuts it
    (finish `length`, in spend_budget), a larger one gets it whole, as a real model's would be."""
    rng = random.Random(seed ^ 0x5107)
    if out.content is None or rng.random() >= rate:
        return
    kind = rng.choice(SLOPPY_KINDS if out.structured else ("long",))
    if kind == "fence":
        out.content = f"```json\n{out.content}\n```"
    elif kind == "prose":
        out.content = f"Sure! Here is what I found about {prompt.last_user[:80]}: it depends on the details."
    else:
        out.content = run_long(out.content, out.structured, rng.randint(*LONG_ANSWER_TOKENS))


def run_long(content: str, structured: bool, length: int) -> str:
    """The answer grown to `length` tokens: text goes on in more sentences; JSON is followed by blank lines
    (what JSON-mode decoding does when it will not stop), so that, once whole, it still parses."""
    if structured:
        return content + "\n" * max(0, length * 4 - len(content))
    parts, i = [content], 0
    while tokens(" ".join(parts)) < length:
        parts.append(RAMBLE[i % len(RAMBLE)])
        i += 1
    return cut(" ".join(parts), length)


def spend_budget(out: Completion, budget: int | None) -> None:
    """Reasoning first, then the answer: whatever does not fit is cut and `finish` becomes `length`."""
    if budget is None:
        return
    if out.reasoning is not None:
        if tokens(out.reasoning) >= budget:
            out.reasoning = cut(out.reasoning, budget)
            if out.content is not None or out.tool_calls:
                out.content, out.tool_calls, out.finish = "", [], "length"
            return
        budget -= tokens(out.reasoning)
    if out.content is not None and tokens(out.content) > budget:
        out.content, out.finish = cut(out.content, budget), "length"
    for call in out.tool_calls:
        if tokens(call.arguments) > budget:
            call.arguments, out.finish = cut(call.arguments, budget), "length"
        budget -= tokens(call.arguments)


def apply_stop(out: Completion, stop: object) -> None:
    """The text ends before the first stop sequence it holds (the sequence is not included)."""
    if out.content is None or out.structured or not stop:
        return
    if isinstance(stop, str):
        stops = [stop]
    else:
        stops = [s for s in stop if isinstance(s, str) and s] if isinstance(stop, list) else []
    hits = [(i, s) for i, s in ((out.content.find(s), s) for s in stops) if i >= 0]
    if hits:
        at, out.stop_sequence = min(hits)
        out.content, out.finish = out.content[:at], "stop"
