"""Content paging, the X-Incomplete/X-Last-Line rules, line shapes and /results (references/api_reference.md
sections 5 and 7)."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import chat_line

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def done(api):
    """A finished batch: 10 successes and 3 failures."""
    lines = [chat_line(i, f"text number {i}") for i in range(10)]
    lines += [chat_line(f"bad{i}", x_emulator_status=400) for i in range(3)]
    return api.wait(api.batch(lines)["id"])


def test_output_and_error_line_shapes(api, done):
    r = api.get(f"/files/{done['output_file_id']}/content")
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert r.text.endswith("\n") and r.text.count("\n") == 10
    first = r.text.splitlines()[0]
    assert re.match(
        r'^\{"id":"batch_req_' + UUID + r'","custom_id":"req-\d+","response":\{"status_code":200,'
        r'"request_id":null,"body":\{"choices"',
        first,
    )
    assert first.endswith(',"error":null}')
    for line in api.lines(done["output_file_id"]):
        i = line["custom_id"].split("-")[1]
        assert f"text number {i}" in line["response"]["body"]["choices"][0]["message"]["content"]
        assert list(line["response"]["body"]) == sorted(line["response"]["body"])
    errs = api.lines(done["error_file_id"])
    assert len(errs) == 3
    for e in errs:
        assert list(e) == ["id", "custom_id", "response", "error"]
        assert e["response"] is None and e["error"]["code"] is None
        reason = json.loads(e["error"]["message"])
        assert reason["type"] == "NonRetriableHttpStatus" and reason["details"]["status"] == 400
        assert "error" in json.loads(reason["details"]["body"])


def test_output_in_completion_order(emu, api):
    emu.configure(rate=50, retry_base=0.5)
    try:
        lines = [
            chat_line(i, x_emulator_status=503, x_emulator_fail_times=1) if i == 0 else chat_line(i)
            for i in range(4)
        ]
        b = api.wait(api.batch(lines)["id"])
    finally:
        emu.configure(rate=5000, retry_base=0.05)
    ids = [x["custom_id"] for x in api.lines(b["output_file_id"])]
    assert ids[-1] == "req-0" and sorted(ids) == [f"req-{i}" for i in range(4)]


@pytest.mark.parametrize("order", ["completion", "input"])
def test_requests_running_at_once_finish_in_any_order_unless_told_input(emu, api, order):
    emu.configure(order=order)
    try:
        b = api.wait(api.batch([chat_line(i) for i in range(200)])["id"])
    finally:
        emu.configure(order="completion")
    ids = [x["custom_id"] for x in api.lines(b["output_file_id"])]
    inputs = [f"req-{i}" for i in range(200)]
    assert sorted(ids) == sorted(inputs)
    assert (ids == inputs) is (order == "input")


def test_output_lines_once_served_never_move(emu, api):
    """A reader that skips the lines it has keeps a right file: requests finishing later come after."""
    emu.configure(rate=300)
    try:
        created = api.batch([chat_line(i) for i in range(150)])
        seen: list[str] = []
        reads = 0
        while len(seen) < 150:
            now = [x["custom_id"] for x in api.lines(created["output_file_id"])]
            assert now[: len(seen)] == seen
            reads += len(now) > len(seen)
            seen = now
            time.sleep(0.02)
    finally:
        emu.configure(rate=5000)
    assert reads > 2 and seen != [f"req-{i}" for i in range(150)]  # read as it grew, not in input order


def test_skip_limit_search_and_offset_ignored(api, done):
    oid = done["output_file_id"]
    everything = api.lines(oid)
    r = api.get(f"/files/{oid}/content", params={"skip": 3, "limit": 4})
    assert [json.loads(x) for x in r.text.splitlines()] == everything[3:7]
    assert r.headers["X-Last-Line"] == "7" and r.headers["X-Incomplete"] == "true"
    r = api.get(f"/files/{oid}/content", params={"skip": 8, "limit": 4})
    assert r.headers["X-Last-Line"] == "10" and r.headers["X-Incomplete"] == "false"
    assert api.lines(oid, skip=-5) == everything
    assert api.lines(oid, offset=5) == everything
    r = api.get(f"/files/{oid}/content", params={"limit": 0})
    assert len(r.text.splitlines()) == 1  # clamped to 1
    r = api.get(f"/files/{oid}/content", params={"limit": 500})
    assert len(r.text.splitlines()) == 10
    r = api.get(f"/files/{oid}/content", params={"search": "REQ-7"})
    assert [json.loads(x)["custom_id"] for x in r.text.splitlines()] == ["req-7"]
    assert "X-Last-Line" not in r.headers and r.headers["X-Incomplete"] == "false"
    r = api.get(f"/files/{oid}/content", params={"skip": 20})
    assert r.text == "" and r.headers["X-Last-Line"] == "20"
    assert api.get(f"/files/{oid}/content", params={"skip": "abc"}).status_code == 400


def test_headers_while_running_cut_to_completed_count(emu, api):
    emu.configure(rate=20)
    try:
        b = api.batch([chat_line(i) for i in range(30)])
        time.sleep(0.6)
        r = api.get(f"/files/{b['output_file_id']}/content")
        got = api.get(f"/batches/{b['id']}").json()["request_counts"]["completed"]
        n = len(r.text.splitlines())
        assert r.headers["X-Incomplete"] == "true"
        assert int(r.headers["X-Last-Line"]) == n and 0 < n <= got < 30
        r = api.get(f"/files/{b['output_file_id']}/content", params={"skip": 25})
        assert r.headers["X-Last-Line"] == "25" and r.text == ""
        r = api.get(f"/files/{b['output_file_id']}/content", params={"limit": 100})
        assert r.headers["X-Incomplete"] == "true"
    finally:
        emu.configure(rate=5000)
    api.wait(b["id"])
    r = api.get(f"/files/{b['output_file_id']}/content")
    assert r.headers["X-Incomplete"] == "false" and r.headers["X-Last-Line"] == "30"


def test_validating_output_is_incomplete(emu, api):
    emu.configure(start_delay=60)
    try:
        b = api.batch([chat_line(1)])
        r = api.get(f"/files/{b['output_file_id']}/content")
        assert r.text == "" and r.headers["X-Incomplete"] == "true" and r.headers["X-Last-Line"] == "0"
        api.post(f"/batches/{b['id']}/cancel")
    finally:
        emu.configure(start_delay=0)


def test_input_file_headers(api, done):
    r = api.get(f"/files/{done['input_file_id']}/content", params={"limit": 5})
    assert r.headers["X-Last-Line"] == "5" and r.headers["X-Incomplete"] == "true"
    r = api.get(f"/files/{done['input_file_id']}/content")
    assert "X-Last-Line" not in r.headers and r.headers["X-Incomplete"] == "false"
    assert [json.loads(x)["custom_id"] for x in r.text.splitlines()][:2] == ["req-0", "req-1"]


def test_deleted_batch_output_headers(api):
    b = api.wait(api.batch([chat_line(1)])["id"])
    api.delete(f"/batches/{b['id']}")
    r = api.get(f"/files/{b['output_file_id']}/content")
    assert r.headers["X-Incomplete"] == "false" and "X-Last-Line" not in r.headers and r.text.count("\n") == 1


def test_output_bytes_is_an_estimate(api, done):
    f = api.get(f"/files/{done['output_file_id']}").json()
    real = len(api.get(f"/files/{done['output_file_id']}/content").content)
    assert f["purpose"] == "batch_output" and f["bytes"] > 0 and f["bytes"] != real
    assert f["filename"] == f"batch-{done['id']}-output.jsonl" and "expires_at" not in f
    b = api.batch([chat_line(1)])
    assert api.get(f"/files/{b['error_file_id']}").json()["bytes"] == 0


def test_results_analytics_cost_estimate(emu, api, done):
    r = api.get(f"/batches/{done['id']}/results")
    rows = [json.loads(x) for x in r.text.splitlines()]
    assert [x["custom_id"] for x in rows][:3] == ["req-0", "req-1", "req-2"]  # input order
    assert r.headers["X-Incomplete"] == "false" and r.headers["X-Last-Line"] == "13"
    ok, bad = rows[0], rows[-1]
    assert list(ok) == ["id", "custom_id", "model", "input_body", "response_body", "error", "status"]
    assert (
        ok["status"] == "completed"
        and ok["response_body"]["object"] == "chat.completion"
        and ok["error"] is None
    )
    assert re.fullmatch(UUID, ok["id"])
    assert bad["status"] == "failed" and bad["response_body"] is None
    assert json.loads(bad["error"])["type"] == "NonRetriableHttpStatus"
    r = api.get(f"/batches/{done['id']}/results", params={"status": "failed", "limit": 2})
    assert r.headers["X-Last-Line"] == "2" and r.headers["X-Incomplete"] == "true"
    a = api.get(f"/batches/{done['id']}/analytics").json()
    assert (
        a["total_requests"] == 13
        and a["total_tokens"] == a["total_prompt_tokens"] + a["total_completion_tokens"] > 0
    )
    assert isinstance(a["total_cost"], str) and float(a["total_cost"]) > 0
    emu.configure(paused=True)
    try:
        fresh = api.batch([chat_line(1)])
        a = api.get(f"/batches/{fresh['id']}/analytics").json()
        assert a["total_tokens"] == 0 and a["total_cost"] == "0"
        time.sleep(0.2)
        api.post(f"/batches/{fresh['id']}/cancel")
        res = [json.loads(x) for x in api.get(f"/batches/{fresh['id']}/results").text.splitlines()]
        assert [x["status"] for x in res] == ["pending"]
    finally:
        emu.configure(paused=False)
    est = api.get(f"/files/{done['input_file_id']}/cost-estimate").json()
    assert est["total_requests"] == 13 and est["models"][0]["model"] == "Qwen/Qwen3.5-9B"
    assert isinstance(est["total_estimated_cost"], str) and float(est["total_estimated_cost"]) > 0
    est1h = api.get(
        f"/files/{done['input_file_id']}/cost-estimate", params={"completion_window": "1h"}
    ).json()
    assert float(est1h["total_estimated_cost"]) > float(est["total_estimated_cost"])


def test_a_ticks_completion_order_is_a_permutation_with_no_input_neighbours_side_by_side():
    """store.base.Order, drawn as a tick draws it: every sequence number once, never input order, and
    (from 7 requests up) no two lines in a row that were neighbours in the input (no rotation or
    reversal of it)."""
    import random

    from emulator.store.base import Order

    rng = random.Random(5)
    for n in [*range(1, 40), 250, 1999, 2000]:
        for _ in range(5):
            order = Order(100, n, rng)
            by_seq = {order.seq(i): i for i in range(n)}
            assert sorted(by_seq) == list(range(100, 100 + n))
            served = [by_seq[s] for s in range(100, 100 + n)]
            assert n == 1 or served != list(range(n))
            if n >= 7:
                assert all(abs(a - b) not in (1, n - 1) for a, b in zip(served, served[1:], strict=False)), n
