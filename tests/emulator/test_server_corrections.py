"""The corrections from a second reading of the server's code: the reasoning rules checked at upload
(and on realtime calls) for every model with their exact texts (references/api_reference.md section
3.1), then the purpose case, expires_after, cost-estimate windows, exact texts, list filters, metadata,
/results headers and the retry-requests order. Each asserts what a client sees over HTTP."""

from __future__ import annotations

import datetime
import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests
from conftest import CHAT, EMBED, Api, chat_line, jsonl
from emulator_server import EmulatorServer

GPT_OSS = "openai/gpt-oss-20b"


def line(url: str, **body) -> dict:
    return {"custom_id": "r", "method": "POST", "url": url, "body": {"model": CHAT, **body}}


CHAT_USE = "; use 'reasoning_effort'."
RESP_USE = "; use 'reasoning.effort'."
COMPLETIONS = "is not supported by /v1/completions. Use /v1/chat/completions or /v1/responses."
REFUSED = [
    (
        "/v1/chat/completions",
        {"chat_template_kwargs": {"enable_thinking": False}},
        "Unsupported parameter 'chat_template_kwargs.enable_thinking'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"chat_template_kwargs": {"thinking": True, "enable_thinking": True}},
        "Unsupported parameter 'chat_template_kwargs.thinking'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"chat_template_kwargs": {"x": 1}},
        "Unsupported parameter 'chat_template_kwargs'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"thinking": {"type": "enabled"}},
        "Unsupported parameter 'thinking'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"thinking_token_budget": 100},
        "Unsupported parameter 'thinking_token_budget'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"reasoning": {"effort": "low"}},
        "Unsupported parameter 'reasoning'" + CHAT_USE,
    ),
    (
        "/v1/chat/completions",
        {"reasoning_effort": 3},
        "Invalid type for 'reasoning_effort'. Expected a string.",
    ),
    (
        "/v1/chat/completions",
        {"reasoning_effort": "turbo"},
        "Reasoning effort 'turbo' is not supported by this provider. Supported values: none, low, medium, high.",
    ),
    (
        "/v1/responses",
        {"chat_template_kwargs": {"enable_thinking": True}},
        "Unsupported parameter 'chat_template_kwargs.enable_thinking'" + RESP_USE,
    ),
    (
        "/v1/responses",
        {"thinking_token_budget": 5},
        "Unsupported parameter 'thinking_token_budget'" + RESP_USE,
    ),
    ("/v1/responses", {"reasoning_effort": "low"}, "Unsupported parameter 'reasoning_effort'" + RESP_USE),
    ("/v1/responses", {"reasoning": "low"}, "Invalid type for 'reasoning'. Expected an object."),
    (
        "/v1/responses",
        {"reasoning": {"effort": False}},
        "Invalid type for 'reasoning.effort'. Expected a string.",
    ),
    ("/v1/completions", {"reasoning_effort": "low"}, "Parameter 'reasoning_effort' " + COMPLETIONS),
    ("/v1/completions", {"reasoning": {}}, "Parameter 'reasoning' " + COMPLETIONS),
    ("/v1/completions", {"thinking": {}}, "Parameter 'thinking' " + COMPLETIONS),
    ("/v1/completions", {"thinking_token_budget": 1}, "Parameter 'thinking_token_budget' " + COMPLETIONS),
    ("/v1/completions", {"chat_template_kwargs": {}}, "Parameter 'chat_template_kwargs' " + COMPLETIONS),
]


@pytest.mark.parametrize("url, extra, message", REFUSED)
def test_reasoning_fields_are_refused_at_upload_with_the_exact_text(api, url, extra, message):
    good = (
        line(url, prompt="p")
        if url == "/v1/completions"
        else line(url, messages=[{"role": "user", "content": "q"}])
    )
    bad = {**good, "body": {**good["body"], **extra}}
    before = {f["id"] for f in api.get("/files", params={"limit": 101}).json()["data"]}
    r = api.upload(jsonl([good, "", bad]))
    assert (r.status_code, r.text) == (400, f"Line 2: {message}")  # non-blank lines are counted
    assert {f["id"] for f in api.get("/files", params={"limit": 101}).json()["data"]} == before


@pytest.mark.parametrize("url, extra, message", REFUSED[:3] + REFUSED[10:11] + REFUSED[13:14])
def test_reasoning_fields_are_refused_on_realtime_calls_too(api, url, extra, message):
    body = {
        "model": CHAT,
        **extra,
        **({"prompt": "p"} if url == "/v1/completions" else {"messages": [{"role": "user", "content": "q"}]}),
    }
    r = api.post(url.removeprefix("/v1"), json=body)
    assert r.status_code == 400 and r.json()["error"]["message"] == message


