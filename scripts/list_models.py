#!/usr/bin/env python3
"""List the models the API key may use, with the reasoning efforts each accepts where the server says."""

from __future__ import annotations

import sys
from typing import Any

from doubleword.cli import make_parser, run, summary
from doubleword.client import client_from_args
from doubleword.errors import ExitCode, ServiceError

EXAMPLES = """\
  python3 scripts/list_models.py
  python3 scripts/list_models.py | python3 -c 'import json,sys; print([m["id"] for m in json.load(sys.stdin)["models"]])'"""

DESCRIPTION = """\
List the models your key may use (GET /models), sorted by id. Each model's reasoning_efforts lists the
values its requests may give in reasoning_effort (chat) or reasoning.effort (responses), as the server
reports them (include_reasoning_capabilities=true); null where the server does not say.
An unknown model rejects a whole upload: pick one from this list.

stdout: {"ok", "count", "models": [{"id", "reasoning_efforts", "owned_by", "created"}]}."""


def build_parser() -> Any:
    return make_parser(
        "list_models.py",
        DESCRIPTION,
        EXAMPLES,
        exit_codes=(ExitCode.OK, ExitCode.AUTH, ExitCode.INVALID_INPUT, ExitCode.SERVICE),
    )


def model_entry(raw: Any) -> dict[str, Any]:
    """One model as listed: its id and, where the server lists them, its reasoning efforts."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ServiceError(f"GET /models: the server listed a model that has no id: {str(raw)[:200]!r}")
    efforts = raw.get("supported_reasoning_efforts")
    if isinstance(efforts, list):
        efforts = [str(e) for e in efforts]
    else:
        efforts = None
    owner = raw.get("owned_by")
    return {
        "id": raw["id"],
        "reasoning_efforts": efforts,
        "owned_by": None if owner == "None" else owner,  # Doubleword sends the string "None" for no owner
        "created": raw.get("created"),
    }


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    client = client_from_args(args)
    body = client.get_json("models", params={"include_reasoning_capabilities": "true"})
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ServiceError(f"GET /models: the reply has no list of models: {str(body)[:200]!r}")
    models = sorted((model_entry(m) for m in data), key=lambda m: m["id"])
    with_efforts = sum(1 for m in models if m["reasoning_efforts"])
    unknown = sum(1 for m in models if m["reasoning_efforts"] is None)
    summary(
        f"{len(models)} models available, {with_efforts} of them take a reasoning effort"
        + (f" ({unknown} the server says nothing about)" if unknown else "")
    )
    return {"ok": True, "count": len(models), "models": models}, int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(run(main))
