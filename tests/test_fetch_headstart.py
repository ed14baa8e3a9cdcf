"""A fresh fetch of a finished job asks for the output while its modules load (doubleword.headstart), and
reads the reply like any other: what the server saw first, a failed or partial early reply asked again,
and every case where nothing may be sent early."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from emulator_server import EmulatorServer
from hostile_server import BATCH, CONTENT, Action, HostileProxy, capped_pages, html_page, reply

from doubleword import headstart

KEY = "sk-headstart-test-key"


@pytest.fixture
def emu(emulator: EmulatorServer) -> EmulatorServer:
    return emulator


@pytest.fixture
def proxy(emu: EmulatorServer) -> Any:
    with HostileProxy(emu.base_url) as hostile:
        yield hostile


def finished_job(h: Any, folder: Path, base_url: str, n: int) -> Path:
    env = h.script_env(base_url)
    h.submit_lines(folder, h.chat_lines(n), env)
    manifest = folder / "jobs.jsonl.manifest.json"
    h.poll_wait("--manifest", str(manifest), "--timeout", "60", env=env)
    return manifest


def fetch(h: Any, manifest: Path, proxy: HostileProxy, out: Path, *extra: str) -> Any:
    return h.run_script("fetch_results", "--manifest", str(manifest), "--base-url", proxy.base_url,
                        "--out", str(out), *extra, env=h.script_env(proxy.base_url))  # fmt: skip


def output_requests(proxy: HostileProxy, manifest: Path) -> list[Any]:
    output = json.loads(manifest.read_text())["shards"][0]["output_file_id"]
    return [s for s in proxy.seen if s.path.endswith(f"/files/{output}/content")]


def statuses(out: Path) -> list[str]:
    return [json.loads(line)["status"] for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_fresh_fetch_asks_for_the_output_first_and_reads_it_once(h, emu, proxy, tmp_path: Path) -> None:
    manifest = finished_job(h, tmp_path, emu.base_url, 40)
    result = fetch(h, manifest, proxy, tmp_path / "out")
    assert result.code == 0 and result.doc["complete"] is True, result
    first = proxy.seen[0]
    assert first.path.endswith("/content") and first.query == {"skip": "0"}, proxy.seen
    assert first.headers["Authorization"] == f"Bearer {h.script_env(None)['DOUBLEWORD_API_KEY']}"
    assert first.headers["User-Agent"].startswith("doubleword-batches/")
    assert len(output_requests(proxy, manifest)) == 1
    assert result.doc["api_calls"] == len(proxy.seen) == 3  # the output, the batch's status, its analytics
    assert statuses(tmp_path / "out") == ["completed"] * 40
    served = (tmp_path / "out" / "output.jsonl").read_bytes()
    assert served.count(b"\n") == 40 and served.startswith(b'{"id"')


def test_the_early_reply_is_read_while_the_status_is_asked(h, emu, proxy, tmp_path: Path) -> None:
    """The batch's status is held back until the output is on disk (at most 10 s): a fetch that waited
    for the status before reading the early reply would not write a line until then."""
    manifest = finished_job(h, tmp_path, emu.base_url, 30)
    output = tmp_path / "out" / "output.jsonl"
    written_first: list[bool] = []

    def when_output_is_on_disk(reply: Any, seen: Any) -> Any:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (output.exists() and output.stat().st_size):
            time.sleep(0.01)
        written_first.append(output.exists() and output.stat().st_size > 0)
        return reply

    proxy.add(lambda seen, _: Action(edit=when_output_is_on_disk) if re.match(BATCH, seen.path) else None)
    result = fetch(h, manifest, proxy, tmp_path / "out")
    assert result.code == 0 and result.doc["complete"] is True, result
    assert written_first == [True], written_first
    assert proxy.seen[0].path.endswith("/content") and len(output_requests(proxy, manifest)) == 1
    assert statuses(tmp_path / "out") == ["completed"] * 30
    assert output.read_bytes().count(b"\n") == 30


def test_an_existing_folder_or_paged_download_sends_nothing_early(h, emu, proxy, tmp_path: Path) -> None:
    manifest = finished_job(h, tmp_path, emu.base_url, 12)
    (tmp_path / "existing").mkdir()
    result = fetch(h, manifest, proxy, tmp_path / "existing")
    assert result.code == 0 and "/batches/" in proxy.seen[0].path, proxy.seen
    proxy.seen.clear()
    result = fetch(h, manifest, proxy, tmp_path / "paged", "--page-size", "5")
    assert result.code == 0 and "/batches/" in proxy.seen[0].path, proxy.seen
    assert statuses(tmp_path / "paged") == ["completed"] * 12


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(lambda: reply(503, {"error": {"message": "busy"}}, on=CONTENT, times=1), id="503"),
        pytest.param(lambda: reply(401, {"error": {"message": "nope"}}, on=CONTENT, times=1), id="401"),
        pytest.param(lambda: html_page(on=CONTENT, times=1), id="html-page"),
        pytest.param(lambda: capped_pages(7, claim_complete=False), id="partial-reply"),
    ],
)
def test_an_early_reply_that_is_not_the_whole_file_is_asked_again(
    h, emu, proxy, tmp_path: Path, behaviour: Any
) -> None:
    manifest = finished_job(h, tmp_path, emu.base_url, 30)
    proxy.add(behaviour())
    result = fetch(h, manifest, proxy, tmp_path / "out")
    assert result.code == 0 and result.doc["complete"] is True, result
    assert len(output_requests(proxy, manifest)) >= 2
    assert statuses(tmp_path / "out") == ["completed"] * 30
    assert (tmp_path / "out" / "output.jsonl").read_bytes().count(b"\n") == 30  # nothing twice


# --------------------------------------------------------------------------- when nothing is sent early


def _shard(**fields: Any) -> Any:
    base = {
        "batch_id": "b-1",
        "status": "completed",
        "output_file_id": "file-1",
        "request_counts": {"completed": 3},
    }
    return SimpleNamespace(**{**base, **fields})


@pytest.fixture
def listener() -> Any:
    """A loopback port that accepts connections (what a head start would send is read back)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    return monkeypatch