def test_reasoning_rules_hold_for_every_model_and_the_effort_is_the_way(api):
    for model in (CHAT, GPT_OSS, "Qwen/Qwen3-14B-FP8"):
        bad = line(
            "/v1/chat/completions",
            messages=[{"role": "user", "content": "q"}],
            chat_template_kwargs={"enable_thinking": False},
        )
        bad["body"]["model"] = model
        r = api.upload(jsonl([bad]))
        assert (
            r.text
            == "Line 1: Unsupported parameter 'chat_template_kwargs.enable_thinking'; use 'reasoning_effort'."
        )
    ok = line("/v1/chat/completions", messages=[{"role": "user", "content": "q"}], reasoning_effort="none")
    assert api.upload(jsonl([ok])).status_code == 201
    effort_on_responses = line("/v1/responses", input="q", reasoning={"effort": "high"})
    assert api.upload(jsonl([effort_on_responses])).status_code == 201
    oss = {**ok, "body": {**ok["body"], "model": GPT_OSS}}  # gpt-oss always reasons
    r = api.upload(jsonl([oss]))
    assert (
        r.text
        == "Line 1: Reasoning effort 'none' is not supported by this provider. Supported values: low, medium, high."
    )
    embed = {
        "custom_id": "e",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBED, "input": "x"},
    }
    assert api.upload(jsonl([embed])).status_code == 201


# -- 29, 30: purpose and expires_after ---------------------------------------------------------------
def test_purpose_is_shown_lower_case_but_filtered_as_stored():
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        upper = api.upload(jsonl([chat_line(1)]), "upper.jsonl", purpose="Batch").json()
        none = api.upload(jsonl([chat_line(1)]), "none.jsonl", purpose=None).json()
        lower = api.upload(jsonl([chat_line(1)]), "lower.jsonl", purpose="batch").json()
        assert upper["purpose"] == none["purpose"] == lower["purpose"] == "batch"
        assert api.get(f"/files/{upper['id']}").json()["purpose"] == "batch"
        listed = [f["id"] for f in api.get("/files", params={"purpose": "batch"}).json()["data"]]
        assert listed == [lower["id"]]
        as_stored = [f["id"] for f in api.get("/files", params={"purpose": "Batch"}).json()["data"]]
        assert as_stored == [upper["id"]]


def test_a_non_integer_expires_after_is_ignored(api):
    for raw in ("soon", "1.5", "3_600", ""):
        r = api.post(
            "/files",
            files={"file": ("x.jsonl", jsonl([chat_line(1)]))},
            data={"purpose": "batch", "expires_after[seconds]": raw},
        )
        assert r.status_code == 201, (raw, r.text)
        f = r.json()
        assert f["expires_at"] == f["created_at"] + 30 * 24 * 3600


# -- 31: cost estimate -------------------------------------------------------------------------------
def test_cost_estimate_accepts_any_window(api):
    fid = api.upload_ok([chat_line(1, "x" * 4000)])["id"]
    window = {
        w: api.get(f"/files/{fid}/cost-estimate", params={"completion_window": w})
        for w in ("24h", "1h", "48h", "realtime")
    }
    assert all(r.status_code == 200 for r in window.values())
    cost = {w: float(r.json()["total_estimated_cost"]) for w, r in window.items()}
    assert cost["24h"] < cost["1h"] < cost["48h"] == cost["realtime"]  # unknown: the realtime tariff


