"""Embeddings of the model's real size (4096 for Qwen/Qwen3-Embedding-8B), `dimensions` honoured,
deterministic unit vectors derived from the input, as floats or base64 (`encoding_format`)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct

from ..catalog import MIN_EMBEDDING_DIMENSIONS, embedding_dimensions, is_embedding_model
from .compose import ModelError
from .prompt import tokens


def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector: sha256 blocks of the input read as signed bytes, normalised."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(math.ceil(dims / 32)))
    vals = [b - 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [round(v / norm, 6) for v in vals]


def inputs_of(body: dict) -> list:
    inp = body.get("input")
    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        return [inp]
    if isinstance(inp, list) and inp:
        return inp
    raise ModelError(400, "'input' must be a non-empty string or array")


def dimensions_of(body: dict, model: str) -> int:
    native = embedding_dimensions(model)
    dims = body.get("dimensions", native)
    if not isinstance(dims, int) or isinstance(dims, bool):
        raise ModelError(400, "'dimensions' must be an integer")
    if not MIN_EMBEDDING_DIMENSIONS <= dims <= native:
        raise ModelError(
            400, f"dimensions {dims} is not supported by {model}: use {MIN_EMBEDDING_DIMENSIONS} to {native}"
        )
    return dims


def embeddings(body: dict, model: str) -> tuple[dict, int]:
    """(response body, prompt tokens)."""
    if not is_embedding_model(model):
        raise ModelError(400, f"Model '{model}' does not support embeddings")
    dims = dimensions_of(body, model)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    pt = 0
    for i, item in enumerate(inputs_of(body)):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        pt += max(1, tokens(text))
        vec = vector(text, dims)
        emb: object = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    resp = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": pt, "total_tokens": pt},
    }
    return resp, pt
