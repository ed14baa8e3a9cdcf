"""JSON Schemas for structured answers, shared by the tests that check parsed output."""

from __future__ import annotations

# A sentiment label and a score: the answer a classification job asks for (enum and type errors testable).
SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "number"},
    },
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}