# -- 32: texts ---------------------------------------------------------------------------------------
def test_exact_texts_of_capacity_permissions_and_models_auth(emu, api):
    fid = api.upload_ok([chat_line(1)])["id"]
    emu.configure(batch_create_error="capacity")
    try:
        msg = api.create(fid, window="1h").json()["message"]
    finally:
        emu.configure(batch_create_error=None)
    assert msg == (
        f"Insufficient capacity for 1h completion window. The following models are currently at capacity: {CHAT}. "
        "Try again later or use a longer completion window."
    )
    r = api.create(fid, window="background")
    assert r.status_code == 403
    assert r.text.startswith(
        "Insufficient permissions to Create background inference; assign the BackgroundInferenceUser role"
    )
    r = requests.get(emu.base_url + "/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["message"] == "Missing Authorization header"


def test_someone_elses_file_is_refused_with_the_servers_text():
    with EmulatorServer("--start-delay", "0", api_key=None) as emu:
        fid = Api(emu, key="sk-owner").upload_ok([chat_line(1)])["id"]
        r = Api(emu, key="sk-someone-else").create(fid)
        assert (r.status_code, r.text) == (403, f"Insufficient permissions to Create batch using file {fid}")


def test_a_broken_multipart_stream_is_a_read_failure(emu):
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        + json.dumps(chat_line(1))
        + "\n"
    ).encode()  # no closing boundary: the stream just ends
    url = urlsplit(emu.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request(
        "POST",
        url.path + "/files",
        body=body,
        headers={
            "Authorization": "Bearer sk-test",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    resp = conn.getresponse()
    text = resp.read().decode()
    assert resp.status == 400 and text.startswith("Failed to read multipart upload: "), text


# -- 33, 34: batch list filters and metadata ----------------------------------------------------------
def iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_batch_list_bounds_are_inclusive_and_include_is_a_list():
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        b = api.batch([chat_line(1)])
        ids = lambda **q: [x["id"] for x in api.get("/batches", params=q).json()["data"]]  # noqa: E731
        assert ids(created_after=iso(b["created_at"])) == [b["id"]]
        assert ids(created_before=iso(b["created_at"])) == [b["id"]]
        assert ids(created_after=iso(b["created_at"] + 1)) == []
        api.wait(b["id"])
        listed = api.get("/batches", params={"include": "analytics,other"}).json()["data"][0]
        assert listed["analytics"]["total_requests"] == 1


def test_status_filter_reads_stored_timestamps():
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        b = api.wait(api.batch([chat_line(1)])["id"])
        assert b["status"] == "completed"
        assert api.post(f"/batches/{b['id']}/cancel").json()["status"] == "cancelled"
        for status in ("completed", "cancelled"):
            assert [x["id"] for x in api.get("/batches", params={"status": status}).json()["data"]] == [
                b["id"]
            ]
        assert api.get("/batches", params={"status": "in_progress"}).json()["data"] == []


def test_search_is_a_like_over_stored_metadata_and_dw_keys_are_kept():
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        fid = api.upload_ok([chat_line(1)])["id"]
        meta = {"job": "alpha-7", "dw_source_id": "src-991", "Created_By": "mallory", "dw-user-agent": "x"}
        b = api.create(fid, metadata=meta).json()
        assert b["metadata"]["job"] == "alpha-7" and b["metadata"]["request_source"] == "api"
        assert "created_by_email" in b["metadata"]
        assert not {"dw_source_id", "Created_By", "created_by", "dw-user-agent"} & set(b["metadata"])
        found = lambda s: [x["id"] for x in api.get("/batches", params={"search": s}).json()["data"]]  # noqa: E731
        assert found("src-991") == [b["id"]]  # stored (only the six reserved keys are dropped), never shown
        assert found("alpha%7") == [b["id"]] and found("alph__7") == [b["id"]]  # LIKE wildcards
        assert found("mallory") == []  # the reserved created_by was dropped
        assert found(b["metadata"]["created_by_email"]) == []  # shown, but not stored


# -- 35, 36: /results headers and retry-requests -------------------------------------------------------
def test_results_headers_follow_the_rows():
    with EmulatorServer("--start-delay", "30") as emu:
        api = Api(emu)
        b = api.batch([chat_line(1), chat_line(2)])
        r = api.get(f"/batches/{b['id']}/results")
        assert r.headers["X-Incomplete"] == "false" and r.text == ""  # validating: no rows yet
        emu.configure(paused=True)
        emu.advance_clock(31)
        api.wait(b["id"], statuses=("in_progress",))
        r = api.get(f"/batches/{b['id']}/results")
        assert r.headers["X-Incomplete"] == "true" and r.headers["X-Last-Line"] == "2"
        r = api.get(f"/batches/{b['id']}/results", params={"search": "req-1"})
        assert "X-Last-Line" not in r.headers and len(r.text.splitlines()) == 1
        emu.configure(paused=False)
        api.wait(b["id"])
        r = api.get(f"/batches/{b['id']}/results", params={"skip": 5})
        assert r.headers["X-Incomplete"] == "false" and r.headers["X-Last-Line"] == "5"


def test_retry_requests_reads_the_body_before_the_batch_id(api):
    r = api.post("/batches/not-a-uuid/retry-requests", data="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api.post("/batches/not-a-uuid/retry-requests", json={"ids": []})
    assert r.status_code == 422
    r = api.post("/batches/not-a-uuid/retry-requests", json={"request_ids": []})
    assert (r.status_code, r.text) == (400, "Invalid batch ID format")
