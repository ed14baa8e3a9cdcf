"""The server's reasoning-parameter rules, checked on every line at upload and on realtime requests,
for every model (references/api_reference.md section 3): only the effort controls reasoning
(`reasoning_effort` on chat, `reasoning.effort` on responses); the fields other backends use are
refused with the server's exact texts."""

from __future__ import annotations

from .catalog import EFFORTS, Catalog

TEMPLATE_FIELDS = (
    "chat_template_kwargs.thinking",
    "chat_template_kwargs.enable_thinking",
    "chat_template_kwargs",
)
REFUSED = {
    "/v1/chat/completions": (
        (*TEMPLATE_FIELDS, "thinking", "thinking_token_budget", "reasoning"),
        "Unsupported parameter '{}'; use 'reasoning_effort'.",
    ),
    "/v1/responses": (
        (*TEMPLATE_FIELDS, "thinking", "thinking_token_budget", "reasoning_effort"),
        "Unsupported parameter '{}'; use 'reasoning.effort'.",
    ),
    "/v1/completions": (
        ("reasoning_effort", "reasoning", "thinking", "thinking_token_budget", "chat_template_kwargs"),
        "Parameter '{}' is not supported by /v1/completions. Use /v1/chat/completions or /v1/responses.",
    ),
}

# The top-level keys of those fields: a body with none of them (nearly every line) breaks no rule of them.
TOP_KEYS = {url: frozenset(name.split(".")[0] for name in fields) for url, (fields, _) in REFUSED.items()}


def present(body: dict, dotted: str) -> bool:
    node: object = body
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def reasoning_problem(url: str, body: dict, catalog: Catalog) -> str | None:
    """The server's message for the first reasoning rule the body breaks, else None."""
    fields, text = REFUSED.get(url, ((), ""))
    if not TOP_KEYS.get(url, frozenset()).isdisjoint(body):
        for name in fields:
            if present(body, name):
                return text.format(name)
    if url == "/v1/chat/completions" and "reasoning_effort" in body:
        return effort_problem("reasoning_effort", body["reasoning_effort"], body.get("model"), catalog)
    if url == "/v1/responses" and "reasoning" in body:
        reasoning = body["reasoning"]
        if not isinstance(reasoning, dict):
            return "Invalid type for 'reasoning'. Expected an object."
        if "effort" in reasoning:
            return effort_problem("reasoning.effort", reasoning["effort"], body.get("model"), catalog)
    return None


def effort_problem(param: str, effort: object, model: object, catalog: Catalog) -> str | None:
    if effort is None:
        return None
    if not isinstance(effort, str):
        return f"Invalid type for '{param}'. Expected a string."
    allowed = catalog.efforts(model) if isinstance(model, str) else None
    supported = allowed if allowed is not None else EFFORTS
    if effort not in supported:
        return f"Reasoning effort '{effort}' is not supported by this provider. Supported values: {', '.join(supported)}."
    return None
