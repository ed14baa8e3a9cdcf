"""How served lines become results: Doubleword and OpenAI shapes, every endpoint's text, errors parsed."""

from __future__ import annotations

import json

from doubleword.results import extract, join, line_status, normalise_error, usage_tokens

DW_ERROR = {
    "id": "batch_req_1",
    "custom_id": "a",
    "response": None,
    "error": {
        "code": None,
        "message": json.dumps(
            {
                "type": "NonRetriableHttpStatus",
                "details": {"status": 400, "body": json.dumps({"error": {"message": "bad temperature"}})},
            }
        ),
    },
}
OPENAI_FAILED = {
    "id": "batch_req_2",
    "custom_id": "b",
    "response": {"status_code": 429, "body": {"error": {"message": "slow down", "type": "rate_limit_error"}}},
    "error": None,
}
OPENAI_EXPIRED = {
    "id": "batch_req_3",
    "custom_id": "c",
    "response": None,
    "error": {"code": "batch_expired", "message": "x"},
}


def _ok(body):
    return {
        "id": "batch_req_9",
        "custom_id": "z",
        "response": {"status_code": 200, "body": body},
        "error": None,
    }


def test_doubleword_error_message_is_parsed():
    assert line_status(DW_ERROR) == "failed"
    err = normalise_error(DW_ERROR)
    assert err == {
        "type": "NonRetriableHttpStatus",
        "code": None,
        "status": 400,
        "message": "bad temperature",
    }


def test_unparsable_and_free_text_errors_fall_back_to_raw_text():
    line = {
        "custom_id": "a",
        "response": None,
        "error": {"code": None, "message": "Upstream returned 500: boom"},
    }
    assert normalise_error(line)["message"] == "Upstream returned 500: boom"
    assert normalise_error({"custom_id": "a", "response": None, "error": None})["type"] == "no_response"


def test_openai_shapes():
    assert line_status(OPENAI_FAILED) == "failed"
    err = normalise_error(OPENAI_FAILED)
    assert err["type"] == "rate_limit_error" and err["status"] == 429 and err["message"] == "slow down"
    assert line_status(OPENAI_EXPIRED) == "missing"  # not run, not a model failure
    assert normalise_error(OPENAI_EXPIRED)["type"] == "batch_expired"


def test_text_of_every_endpoint():
    chat = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {"prompt_tokens": 2}}
    assert extract(_ok(chat))["content"] == "hi"
    assert extract(_ok({"choices": [{"text": "done"}]}))["content"] == "done"
    responses = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "r"}]}]}
    assert extract(_ok(responses))["content"] == "r"
    messages = {"type": "message", "content": [{"type": "text", "text": "m"}], "usage": {"input_tokens": 3}}
    assert extract(_ok(messages))["content"] == "m"
    assert extract(_ok({"data": [{"embedding": [0.1, 0.2]}]}))["embedding"] == [0.1, 0.2]
    assert extract(_ok("not json"))["content"] == "not json"
    assert usage_tokens({"input_tokens": 3, "output_tokens": 4}) == (3, 4, 7)


def test_join_order_precedence_and_retry(tmp_path):
    inputs = tmp_path / "in.jsonl"
    reqs = [{"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": {}} for c in "abcd"]
    inputs.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    out, errs = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    chat = {"choices": [{"message": {"content": "retried fine"}}]}
    out.write_text(json.dumps(dict(_ok(chat), custom_id="a")) + "\n")
    # "a" failed first and then succeeded after a retry: the success wins
    errs.write_text(
        json.dumps(dict(DW_ERROR, custom_id="a")) + "\n" + json.dumps(dict(DW_ERROR, custom_id="b")) + "\n"
    )
    summary = join([("B1", inputs, True)], out, errs, tmp_path / "results.jsonl", tmp_path / "retry.jsonl")
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["custom_id"], r["status"]) for r in results] == [
        ("a", "completed"),
        ("b", "failed"),
        ("c", "missing"),
        ("d", "missing"),
    ]
    assert summary["counts"]["completed"] == 1 and summary["failures_by_type"]["NonRetriableHttpStatus"] == 1
    retry = [json.loads(x)["custom_id"] for x in (tmp_path / "retry.jsonl").read_text().splitlines()]
    assert retry == ["b", "c", "d"]
    # while the batch still runs, unanswered requests are pending and not offered for retry
    join([("B1", inputs, False)], out, errs, tmp_path / "results.jsonl", tmp_path / "retry.jsonl")
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results][2:] == ["pending", "pending"]
