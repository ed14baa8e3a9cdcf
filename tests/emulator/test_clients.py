"""Real third-party clients run their own batch workflows against the emulator, unchanged.

Covered here: the OpenAI Python SDK (sync and async; uploads from a path, a file, a tuple and BytesIO;
`.text`, `.iter_lines`, raw and streaming responses; the cursor auto-pager; error classes; Retry-After
retries through injected faults), aiohttp (a chunked multipart upload without Content-Length), plain
`curl` (Expect: 100-continue, chunked upload, `-d` JSON, `?skip=&limit=`, HEAD, OPTIONS), LiteLLM's batch
helpers when installed, and Doubleword's own `dw` CLI when available. The Node SDK is in test_client_node.py.

Where a client trips over something the real server also does, the test asserts that failure mode
(references/api_reference.md) instead of bending the emulator.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import openai
import pytest
from conftest import CHAT, chat_line, jsonl
from emulator_server import EmulatorServer

TERMINAL = ("completed", "failed", "cancelled", "expired")
TEXT = "héllo wörld ✓ 東京"  # non-ASCII survives every hop as raw UTF-8


def lines_for(tag: str, n: int = 4) -> list[dict]:
    return [chat_line(f"{tag}-{i}", f"{TEXT} {tag} {i}") for i in range(n)]


@pytest.fixture(scope="module")
def client(emu):
    return openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)


def wait_sdk(client: openai.OpenAI, batch_id: str, timeout: float = 20):
    deadline = time.time() + timeout
    b = client.batches.retrieve(batch_id)
    while b.status not in TERMINAL:
        assert time.time() < deadline, b
        time.sleep(0.05)
        b = client.batches.retrieve(batch_id)
    return b


# -- OpenAI Python SDK ------------------------------------------------------------------------------


def test_openai_sdk_upload_variants(client, tmp_path):
    data = jsonl(lines_for("up", 2)).encode()
    path = tmp_path / "from-path.jsonl"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        by_file = client.files.create(file=fh, purpose="batch")
    by_path = client.files.create(file=path, purpose="batch")
    by_tuple = client.files.create(file=("tuple ✓.jsonl", data, "application/jsonl"), purpose="batch")
    by_bytesio = client.files.create(file=io.BytesIO(data), purpose="batch")
    assert [f.filename for f in (by_file, by_path, by_tuple)] == ["from-path.jsonl"] * 2 + ["tuple ✓.jsonl"]
    assert by_bytesio.filename == "upload"  # the SDK's own name for an anonymous stream
    assert {f.bytes for f in (by_file, by_path, by_tuple, by_bytesio)} == {len(data)}
    # The Doubleword file object has no OpenAI `status`: the SDK model leaves it None.
    assert by_file.status is None and by_file.purpose == "batch"
    raw = client.files.with_raw_response.create(file=("raw.jsonl", data), purpose="batch")
    assert raw.status_code == 201 and raw.headers["content-type"].startswith("application/json")
    f = raw.parse()
    assert f.expires_at - f.created_at == 30 * 24 * 3600
    short = client.files.create(
        file=("short.jsonl", data), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert short.expires_at - short.created_at == 3600


def test_openai_sdk_full_workflow(client, tmp_path):
    f = client.files.create(file=("flow.jsonl", jsonl(lines_for("flow", 5)).encode()), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "sdk ✓"},
    )
    assert b.status == "validating" and b.request_counts.total == 5 and b.output_file_id and b.error_file_id
    b = wait_sdk(client, b.id)
    assert b.status == "completed" and b.request_counts.completed == 5 and b.metadata["run"] == "sdk ✓"

    content = client.files.content(b.output_file_id)
    assert content.response.headers["content-type"] == "application/x-ndjson"  # no charset, like the server
    assert f"{TEXT} flow 3" in content.text  # decoded as UTF-8 all the same
    rows = [json.loads(x) for x in content.iter_lines() if x]
    assert sorted(r["custom_id"] for r in rows) == [f"req-flow-{i}" for i in range(5)]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)

    raw = client.files.with_raw_response.content(b.output_file_id, extra_query={"skip": 2, "limit": 2})
    assert raw.headers["x-last-line"] == "4" and raw.headers["x-incomplete"] == "true"
    assert len(raw.text.splitlines()) == 2
    with client.files.with_streaming_response.content(b.input_file_id) as stream:
        stream.stream_to_file(tmp_path / "input.jsonl")
    echoed = (tmp_path / "input.jsonl").read_text(encoding="utf-8").splitlines()
    assert f"{TEXT} flow 0" in json.loads(echoed[0])["body"]["messages"][0]["content"]
    assert client.files.content(b.error_file_id).text == ""  # empty error file, not a 404

    assert client.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert client.batches.cancel(b.id).status == "cancelled"  # the server accepts cancel after completion
    deleted = client.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    assert client.batches.retrieve(b.id).input_file_id == ""


def test_openai_sdk_auto_pagination(client):
    f = client.files.create(file=("page.jsonl", jsonl(lines_for("page", 1)).encode()), purpose="batch")
    made = [
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more and first.has_next_page()
    seen = [b.id for b in client.batches.list(limit=2)]  # follows after=<last id> until has_more is false
    assert len(seen) == len(set(seen)) and set(made) <= set(seen)
    assert seen[:5] == made[::-1]  # newest first
    files = [x.id for x in client.files.list(limit=2, order="asc")]
    assert len(files) == len(set(files)) and files.index(f.id) >= 0
    assert [x.id for x in client.files.list(purpose="batch_output", limit=100)]


def test_openai_sdk_errors(emu, client):
    with pytest.raises(openai.BadRequestError) as e400:
        client.batches.retrieve("not-a-uuid")
    assert e400.value.body == "Invalid batch ID format"  # plain text body kept as the error body
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(openai.NotFoundError) as e404:
        client.files.content(missing)
    assert e404.value.body == f"File with ID {missing} not found"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=missing, endpoint="/v1/chat/completions", completion_window="2h")
    with pytest.raises(openai.PermissionDeniedError) as e403:
        client.files.create(file=("m.jsonl", jsonl([chat_line(1, model="gpt-4o")]).encode()), purpose="batch")
    assert "Model 'gpt-4o' has not been configured" in str(e403.value.body)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=emu.base_url, api_key="sk-wrong", max_retries=0).batches.list()
    # Models route: OpenAI JSON errors, parsed into .code by the SDK.
    with pytest.raises(openai.AuthenticationError) as e401:
        openai.OpenAI(base_url=emu.base_url, api_key="sk-wrong", max_retries=0).models.list()
    assert e401.value.code == "invalid_api_key"
    assert CHAT in [m.id for m in client.models.list()]
    assert client.models.retrieve(CHAT).owned_by == "None"


def test_openai_sdk_capacity_429_carries_both_retry_hints(emu, client):
    f = client.files.create(file=("cap.jsonl", jsonl([chat_line(1)]).encode()), purpose="batch")
    emu.configure(batch_create_error="capacity")
    try:
        with pytest.raises(openai.RateLimitError) as e:
            client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")
    finally:
        emu.configure(batch_create_error=None)
    # The SDK keeps body["error"] as the error body: for the server's 429 JSON that is the bare code string.
    assert e.value.body == "too_many_requests"
    assert e.value.response.headers["retry-after"] == "60"
    assert e.value.response.json()["retry_after_seconds"] == 30


FAULT_SEED = int(os.environ.get("CLIENT_FAULT_SEED", "2"))


def test_openai_sdk_retries_through_faults():
    """429/503 with Retry-After, 500s, dropped and truncated replies: the SDK's own retries absorb them.
    Own emulator, seeded: the fault sequence is fixed, so the SDK's backoff (0.5 s doubling) stays short."""
    with EmulatorServer("--start-delay", "0", "--seed", str(FAULT_SEED)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
        f = client.files.create(file=("faults.jsonl", jsonl(lines_for("flt", 3)).encode()), purpose="batch")
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_sdk(client, b.id)
        sdk = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=8)
        emu.configure(fault_rate=0.3, fault_retry_after=0.01)
        reads = [sdk.batches.retrieve(done.id) for _ in range(3)]
        texts = [sdk.files.content(done.output_file_id).text for _ in range(2)]
        listed = [x.id for x in sdk.batches.list(limit=3)]
        faults = [c["fault"] for c in emu.requests_log() if c["fault"]]
    assert {b.status for b in reads} == {"completed"} and done.id in listed
    assert all(len(t.splitlines()) == 3 for t in texts)
    assert len(faults) >= 2  # the retries were really exercised


