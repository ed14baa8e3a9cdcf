"""a served line with bytes that are not UTF-8 is still an answer (never resubmitted)."""

from __future__ import annotations

import json

from doubleword.answers import encode_line


def test_output_line_with_invalid_utf8_is_completed_not_missing():
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
    encoded = encode_line(bad, "B1", None)
    assert encoded is not None
    line_id, custom_id, status, *_, record = encoded
    assert (line_id, custom_id, status) == ("batch_req_2", "b", "completed")
    assert json.loads(record)["content"].startswith("caf")
