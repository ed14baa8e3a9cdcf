"""Inputs that used to make the emulator answer 500 (issue 16, found by fuzzing every route with bad JSON,
wrong types, huge values and unknown ids). Each now gets the answer the real server gives: serde_json's
refusals (invalid UTF-8, an unpaired surrogate escape, nesting past its 128-level recursion limit) as 400s,
an integer query value past i64 as axum's 400, a `tools` that is not an array as an OpenAI 400 (an error
line in a batch). After each the server goes on serving and has logged no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from conftest import CHAT, EMBED, Api, chat_line, jsonl
from emulator_server import REPO_ROOT

DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
JSON = {"Content-Type": "application/json"}


def nested(levels: int) -> dict:
    """A chat body whose `metadata`-like extra key nests `levels` objects in all (the body included)."""
    value: object = 1
    for _ in range(levels - 1):
        value = {"a": value}
    return {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "x_extra": value}


@pytest.fixture(autouse=True)
def no_traceback(emu):
    yield
    assert "Traceback" not in "\n".join(emu.output)


@pytest.fixture(scope="module")
def batch_id(api):
    b = api.batch([chat_line(1)])
    api.wait(b["id"])
    return b["id"]


@pytest.mark.parametrize("raw", [DEEP, b"[" * 100_000, b'{"input_file_id":' + b"[" * 129 + b"]" * 129 + b"}"])
def test_nesting_past_serde_jsons_limit_is_a_400_on_the_batch_routes(api, batch_id, raw):
    for path in ("/batches", f"/batches/{batch_id}/retry-requests"):
        r = api.post(path, data=raw, headers=JSON)
        assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/plain")
        assert r.text.startswith(
            "Failed to parse the request body as JSON: recursion limit exceeded at line 1"
        )


@pytest.mark.parametrize(
    "path", ["/chat/completions", "/embeddings", "/completions", "/responses", "/messages"]
)
def test_nesting_past_the_limit_is_an_openai_400_on_inference_routes(api, path):
    r = api.post(path, data=DEEP, headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Failed to parse the request body as JSON"
    assert api.post(path, data=json.dumps(nested(129)), headers=JSON).status_code == 400
    if path == "/chat/completions":  # 128 levels are still JSON the server reads
        assert api.post(path, json=nested(128)).status_code == 200


def test_an_upload_line_nested_too_deep_is_refused_with_its_line_number(api):
    good = json.dumps(chat_line(1))
    deep = json.dumps(
        {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": nested(200)}
    )
    r = api.upload(good + "\n" + deep + "\n")
    assert r.status_code == 400
    assert r.text.startswith("Invalid JSON on line 2: recursion limit exceeded at line 1 column ")
    r = api.upload(good + "\n" + "[" * 100_000 + "\n")
    assert r.text.startswith("Invalid JSON on line 2: recursion limit exceeded")


def test_invalid_utf8_and_unpaired_surrogates_in_a_batch_body_are_400s(api, batch_id):
    r = api.post("/batches", data=b'{"input_file_id": "\xff"}', headers=JSON)
    assert r.status_code == 400
    assert r.text.startswith("Failed to parse the request body as JSON: invalid unicode code point at line 1")
    fid = api.upload_ok([chat_line(1)])["id"]
    body = '{"input_file_id": "' + fid + '", "endpoint": "\\ud800", "completion_window": "24h"}'
    r = api.post("/batches", data=body, headers=JSON)
    assert r.status_code == 400
    assert r.text.startswith("Failed to parse the request body as JSON: lone leading surrogate in hex escape")
    r = api.post(f"/batches/{batch_id}/retry-requests", data=b"\xff\xfe", headers=JSON)
    assert r.status_code == 400
    r = api.post("/embeddings", data='{"model": "' + EMBED + '", "input": "\\udc00"}', headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Failed to parse the request body as JSON"


@pytest.mark.parametrize("value", ["99999999999999999999999", "-9223372036854775809"])
def test_integer_query_values_past_i64_are_axums_400(api, batch_id, value):
    f = api.upload_ok([chat_line(1)])
    for path, name in (
        (f"/batches/{batch_id}/results", "skip"),
        (f"/batches/{batch_id}/results", "limit"),
        (f"/files/{f['id']}/content", "skip"),
        ("/files", "limit"),
        ("/batches", "limit"),
    ):
        r = api.get(path, params={name: value})
        assert r.status_code == 400, (path, name, r.text)
        assert r.text == f"Failed to deserialize query string: {name}: number too large to fit in target type"
    assert api.get(f"/batches/{batch_id}/results", params={"skip": "9223372036854775807"}).status_code == 200


@pytest.mark.parametrize(
    "tools, kind",
    [(True, "a boolean"), (1, "an integer"), (1.5, "a number"), ("x", "a string"), ({}, "an object")],
)
def test_tools_that_are_not_an_array_are_an_openai_400(api, tools, kind):
    for path, body in (
        ("/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}),
        ("/responses", {"model": CHAT, "input": "hi"}),
        ("/messages", {"model": CHAT, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ):
        r = api.post(path, json={**body, "tools": tools})
        assert r.status_code == 400, (path, r.text)
        assert (
            r.json()["error"]["message"]
            == f"Invalid type for 'tools': expected an array, but got {kind} instead."
        )


def test_tools_that_are_not_an_array_fail_their_batch_line_only(api):
    b = api.batch([chat_line(1), chat_line(2, tools=5), chat_line(3, tools=None)])
    done = api.wait(b["id"])
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    (error,) = api.lines(done["error_file_id"])
    reason = json.loads(error["error"]["message"])
    assert error["custom_id"] == "req-2" and reason["type"] == "NonRetriableHttpStatus"
    assert reason["details"]["status"] == 400 and "expected an array" in reason["details"]["body"]


def test_an_x_emulator_status_that_is_no_http_status_forces_nothing(api):
    for status in (10**30, 99, 600, -500):
        r = api.post(
            "/chat/completions",
            json={
                "model": CHAT,
                "messages": [{"role": "user", "content": "hi"}],
                "x_emulator_status": status,
            },
        )
        assert r.status_code == 200, (status, r.text)


def test_the_server_still_serves_after_all_of_it(emu, api):
    assert requests.get(emu.root_url + "/healthz", timeout=10).text == "OK"
    assert api.get("/files").status_code == 200
    assert jsonl([chat_line(1)])  # the helpers still work on this server
    assert Api(emu).post("/chat/completions", json=nested(3)).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        b'{"rate": "abc"}',
        b'{"rate": null}',
        b'{"rate": [1]}',
        b'{"rate": 1e400}',  # infinity: every later tick would have failed
        b'{"max_retries": "x"}',
        b'{"max_retries": 1.5}',
        b'{"batch_create_error": 5}',
        b'{"rate": 100, "fail_rate": "x"}',  # all or nothing: the rate is not changed either
        b'{"fail_rate": 10}',  # a share of the requests: 0 to 1
        b'{"fault_rate": -0.1}',
        b'{"sloppy_rate": 1.5}',
    ],
)
def test_control_config_refuses_values_of_the_wrong_kind(emu, change):
    before = requests.get(emu.root_url + "/_emulator/config", timeout=10).json()
    r = requests.post(emu.root_url + "/_emulator/config", data=change, timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    assert requests.get(emu.root_url + "/_emulator/config", timeout=10).json() == before


@pytest.mark.parametrize("flag", ["--fail-rate", "--fault-rate", "--sloppy-rate"])
def test_a_rate_flag_outside_0_to_1_is_a_usage_error(flag):
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "--port", "0", flag, "10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "expected a fraction from 0 to 1, got 10" in done.stderr, done.stderr


def test_the_clock_refuses_an_infinite_advance(emu):
    r = requests.post(emu.root_url + "/_emulator/clock", data=b'{"advance_seconds": 1e400}', timeout=10)
    assert r.status_code == 400
    assert requests.get(emu.root_url + "/healthz", timeout=10).status_code == 200