def test_openai_sdk_wait_for_processing_never_sees_processed(client):
    """Real-server gap: file objects carry no `status`, so the SDK helper can only time out."""
    f = client.files.create(file=("wait.jsonl", jsonl([chat_line(1)]).encode()), purpose="batch")
    with pytest.raises(RuntimeError, match="Giving up on waiting"):
        client.files.wait_for_processing(f.id, poll_interval=0.05, max_wait_seconds=0.2)


def test_openai_async_sdk_workflow(emu):
    async def run() -> None:
        async with openai.AsyncOpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0) as a:
            f = await a.files.create(
                file=("async.jsonl", jsonl(lines_for("async", 3)).encode()), purpose="batch"
            )
            b = await a.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h"
            )
            deadline = time.time() + 20
            while b.status not in TERMINAL:
                assert time.time() < deadline
                await asyncio.sleep(0.05)
                b = await a.batches.retrieve(b.id)
            assert b.status == "completed" and b.expires_at - b.created_at == 3600
            content = await a.files.content(b.output_file_id)
            assert len(content.text.splitlines()) == 3 and f"{TEXT} async 1" in content.text
            ids = [x.id async for x in a.batches.list(limit=2)]
            assert b.id in ids and len(ids) == len(set(ids))
            with pytest.raises(openai.NotFoundError):
                await a.batches.retrieve("00000000-0000-0000-0000-000000000000")

    asyncio.run(run())


