"""The upload response and every upload check with its exact text and status (references/api_reference.md
sections 3 and 4)."""

from __future__ import annotations

import json

import pytest
from conftest import CHAT, EMBED, chat_line, embed_line, jsonl
from emulator_server import EmulatorServer


def file_ids(api) -> set[str]:
    return {f["id"] for f in api.get("/files", params={"limit": 101}).json()["data"]}


def test_upload_response_shape(api):
    content = jsonl([chat_line(1), chat_line(2)])
    r = api.upload(content, "my jobs.jsonl")
    assert r.status_code == 201
    f = r.json()
    assert set(f) == {"id", "object", "bytes", "created_at", "filename", "purpose", "expires_at"}
    assert f["object"] == "file" and f["bytes"] == len(content.encode())
    assert f["filename"] == "my jobs.jsonl" and f["purpose"] == "batch"
    assert f["expires_at"] == f["created_at"] + 2592000
    assert len(f["id"]) == 36 and f["id"] == f["id"].lower()
    full = api.get(f"/files/{f['id']}").json()
    assert full["context_type"] == "personal" and "created_by_email" in full


def test_upload_purpose_and_expiry_variants(api):
    r = api.upload(jsonl([chat_line(1)]), purpose="Batch")
    assert r.status_code == 201 and r.json()["purpose"] == "batch"  # shown lower case, whatever the case sent
    r = api.upload(jsonl([chat_line(1)]), purpose=None)
    assert r.status_code == 201 and r.json()["purpose"] == "batch"
    r = api.post(
        "/files",
        files={"file": ("x.jsonl", jsonl([chat_line(1)]))},
        data={"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    )
    assert r.json()["expires_at"] == r.json()["created_at"] + 3600
    # no filename in the part -> upload-<uuid>
    r = api.post("/files", files={"file": (None, jsonl([chat_line(1)]))}, data={"purpose": "batch"})
    if r.status_code == 400:  # requests sends a non-file part without filename: no `file` part at all
        assert r.text == "No file field found in multipart upload"
    else:
        assert r.json()["filename"].startswith("upload-")


LONG_ID = "x" * 65
BAD_CASES = [
    (
        {"purpose": "fine-tune"},
        jsonl([chat_line(1)]),
        400,
        "Invalid purpose 'fine-tune'. Only 'batch' is supported.",
    ),
    (
        None,
        jsonl([chat_line(1)]).encode() + b"\n" + b'{"a":"\xff"}\n',
        400,
        f"File contains invalid UTF-8 on/near line 2 at byte offset {len(jsonl([chat_line(1)])) + 7}: ",
    ),
    (None, "not json\n", 400, "Invalid JSON on line 1: expected value at line 1 column 1"),
    (
        None,
        '{"method":"POST","url":"/v1/chat/completions","body":{}}\n',
        400,
        "Invalid JSON on line 1: missing field `custom_id` at line 1 column",
    ),
    (
        None,
        jsonl([{**chat_line(1), "custom_id": LONG_ID}]),
        400,
        "Line 1: custom_id exceeds maximum length of 64 characters (got 65)",
    ),
    (
        None,
        jsonl([{**chat_line(1), "custom_id": "a\u0001b"}]),
        400,
        "Line 1: custom_id contains invalid characters: must be valid ASCII without control characters",
    ),
    (
        None,
        jsonl([{**chat_line(1), "method": "GET"}]),
        400,
        "Line 1: Unsupported HTTP method 'GET'. Only POST is currently supported.",
    ),
    (
        None,
        jsonl([{**chat_line(1), "url": "/v1/chat/completions?x=1"}]),
        400,
        "Line 1: Unsupported URL path '/v1/chat/completions?x=1'. Allowed paths are: /v1/chat/completions, "
        "/v1/completions, /v1/embeddings, /v1/responses, /v1/messages",
    ),
    (
        None,
        jsonl([{**chat_line(1), "body": {"messages": []}}]),
        400,
        "Line 1: Missing 'model' field in request body",
    ),
    (None, jsonl([{**chat_line(1), "body": "text"}]), 400, "Line 1: Missing 'model' field in request body"),
    (
        None,
        jsonl([chat_line(1, model="gpt-4o")]),
        403,
        "Line 1: Model 'gpt-4o' has not been configured or is not available to user",
    ),
    (
        None,
        jsonl([{**embed_line(1), "url": "/v1/chat/completions"}]),
        400,
        f"Line 1: Model '{EMBED}' is a EMBEDDINGS model but endpoint '/v1/chat/completions' requires a CHAT model",
    ),
    (
        None,
        jsonl([{**chat_line(1), "url": "/v1/embeddings"}]),
        400,
        f"Line 1: Model '{CHAT}' is a CHAT model but endpoint '/v1/embeddings' requires a EMBEDDINGS model",
    ),
    (None, "\n\n  \n", 400, "File contains no valid request templates"),
    (None, "", 400, "File contains no valid request templates"),
]


@pytest.mark.parametrize("data,content,status,text", BAD_CASES)
def test_upload_checks_exact_texts_and_all_or_nothing(api, data, content, status, text):
    before = file_ids(api)
    if data is None:
        r = api.post("/files", files={"file": ("bad.jsonl", content)}, data={"purpose": "batch"})
    else:
        r = api.post("/files", files={"file": ("bad.jsonl", content)}, data=data)
    assert r.status_code == status
    assert r.text.startswith(text), r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    assert file_ids(api) == before


def test_bad_line_later_in_file_rejects_everything(api):
    before = file_ids(api)
    lines = [chat_line(i) for i in range(50)] + [{**chat_line(50), "method": "PUT"}]
    r = api.upload(jsonl(lines))
    assert (r.status_code, r.text) == (
        400,
        "Line 51: Unsupported HTTP method 'PUT'. Only POST is currently supported.",
    )
    assert file_ids(api) == before


def test_not_multipart_and_no_file_field(api):
    r = api.post("/files", data=b"hello", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and r.text.startswith("Invalid multipart request: ")
    r = api.post("/files", files={"purpose": (None, "batch")})
    assert (r.status_code, r.text) == (400, "No file field found in multipart upload")


def test_line_numbers_count_non_blank_lines(api):
    content = "\n\n" + json.dumps(chat_line(1)) + "\r\n\n" + json.dumps({**chat_line(2), "method": "GET"})
    r = api.upload(content)
    assert r.text == "Line 2: Unsupported HTTP method 'GET'. Only POST is currently supported."


def test_crlf_blank_lines_and_missing_final_newline(api):
    content = "\r\n" + json.dumps(chat_line(1)) + "\r\n\r\n   \n" + json.dumps(chat_line(2))
    r = api.upload(content)
    assert r.status_code == 201, r.text
    lines = api.lines(r.json()["id"])
    assert [x["custom_id"] for x in lines] == ["req-1", "req-2"]


def test_custom_id_rules(api):
    lines = [
        {**chat_line(1), "custom_id": "dup"},
        {**chat_line(2), "custom_id": "dup"},
        {**chat_line(3), "custom_id": ""},
        {**chat_line(4), "custom_id": "é" * 32},  # 64 bytes, non-ASCII
        {**chat_line(5), "custom_id": "tab\there"},
        {**chat_line(6), "method": "post"},
    ]
    f = api.upload_ok(lines)
    got = api.lines(f["id"])
    assert [x["custom_id"] for x in got] == ["dup", "dup", "", "é" * 32, "tab\there", "req-6"]
    assert got[5]["method"] == "post"
    r = api.upload(jsonl([{**chat_line(1), "custom_id": "é" * 32 + "x"}]))
    assert r.text == "Line 1: custom_id exceeds maximum length of 64 characters (got 65)"


def test_input_download_sanitised(api):
    line = {
        "custom_id": "p",
        "method": "POST",
        "url": "/v1/chat/completions",
        "extra": 1,
        "body": {
            "temperature": 0,
            "priority": 5,
            "model": CHAT,
            "messages": [{"role": "user", "content": "z"}],
        },
    }
    f = api.upload_ok([line])
    r = api.get(f"/files/{f['id']}/content")
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert "X-Last-Line" not in r.headers and r.headers["X-Incomplete"] == "false"
    assert r.text == (
        '{"custom_id":"p","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"content":"z",'
        f'"role":"user"}}],"model":"{CHAT}","temperature":0}}}}\n'
    )


def test_size_limits_and_request_cap():
    with EmulatorServer("--max-file-bytes", "2000", "--max-requests", "3") as emu:
        from conftest import Api

        api = Api(emu)
        r = api.upload(jsonl([chat_line(i) for i in range(4)]))
        assert (r.status_code, r.text) == (400, "File contains 4 requests, which exceeds the maximum of 3")
        # Declared Content-Length above limit + multipart overhead
        big = "x" * 20000
        r = api.upload(big)
        assert (r.status_code, r.text) == (413, "File exceeds the maximum allowed size of 2000 bytes")
        # Within the overhead allowance by Content-Length, caught while streaming
        r = api.upload(jsonl([chat_line(1, "y" * 2500)]))
        assert (r.status_code, r.text) == (413, "File exceeds the maximum allowed size of 2000 bytes")
        assert api.get("/files").json()["data"] == []
        assert emu.stats()["files_created"] == 0


def test_surrogate_escapes(api):
    """A paired escape (an emoji) is fine and comes back as raw UTF-8; a lone one is a JSON error, as
    serde_json reports it, not a crash."""
    paired = json.dumps(chat_line("emoji", "smile \U0001f600"))  # ensure_ascii: "\ud83d\ude00"
    assert "\\ud83d\\ude00" in paired
    f = api.upload(paired + "\n")
    assert f.status_code == 201, f.text
    assert "smile \U0001f600" in api.get(f"/files/{f.json()['id']}/content").content.decode("utf-8")
    for lone in ("\\ud800", "\\udc00", "\\ud800\\u0041"):
        good = json.dumps(chat_line("s", "x_LONE_y"))
        r = api.upload(good.replace("_LONE_", lone) + "\n")
        assert r.status_code == 400 and r.text.startswith(
            "Invalid JSON on line 1: lone leading surrogate in hex escape at line 1 column "
        ), r.text
