"""Answers ready to use: against a hand-made server serving one finished batch, every kind of answer gets
the right status, finish_reason, reasoning, parsed and tool_calls; only the unusable ones are resubmitted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from answer_schemas import SENTIMENT
from scripted_server import ScriptedServer, Seen

BATCH = "5f0e1c2a-0000-4000-8000-000000000001"
INPUT, OUTPUT, ERRORS = (f"5f0e1c2a-0000-4000-8000-00000000000{i}" for i in (2, 3, 4))
MODEL = "Qwen/Qwen3.5-9B"
SCHEMA = SENTIMENT


def _request(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": f"question {custom_id}"}], **body},
    }


JSON_SCHEMA = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA}}
}
TOOLS = {
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
}
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # custom_id, request body extras, the answer's message and finish reason, expected status
    ("plain", {}, {"message": {"content": "Paris."}, "finish_reason": "stop"}, "completed"),
    (
        "cut",
        {"max_tokens": 5},
        {"message": {"content": "The capital of"}, "finish_reason": "length"},
        "truncated",
    ),
    (
        "reasoned",
        {"reasoning_effort": "low"},
        {"message": {"content": "42", "reasoning_content": "Six times seven."}, "finish_reason": "stop"},
        "completed",
    ),
    (
        "empty-reasoned",
        {"max_tokens": 16},
        {"message": {"content": "", "reasoning_content": "Let me think about"}, "finish_reason": "length"},
        "truncated",
    ),
    (
        "json-valid",
        JSON_SCHEMA,
        {"message": {"content": '{"sentiment": "positive", "score": 0.9}'}, "finish_reason": "stop"},
        "completed",
    ),
    (
        "json-fenced",
        JSON_SCHEMA,
        {
            "message": {"content": '```json\n{"sentiment": "negative", "score": 0.2}\n```'},
            "finish_reason": "stop",
        },
        "completed",
    ),
    (
        "json-enum",
        JSON_SCHEMA,
        {"message": {"content": '{"sentiment": "angry", "score": 0.5}'}, "finish_reason": "stop"},
        "invalid",
    ),
    (
        "json-prose",
        JSON_SCHEMA,
        {"message": {"content": "I think it is positive."}, "finish_reason": "stop"},
        "invalid",
    ),
    (
        "json-object",
        {"response_format": {"type": "json_object"}},
        {"message": {"content": '{"city": "Paris"}'}, "finish_reason": "stop"},
        "completed",
    ),
    (
        "tool",
        TOOLS,
        {
            "message": {
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        },
        "completed",
    ),
]


def _output_line(i: int, custom_id: str, choice: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", **choice["message"]}
    body = {
        "choices": [
            {"finish_reason": choice["finish_reason"], "index": 0, "logprobs": None, "message": message}
        ],
        "id": f"chatcmpl-{i}",
        "model": MODEL,
        "object": "chat.completion",
        "usage": {"completion_tokens": 7, "prompt_tokens": 5, "total_tokens": 12},
    }
    return {
        "id": f"batch_req_00000000-0000-4000-8000-{i:012d}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": None, "body": body},
        "error": None,
    }


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _server() -> ScriptedServer:
    inputs = [_request(c, **extra) for c, extra, _, _ in CASES]
    outputs = [_output_line(i, c, choice) for i, (c, _, choice, _) in enumerate(CASES)]
    files = {INPUT: _ndjson(inputs), OUTPUT: _ndjson(outputs), ERRORS: b""}
    batch = {
        "id": BATCH,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": INPUT,
        "output_file_id": OUTPUT,
        "error_file_id": ERRORS,
        "status": "completed",
        "created_at": 1767225600,
        "completed_at": 1767225700,
        "request_counts": {"total": len(CASES), "completed": len(CASES), "failed": 0},
    }

    def reply(seen: Seen) -> tuple[int, dict[str, str], bytes | str]:
        if seen.path == f"/v1/batches/{BATCH}":
            return 200, {"Content-Type": "application/json"}, json.dumps(batch)
        for file_id, data in files.items():
            if seen.path == f"/v1/files/{file_id}/content":
                skip = int(dict(p.split("=") for p in seen.query.split("&") if p).get("skip", 0))
                lines = data.splitlines(keepends=True)[skip:]
                headers = {"Content-Type": "application/x-ndjson", "X-Incomplete": "false"}
                if file_id != INPUT:
                    headers["X-Last-Line"] = str(skip + len(lines))
                return 200, headers, b"".join(lines)
        return 404, {}, "not found"

    return ScriptedServer(reply)


@pytest.mark.parametrize(
    "pure_json", ["0", "1"]
)  # with the optional orjson accelerator (if installed), without
def test_every_kind_of_answer_gets_its_status_and_only_unusable_ones_are_resubmitted(tmp_path, h, pure_json):
    with _server() as server:
        out = tmp_path / "out"
        env = h.script_env(server.base_url, DOUBLEWORD_PURE_JSON=pure_json)
        code, doc, err = h.run_script("fetch_results", BATCH, "--out", str(out), env=env)
        seen = list(server.seen)
    assert code == 6 and doc["complete"] is False, (code, doc, err)
    assert all("offset=" not in s.query for s in seen)
    results = h.read_jsonl(out / "results.jsonl")
    keys = {
        "custom_id", "status", "content", "parsed", "reasoning", "tool_calls", "finish_reason",
        "embedding", "usage", "error", "attempts", "batch_id", "line_id", "model",
    }  # fmt: skip
    assert all(set(r) == keys for r in results)
    assert [r["custom_id"] for r in results] == [c for c, _, _, _ in CASES]
    by_id = {r["custom_id"]: r for r in results}
    assert {c: by_id[c]["status"] for c, _, _, _ in CASES} == {c: want for c, _, _, want in CASES}

    assert by_id["plain"]["content"] == "Paris." and by_id["plain"]["finish_reason"] == "stop"
    assert by_id["plain"]["parsed"] is None and by_id["plain"]["error"] is None
    assert by_id["cut"]["finish_reason"] == "length" and by_id["cut"]["content"] == "The capital of"
    assert by_id["reasoned"]["reasoning"] == "Six times seven." and by_id["reasoned"]["content"] == "42"
    empty = by_id["empty-reasoned"]
    assert empty["reasoning"] == "Let me think about" and empty["finish_reason"] == "length"
    assert "reasoning used the whole" in empty["error"]["message"]
    assert by_id["json-valid"]["parsed"] == {"sentiment": "positive", "score": 0.9}
    assert by_id["json-fenced"]["parsed"] == {"sentiment": "negative", "score": 0.2}
    enum_error = by_id["json-enum"]["error"]
    assert by_id["json-enum"]["parsed"] is None and enum_error["path"] == "$.sentiment"
    assert "angry" in enum_error["message"]
    assert (
        by_id["json-prose"]["parsed"] is None and "not valid JSON" in by_id["json-prose"]["error"]["message"]
    )
    assert by_id["json-object"]["parsed"] == {"city": "Paris"}
    tool = by_id["tool"]
    assert tool["finish_reason"] == "tool_calls" and tool["tool_calls"][0]["function"]["name"] == "lookup"
    assert all(r["attempts"] == 1 and r["batch_id"] == BATCH and r["model"] == MODEL for r in results)
    assert all(r["line_id"].startswith("batch_req_") for r in results)

    retry = h.read_jsonl(out / "retry.jsonl")
    assert [r["custom_id"] for r in retry] == ["cut", "empty-reasoned", "json-enum", "json-prose"]
    assert retry[0] == _request("cut", max_tokens=5)  # the original request line, ready to resubmit
    counts = doc["counts"]
    assert counts == {
        "requests": 10,
        "completed": 6,
        "failed": 0,
        "truncated": 2,
        "invalid": 2,
        "pending": 0,
        "missing": 0,
    }
    assert doc["examples"]["truncated"]["custom_id"] == "cut"
    assert doc["examples"]["invalid"]["custom_id"] == "json-enum"
    assert {(g["type"], g["resubmit"]) for g in doc["failure_groups"]} == {
        ("truncated", "yes"),
        ("invalid_json", "maybe"),
    }
