"""The OpenAI Python SDK runs the whole batch flow against the emulator unchanged."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest
from conftest import CHAT, EMBED, chat_line, jsonl


@pytest.fixture(scope="module")
def client(emu):
    return openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)


def test_sdk_batch_flow(client):
    lines = [chat_line(i, f"sdk question {i}") for i in range(6)]
    f = client.files.create(file=("sdk.jsonl", io.BytesIO(jsonl(lines).encode())), purpose="batch")
    assert f.id and f.bytes > 0 and f.filename == "sdk.jsonl"
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "sdk"}
    )
    assert b.status == "validating" and b.request_counts.total == 6
    deadline = time.time() + 20
    while b.status not in ("completed", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.1)
        b = client.batches.retrieve(b.id)
    assert b.status == "completed" and b.output_file_id
    text = client.files.content(b.output_file_id).text
    out = {json.loads(x)["custom_id"]: json.loads(x) for x in text.splitlines()}
    assert len(out) == 6
    assert "sdk question 3" in out["req-3"]["response"]["body"]["choices"][0]["message"]["content"]
    ids = [x.id for x in client.batches.list(limit=2)]
    assert b.id in ids and len(ids) == len(set(ids))
    assert f.id in [x.id for x in client.files.list()]
    assert client.files.retrieve(f.id).id == f.id
    assert CHAT in [m.id for m in client.models.list()]


def test_sdk_cancel(emu, client):
    emu.configure(paused=True)
    try:
        f = client.files.create(file=("c.jsonl", io.BytesIO(jsonl([chat_line(1)]).encode())), purpose="batch")
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        time.sleep(0.2)
        c = client.batches.cancel(b.id)
        assert c.status == "cancelled" and c.cancelled_at == c.cancelling_at
    finally:
        emu.configure(paused=False)


def test_sdk_realtime(client):
    r = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello sdk"}])
    assert "hello sdk" in r.choices[0].message.content and r.usage.total_tokens > 0
    e = client.embeddings.create(model=EMBED, input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 4096  # the real size of Qwen3-Embedding-8B
    chunks = list(
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "streamed"}], stream=True
        )
    )
    assert "streamed" in "".join(c.choices[0].delta.content or "" for c in chunks)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="nope", endpoint="/v1/chat/completions", completion_window="24h")