# -- aiohttp: a streamed (chunked) multipart upload ---------------------------------------------------


def test_aiohttp_chunked_upload_and_text_decoding(emu):
    payload = jsonl(lines_for("aio", 3)).encode()

    async def run() -> None:
        headers = {"Authorization": "Bearer sk-test"}
        async with aiohttp.ClientSession(emu.base_url + "/", headers=headers) as s:
            form = aiohttp.FormData()

            async def chunks():
                for i in range(0, len(payload), 100):
                    yield payload[i : i + 100]

            # An async iterable has no length: the multipart body goes out chunked, without Content-Length.
            form.add_field("file", aiohttp.payload.AsyncIterablePayload(chunks()), filename="aio.jsonl")
            form.add_field("purpose", "batch")
            async with s.post("files", data=form) as r:
                assert r.status == 201, await r.text()
                assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
                f = await r.json()
            assert f["bytes"] == len(payload)
            body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            async with s.post("batches", json=body) as r:
                assert r.status == 201
                b = await r.json()
            while b["status"] not in TERMINAL:
                await asyncio.sleep(0.05)
                async with s.get(f"batches/{b['id']}") as r:
                    b = await r.json()
            async with s.get(f"files/{b['output_file_id']}/content") as r:
                text = await r.text()  # no charset in the reply: aiohttp falls back to UTF-8
            assert f"{TEXT} aio 2" in text and len(text.splitlines()) == 3

    asyncio.run(run())


# -- curl ------------------------------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_workflow(emu, tmp_path):
    base, auth = emu.base_url, "Authorization: Bearer sk-test"
    big = tmp_path / "big.jsonl"
    big.write_text(jsonl(chat_line(i, "x" * 400) for i in range(2600)), encoding="utf-8")
    assert big.stat().st_size > 1024 * 1024  # curl sends Expect: 100-continue above 1 MiB
    up = curl("-v", f"{base}/files", "-H", auth, "-F", "purpose=batch", "-F", f"file=@{big}")
    assert "< HTTP/1.1 100 Continue" in up.stderr and json.loads(up.stdout)["bytes"] == big.stat().st_size

    small = tmp_path / "small.jsonl"
    small.write_text(jsonl(lines_for("curl", 3)), encoding="utf-8")
    chunked = curl(
        f"{base}/files", "-H", auth, "-H", "Transfer-Encoding: chunked", "-F", "purpose=batch",
        "-F", f"file=@{small};type=application/jsonl",
    )  # fmt: skip
    fid = json.loads(chunked.stdout)["id"]

    body = json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    # `curl -d` alone sends application/x-www-form-urlencoded: the server's JSON extractor answers 415.
    plain = curl(f"{base}/batches", "-H", auth, "-d", body, "-w", "\n%{http_code}")
    assert plain.stdout.endswith("\n415")
    made = curl(f"{base}/batches", "-H", auth, "-H", "Content-Type: application/json", "-d", body)
    bid = json.loads(made.stdout)["id"]
    deadline = time.time() + 20
    while (b := json.loads(curl(f"{base}/batches/{bid}", "-H", auth).stdout))["status"] not in TERMINAL:
        assert time.time() < deadline
        time.sleep(0.05)

    page = curl("-D", "-", f"{base}/files/{b['output_file_id']}/content?skip=1&limit=1", "-H", auth)
    head, _, rest = page.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert "x-last-line: 2" in head.lower() and "x-incomplete: true" in head.lower()
    assert len(rest.splitlines()) == 1 and "content-type: application/x-ndjson" in head.lower()
    out = tmp_path / "out.jsonl"
    curl(f"{base}/files/{b['output_file_id']}/content", "-H", auth, "-o", str(out))
    assert TEXT in out.read_text(encoding="utf-8") and len(out.read_text().splitlines()) == 3

    head = curl("-I", f"{base}/batches/{bid}", "-H", auth)  # HEAD: axum answers GET routes
    assert head.stdout.startswith("HTTP/1.1 200") and "application/json" in head.stdout
    options = curl("-i", "-X", "OPTIONS", f"{base}/batches", "-H", "Access-Control-Request-Method: POST")
    assert options.stdout.startswith("HTTP/1.1 200")  # the CORS layer answers before auth


