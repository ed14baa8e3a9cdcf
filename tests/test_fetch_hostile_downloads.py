"""Downloads trust nothing: odd content replies are faults that move no cursor, repeated pages are caught,
a finished batch is read to its end whatever the page size, and another job's folder is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from scripted_server import ScriptedServer, Seen, finished_batch

BATCH = "6a0e1c2a-0000-4000-8000-000000000001"
INPUT, OUTPUT, ERRORS = (f"6a0e1c2a-0000-4000-8000-00000000000{i}" for i in (2, 3, 4))
N = 300


def _lines(n: int = N) -> tuple[list[bytes], list[bytes]]:
    inputs, outputs = [], []
    for i in range(n):
        custom_id = f"req-{i:05d}"
        body = {"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": f"q{i}"}]}
        inputs.append(
            json.dumps(
                {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
            ).encode()
            + b"\n"
        )
        answer = {
            "choices": [
                {"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": f"a{i}"}}
            ],
            "model": "Qwen/Qwen3.5-9B",
            "object": "chat.completion",
        }
        line = {
            "id": f"batch_req_{i:08d}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "body": answer},
            "error": None,
        }
        outputs.append(json.dumps(line).encode() + b"\n")
    return inputs, outputs


Content = Callable[[Seen, int, list[bytes]], tuple[int, dict[str, str], bytes]]


def _honest(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    rest = lines[skip:]
    headers = {
        "Content-Type": "application/x-ndjson",
        "X-Incomplete": "false",
        "X-Last-Line": str(skip + len(rest)),
    }
    return 200, headers, b"".join(rest)


def _server(output_reply: Content, edit: Callable[[bytes], bytes] = lambda line: line) -> ScriptedServer:
    """The batch, finished, its files served; ``edit``: applied to every input and output line."""
    inputs, outputs = ([edit(line) for line in lines] for lines in _lines())
    batch = finished_batch(BATCH, INPUT, OUTPUT, ERRORS, N)

    def reply(seen: Seen) -> tuple[int, dict[str, str], bytes | str]:
        query = dict(p.split("=") for p in seen.query.split("&") if p)
        skip = int(query.get("skip", 0))
        if seen.path == f"/v1/batches/{BATCH}":
            return 200, {"Content-Type": "application/json"}, json.dumps(batch)
        if seen.path == f"/v1/files/{INPUT}/content":
            return 200, {"Content-Type": "application/x-ndjson", "X-Incomplete": "false"}, b"".join(inputs)
        if seen.path == f"/v1/files/{ERRORS}/content":
            return _honest(seen, skip, [])
        if seen.path == f"/v1/files/{OUTPUT}/content":
            return output_reply(seen, skip, outputs)
        return 404, {}, "not found"

    return ScriptedServer(reply)


def _fetch(h, server: ScriptedServer, out, *args: str) -> Any:
    return h.run_script("fetch_results", BATCH, "--out", str(out), *args, env=h.script_env(server.base_url))


def _content_requests(server: ScriptedServer) -> list[Seen]:
    return [s for s in server.seen if s.path == f"/v1/files/{OUTPUT}/content"]


def test_an_html_page_on_the_content_route_is_retried_and_moves_no_cursor(tmp_path, h):
    served = {"html": 0}

    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        if skip == 100 and served["html"] < 2:  # a proxy's error page, twice, in the middle of the file
            served["html"] += 1
            return 200, {"Content-Type": "text/html"}, b"<html><body>Bad gateway</body></html>\n" * 8
        return _honest(seen, skip, lines[: max(skip + 100, 100)] if skip < 100 else lines)

    with _server(reply) as server:
        code, doc, err = _fetch(h, server, tmp_path / "out")
    assert code == 0 and doc["complete"] is True, (doc, err)
    assert served["html"] == 2 and "text/html instead of the file's lines" in err
    output = (tmp_path / "out" / "output.jsonl").read_bytes()
    assert b"<html>" not in output and output.count(b"\n") == N
    assert doc["counts"]["completed"] == N and (tmp_path / "out" / "retry.jsonl").read_bytes() == b""


def test_lines_that_are_not_output_lines_are_a_fault_not_answers(tmp_path, h):
    served = {"bad": 0}

    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        if skip == 0 and served["bad"] == 0:
            served["bad"] += 1
            return 200, {"Content-Type": "application/x-ndjson"}, b'{"message": "rate limited"}\n[1, 2]\n'
        return _honest(seen, skip, lines)

    with _server(reply) as server:
        code, doc, err = _fetch(h, server, tmp_path / "out")
    assert code == 0 and doc["counts"]["completed"] == N, (doc, err)
    assert (tmp_path / "out" / "output.jsonl").read_bytes().count(b"\n") == N


def test_a_finished_batch_is_read_to_its_end_whatever_the_page_size(tmp_path, h):
    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        page = lines[skip : skip + 50]  # at most 50 lines per reply, and it says nothing more is coming
        return 200, {"Content-Type": "application/x-ndjson", "X-Incomplete": "false"}, b"".join(page)

    with _server(reply) as server:
        code, doc, err = _fetch(h, server, tmp_path / "out")
        skips = [s.query for s in _content_requests(server)]
    assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == N, (doc, err)
    assert (tmp_path / "out" / "retry.jsonl").read_bytes() == b""
    assert skips[:6] == [f"skip={k}" for k in range(0, N, 50)]


def test_a_cache_that_ignores_skip_is_detected_and_loses_nothing(tmp_path, h):
    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/x-ndjson", "X-Incomplete": "false"}, b"".join(lines[:50])

    with _server(reply) as server:
        code, doc, err = _fetch(h, server, tmp_path / "out")
    assert code == 5 and "ignore 'skip'" in doc["error"]["message"], (doc, err)
    state = json.loads((tmp_path / "out" / "fetch.manifest.json").read_text())
    assert state["shards"][0]["downloads"]["output"]["skip"] == 50  # not past lines it never received
    assert (tmp_path / "out" / "output.jsonl").read_bytes().count(b"\n") == 50


def test_a_folder_holding_someone_elses_results_is_refused(tmp_path, h):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"mine": true}\n')
    with _server(_honest) as server:
        code, doc, err = _fetch(h, server, out)
        assert not _content_requests(server)
    assert code == 4 and "results.jsonl" in doc["error"]["message"] and "--out" in doc["error"]["message"]
    assert (out / "results.jsonl").read_text() == '{"mine": true}\n'


@pytest.mark.parametrize("pure", ["0", "1"])
def test_an_answer_with_half_an_emoji_escaped_is_kept_as_sent(tmp_path, h, pure):
    """A lone surrogate (``\\ud83d``, an emoji cut in two by a token limit) has no UTF-8: the fetch keeps
    it as the escape the server sent instead of failing on it, and the answer counts."""

    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        cut = [line.replace(b'"content": "a7"', b'"content": "a7 \\ud83d"') for line in lines]
        return _honest(seen, skip, cut)

    with _server(reply) as server:
        code, doc, err = h.run_script(
            "fetch_results", BATCH, "--out", str(tmp_path / "out"),
            env={**h.script_env(server.base_url), "DOUBLEWORD_PURE_JSON": pure},
        )  # fmt: skip
    assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == N, (doc, err)
    results = (tmp_path / "out" / "results.jsonl").read_bytes()
    results.decode("utf-8")  # still UTF-8 throughout
    answers = {r["custom_id"]: r for r in map(json.loads, results.splitlines())}
    assert answers["req-00007"]["content"] == "a7 \ud83d" and answers["req-00007"]["status"] == "completed"
    assert (tmp_path / "out" / "retry.jsonl").read_bytes() == b""


@pytest.mark.parametrize("pure", ["0", "1"])
def test_a_custom_id_with_half_an_emoji_escaped_is_answered_and_retried_as_sent(tmp_path, h, pure):
    """A custom_id holding a lone surrogate (``\\ud83d``: no UTF-8, so SQLite cannot hold it as text)
    is joined like any other: its answer counts, and an input whose answer never came is reported and
    put in retry.jsonl under the very id it was sent with."""

    def edit(line: bytes) -> bytes:
        return line.replace(b'"req-00007"', b'"req-00007 \\ud83d"').replace(
            b'"req-00008"', b'"req-00008 \\ud83d"'
        )

    def reply(seen: Seen, skip: int, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        return _honest(seen, skip, [line for line in lines if b'"req-00008 ' not in line])

    with _server(reply, edit) as server:
        code, doc, err = h.run_script(
            "fetch_results", BATCH, "--out", str(tmp_path / "out"),
            env={**h.script_env(server.base_url), "DOUBLEWORD_PURE_JSON": pure},
        )  # fmt: skip
    assert code == 6 and doc["counts"]["completed"] == N - 1 and doc["counts"]["missing"] == 1, (doc, err)
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_bytes().splitlines()]
    assert [r["custom_id"] for r in results[6:9]] == ["req-00006", "req-00007 \ud83d", "req-00008 \ud83d"]
    assert [r["status"] for r in results[6:9]] == ["completed", "completed", "missing"]
    (retry,) = (tmp_path / "out" / "retry.jsonl").read_bytes().splitlines()
    assert json.loads(retry)["custom_id"] == "req-00008 \ud83d" and b"\\ud83d" in retry
