"""a served line with bytes that are not UTF-8 is still an answer (never resubmitted)."""

from __future__ import annotations

import json

from doubleword.results import join


def test_output_line_with_invalid_utf8_is_completed_not_missing(tmp_path):
    inputs = tmp_path / "in.jsonl"
    reqs = [{"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": {}} for c in "ab"]
    inputs.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    out, errs = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    good = {
        "id": "batch_req_1",
        "custom_id": "a",
        "response": {"status_code": 200, "body": {}},
        "error": None,
    }
    bad = (
        json.dumps(
            {
                "id": "batch_req_2",
                "custom_id": "b",
                "error": None,
                "response": {"status_code": 200, "body": {"choices": [{"message": {"content": "caf@"}}]}},
            }
        )
        .encode()
        .replace(b"caf@", b"caf\xe9")
    )  # Latin-1 from a sloppy server
    out.write_bytes(json.dumps(good).encode() + b"\n" + bad + b"\n")
    errs.write_bytes(b"")
    summary = join([("B1", inputs, True)], out, errs, tmp_path / "results.jsonl", tmp_path / "retry.jsonl")
    assert summary["counts"]["completed"] == 2, summary
    assert (tmp_path / "retry.jsonl").read_bytes() == b""
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert results[1]["content"].startswith("caf")