def test_a_safe_case_sends_exactly_the_request_requests_would(clean_env, listener) -> None:
    port = listener.getsockname()[1]
    start = headstart.begin(f"http://127.0.0.1:{port}/v1/", [_shard()], fresh=True)
    assert start is not None and start.url == f"http://127.0.0.1:{port}/v1/files/file-1/content?skip=0"
    peer, _ = listener.accept()
    peer.settimeout(5)
    sent = b""
    while not sent.endswith(b"\r\n\r\n"):
        sent += peer.recv(4096)
    lines = sent.decode().split("\r\n")
    assert lines[0] == "GET /v1/files/file-1/content?skip=0 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines and f"Authorization: Bearer {KEY}" in lines
    assert start.take("http://127.0.0.1:9/v1/files/file-1/content?skip=0") is None  # another URL: not it
    sock = start.take(start.url)
    assert sock is not None and start.take(f"http://127.0.0.1:{port}/v1/files/file-1/content?skip=0") is None
    sock.close()
    peer.close()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://10.0.0.7/v1",  # the key over plain http beyond this machine
        "http://127.0.0.1.example.com/v1",
        "https://user@api.example.com/v1",
        "https://api.example.com/v1?x=1",
        "https://api.example.com:99999/v1",
        "https://api.example.com:0443/v1",  # the client would write it :443, so could never adopt it
        "https://api.example.com/v%31",
        f"https://{KEY}.example.com/v1",
    ],
)
def test_no_head_start_to_a_url_anything_could_read_differently(clean_env, base_url: str) -> None:
    assert headstart.begin(base_url, [_shard()], fresh=True) is None


def test_no_head_start_when_not_fresh_unfinished_unanswered_or_unkeyed(clean_env, listener) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    assert headstart.begin(url, [_shard()], fresh=False) is None
    assert headstart.begin(url, [_shard(status="in_progress")], fresh=True) is None
    assert headstart.begin(url, [_shard(request_counts={"completed": 0, "failed": 3})], fresh=True) is None
    assert headstart.begin(url, [_shard(output_file_id="../x")], fresh=True) is None
    clean_env.setenv("DOUBLEWORD_API_KEY", "sk with space")
    assert headstart.begin(url, [_shard()], fresh=True) is None
    clean_env.delenv("DOUBLEWORD_API_KEY")
    assert headstart.begin(url, [_shard()], fresh=True) is None


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_no_head_start_through_a_proxy_unless_no_proxy_is_everything(
    clean_env, listener, variable: str
) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    clean_env.setenv(variable, "http://127.0.0.1:3128")
    assert headstart.begin(url, [_shard()], fresh=True) is None
    clean_env.setenv("NO_PROXY", "*")
    start = headstart.begin(url, [_shard()], fresh=True)
    assert start is not None
    start.close()