# -- LiteLLM (optional: heavy, not in requirements-dev.txt) ----------------------------------------------


def test_litellm_batch_helpers(emu):
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (optional client)")
    kw = dict(custom_llm_provider="openai", api_base=emu.base_url, api_key="sk-test")
    f = litellm.create_file(file=("lite.jsonl", jsonl(lines_for("lite", 3)).encode()), purpose="batch", **kw)
    b = litellm.create_batch(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id, **kw
    )
    deadline = time.time() + 20
    while b.status not in TERMINAL:
        assert time.time() < deadline
        time.sleep(0.05)
        b = litellm.retrieve_batch(batch_id=b.id, **kw)
    assert b.status == "completed"
    text = litellm.file_content(file_id=b.output_file_id, **kw).text
    assert len(text.splitlines()) == 3 and f"{TEXT} lite 0" in text


# -- Doubleword's dw CLI (optional: a Rust binary from PyPI `dw-cli`) -----------------------------------


def dw_binary() -> str | None:
    exe = os.environ.get("DW_CLI") or shutil.which("dw")
    if not exe:
        return None
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return exe if probe.returncode == 0 else None


def test_dw_cli_workflow(emu, tmp_path):
    exe = dw_binary()
    if exe is None:
        pytest.skip(
            "dw CLI not available (pip install dw-cli, or set DW_CLI=<path>; the 0.1.2x wheels need glibc "
            "2.39: see tests/emulator/clients/README.md)"
        )
    home = tmp_path / "home"
    (home / ".dw").mkdir(parents=True)
    # What `dw login --api-key` stores; login itself verifies against api.doubleword.ai whatever --server says.
    (home / ".dw" / "credentials.toml").write_text(
        '[accounts.default]\ndisplay_name = "API Key"\nuser_id = "unknown"\nemail = "unknown"\n'
        'inference_key = "sk-test"\naccount_type = "personal"\n'
    )
    (home / ".dw" / "config.toml").write_text('active_account = "default"\ndefault_output = ""\n')
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    server = emu.base_url.rsplit("/v1", 1)[0]

    def dw(*args: str) -> str:
        p = subprocess.run(
            [exe, "--server", server, "--output", "json", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl(lines_for("dw", 3)), encoding="utf-8")
    f = json.loads(dw("files", "upload", str(jobs)))
    assert f["bytes"] == jobs.stat().st_size
    b = json.loads(dw("batches", "create", "--file", f["id"], "--metadata", "tool=dw"))
    assert b["status"] == "validating" and b["metadata"]["tool"] == "dw"
    dw("batches", "watch", b["id"])  # exits 0 only when the batch completed
    results = [json.loads(x) for x in dw("batches", "results", b["id"]).splitlines() if x.strip()]
    assert sorted(r["custom_id"] for r in results) == [f"req-dw-{i}" for i in range(3)]
    streamed = [json.loads(x) for x in dw("stream", str(jobs)).splitlines() if x.strip()]
    assert len(streamed) == 3 and TEXT in json.dumps(streamed, ensure_ascii=False)
    assert f["id"] in dw("files", "list", "--all")
    dw("batches", "cancel", "-y", b["id"])  # reports on stderr
    assert json.loads(dw("batches", "get", b["id"]))["status"] == "cancelled"


def test_clients_dir_is_gitignored():
    """node_modules for the Node client test must never be committed."""
    ignore = (Path(__file__).resolve().parent / "clients" / ".gitignore").read_text()
    assert "node_modules" in ignore
