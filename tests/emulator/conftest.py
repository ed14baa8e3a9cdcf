"""Fixtures and helpers for the emulator's own tests (real HTTP against a subprocess)."""

from __future__ import annotations

import json
import time

import pytest
import requests
from emulator_server import EmulatorServer

CHAT = "Qwen/Qwen3.5-9B"
EMBED = "Qwen/Qwen3-Embedding-8B"


@pytest.fixture(scope="module")
def emu():
    """One emulator per test module: no start delay, fast processing."""
    with EmulatorServer("--start-delay", "0", "--seed", "7") as server:
        yield server


class Api:
    """Thin requests wrapper bound to one emulator and key."""

    def __init__(self, server: EmulatorServer, key: str = "sk-test") -> None:
        self.server = server
        self.base = server.base_url
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, **kw) -> requests.Response:
        return self.s.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.s.post(self.base + path, timeout=60, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.s.delete(self.base + path, timeout=30, **kw)

    def upload(self, content: str | bytes, filename: str = "jobs.jsonl", purpose: str | None = "batch"):
        data = {"purpose": purpose} if purpose is not None else {}
        return self.post("/files", files={"file": (filename, content)}, data=data)

    def upload_ok(self, lines: list[dict], filename: str = "jobs.jsonl") -> dict:
        r = self.upload(jsonl(lines), filename)
        assert r.status_code in (200, 201), r.text  # 200 in the OpenAI flavour
        return r.json()

    def create(self, file_id: str, endpoint: str = "/v1/chat/completions", window: str = "24h", **extra):
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window, **extra}
        return self.post("/batches", json=body)

    def batch(self, lines: list[dict], **extra) -> dict:
        f = self.upload_ok(lines)
        r = self.create(f["id"], **extra)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def wait(self, batch_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while True:
            b = self.get(f"/batches/{batch_id}").json()
            if b["status"] in statuses:
                return b
            if time.time() > deadline:
                raise AssertionError(f"batch stuck in {b['status']}: {b}")
            time.sleep(0.05)

    def lines(self, file_id: str, **params) -> list[dict]:
        r = self.get(f"/files/{file_id}/content", params=params)
        assert r.status_code == 200, r.text
        return [json.loads(x) for x in r.content.decode("utf-8").splitlines()]


@pytest.fixture(scope="module")
def api(emu):
    return Api(emu)


def chat_line(i: int | str, text: str | None = None, model: str = CHAT, **body) -> dict:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text or f"question {i}"}], **body},
    }


def embed_line(i: int, text: str | None = None) -> dict:
    return {
        "custom_id": f"emb-{i}",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBED, "input": text or f"text {i}"},
    }


def jsonl(lines: list) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
