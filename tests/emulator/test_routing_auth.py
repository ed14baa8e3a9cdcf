"""Prefixes, /healthz, auth rules, id errors, /models and error body formats (references/api_reference.md
sections 2 and 9)."""

from __future__ import annotations

import uuid

import pytest
import requests
from conftest import CHAT, EMBED, chat_line


def test_healthz_and_both_prefixes(emu, api):
    r = requests.get(emu.root_url + "/healthz", timeout=10)
    assert (r.status_code, r.text) == (200, "OK")
    for prefix in ("/v1", "/ai/v1"):
        r = requests.get(emu.root_url + prefix + "/models", headers=emu.headers, timeout=10)
        assert r.status_code == 200
        r = requests.get(emu.root_url + prefix + "/batches", headers=emu.headers, timeout=10)
        assert r.status_code == 200 and r.json()["object"] == "list"
    f = api.upload_ok([chat_line(1)])
    r = requests.get(f"{emu.root_url}/ai/v1/files/{f['id']}", headers=emu.headers, timeout=10)
    assert r.json()["id"] == f["id"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer sk-wrong", "bearer sk-test", "Bearer  sk-test", "Token sk-test", "Bearer "],
)
def test_files_batches_auth_is_plain_text_401(emu, header):
    headers = {"Authorization": header} if header else {}
    for method, path in (("GET", "/files"), ("GET", "/batches"), ("POST", "/batches"), ("POST", "/files")):
        r = requests.request(method, emu.base_url + path, headers=headers, timeout=10)
        assert r.status_code == 401, (header, path)
        assert r.text == "Authentication required"
        assert r.headers["Content-Type"].startswith("text/plain")


def test_models_auth_openai_json(emu):
    r = requests.get(emu.base_url + "/models", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_authorization"
    r = requests.get(emu.base_url + "/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
    assert r.json() == {
        "error": {
            "message": "Invalid API key",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    # any case of the scheme is fine on /models
    r = requests.get(emu.base_url + "/models", headers={"Authorization": "bearer sk-test"}, timeout=10)
    assert r.status_code == 200


def test_path_id_errors(api):
    assert (api.get("/files/not-a-uuid").status_code, api.get("/files/not-a-uuid").text) == (
        400,
        "Invalid file ID format",
    )
    r = api.get("/batches/xyz")
    assert (r.status_code, r.text) == (400, "Invalid batch ID format")
    u = str(uuid.uuid4()).upper()
    r = api.get(f"/files/{u}")
    assert (r.status_code, r.text) == (404, f"File with ID {u} not found")
    r = api.get(f"/batches/{u}")
    assert (r.status_code, r.text) == (404, f"Batch with ID {u} not found")
    assert r.headers["Content-Type"].startswith("text/plain")
    for path in (f"/files/{u}/content", f"/batches/{u}/results", f"/batches/{u}/analytics"):
        assert api.get(path).status_code == 404
    assert api.post(f"/batches/{u}/cancel").status_code == 404


def test_models_list(api):
    r = api.get("/models")
    data = r.json()["data"]
    ids = [m["id"] for m in data]
    assert ids == sorted(ids)
    assert CHAT in ids and EMBED in ids
    assert all(
        m["owned_by"] == "None" and m["object"] == "model" and isinstance(m["created"], int) for m in data
    )
    assert api.get("/models/" + CHAT).json()["id"] == CHAT
    r = api.get("/models/no/such-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_realtime_chat_and_embeddings(api):
    r = api.post(
        "/chat/completions",
        json={"model": CHAT, "messages": [{"role": "user", "content": "ping 42"}], "max_tokens": 50},
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert "ping 42" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    r = api.post("/embeddings", json={"model": EMBED, "input": ["a", "b"], "dimensions": 16})
    e = r.json()
    assert e["object"] == "list" and len(e["data"]) == 2 and len(e["data"][0]["embedding"]) == 16
    again = api.post("/embeddings", json={"model": EMBED, "input": ["a", "b"], "dimensions": 16}).json()
    assert again["data"] == e["data"]  # deterministic
    r = api.post("/completions", json={"model": CHAT, "prompt": "once upon"})
    assert r.json()["object"] == "text_completion" and "once upon" in r.json()["choices"][0]["text"]
    r = api.post("/responses", json={"model": CHAT, "input": "hello responses"})
    assert r.json()["object"] == "response"
    assert "hello responses" in r.json()["output"][0]["content"][0]["text"]


def test_realtime_errors_are_openai_json(emu, api):
    r = api.post("/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = api.post("/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = requests.post(emu.base_url + "/chat/completions", json={"model": CHAT}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = api.post(
        "/chat/completions",
        json={"model": CHAT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    )
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_error_body_formats(api):
    """400/404/415/422 plain text on files/batches routes."""
    for r, status in (
        (api.get("/files", params={"order": "up"}), 400),
        (api.get(f"/files/{uuid.uuid4()}"), 404),
        (api.post("/batches", data="x", headers={"Content-Type": "text/plain"}), 415),
        (api.post("/batches", json={"endpoint": "/v1/chat/completions"}), 422),
    ):
        assert r.status_code == status
        assert r.headers["Content-Type"].startswith("text/plain")
