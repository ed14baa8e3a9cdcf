"""Batch creation, lifecycle, status rules, retries, cancel, retry, delete (references/api_reference.md
sections 2, 4 and 6)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from conftest import Api, chat_line
from emulator_server import EmulatorServer


def no_nulls(obj) -> bool:
    if isinstance(obj, dict):
        return all(v is not None and no_nulls(v) for v in obj.values())
    if isinstance(obj, list):
        return all(no_nulls(v) for v in obj)
    return True


@pytest.fixture
def paused(emu):
    emu.configure(paused=True)
    yield
    emu.configure(paused=False, start_delay=0)


def test_create_response_shape(emu, api):
    emu.configure(start_delay=30)
    try:
        f = api.upload_ok([chat_line(i) for i in range(3)])
        r = api.create(f["id"], metadata={"job": "x", "Created-By": "evil", "request_source": "evil"})
        assert r.status_code == 201
        b = r.json()
    finally:
        emu.configure(start_delay=0)
    assert b["status"] == "validating" and b["object"] == "batch"
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert b["input_file_id"] == f["id"] and b["output_file_id"] and b["error_file_id"]
    assert b["expires_at"] == b["created_at"] + 86400
    assert b["metadata"]["job"] == "x" and b["metadata"]["request_source"] == "api"
    assert "created_by_email" in b["metadata"] and "Created-By" not in b["metadata"]
    assert b["dwext"] == {"source": "api"}
    assert "in_progress_at" not in b and "errors" not in b and no_nulls(b)
    assert len(b["id"]) == 36
    r = api.create(f["id"], window="1h")
    assert r.json()["expires_at"] == r.json()["created_at"] + 3600
    # the endpoint is not compared with the lines' urls
    assert api.create(f["id"], endpoint="/v1/embeddings").status_code == 201


def test_create_check_order(api):
    f = api.upload_ok([chat_line(1)])
    fid = f["id"]
    r = api.post("/batches", data=json.dumps({"input_file_id": fid}), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api.post("/batches", data="{bad", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.text.startswith("Failed to parse the request body as JSON")
    r = api.post("/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions"})
    assert r.status_code == 422 and "missing field `completion_window`" in r.text
    r = api.create(fid, metadata={"n": 1})
    assert r.status_code == 422 and "metadata.n: invalid type: integer `1`, expected a string" in r.text
    r = api.create("not-a-uuid", window="2h", endpoint="/v2/x")
    assert (r.status_code, r.text) == (400, "Unsupported completion_window. Allowed values: 24h, 1h")
    assert api.create(fid, window="background").status_code == 403
    r = api.create("not-a-uuid", endpoint="/v2/x")
    assert r.status_code == 400
    assert r.text == (
        "Unsupported endpoint '/v2/x'. Supported: /v1/chat/completions, /v1/completions, /v1/embeddings, "
        "/v1/responses, /v1/messages"
    )
    r = api.create("not-a-uuid")
    assert (r.status_code, r.text) == (400, "Invalid input_file_id format")
    missing = str(uuid.uuid4())
    r = api.create(missing)
    assert (r.status_code, r.text) == (404, f"File with ID {missing} not found")


def test_other_users_file_is_403_on_create_404_on_get():
    with EmulatorServer("--api-key", "sk-other", "--start-delay", "0") as emu:
        mine, theirs = Api(emu, "sk-test"), Api(emu, "sk-other")
        f = theirs.upload_ok([chat_line(1)])
        assert mine.get(f"/files/{f['id']}").status_code == 404
        r = mine.create(f["id"])
        assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/plain")
        assert mine.get("/files").json()["data"] == []


def test_injected_402_and_capacity_429(emu, api):
    f = api.upload_ok([chat_line(1)])
    emu.configure(batch_create_error="balance")
    try:
        r = api.create(f["id"])
        assert (r.status_code, r.text) == (402, "Account balance too low. Please add credits to continue.")
        emu.configure(batch_create_error="capacity")
        r = api.create(f["id"], window="1h")
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        body = r.json()
        assert body["error"] == "too_many_requests" and body["retry_after_seconds"] == 30
        assert body["message"].startswith("Insufficient capacity for 1h completion window.")
    finally:
        emu.configure(batch_create_error=None)


def test_validating_then_in_progress_after_delay(emu, api):
    emu.configure(start_delay=0.6, paused=True)
    try:
        b = api.batch([chat_line(1)])
        assert api.get(f"/batches/{b['id']}").json()["status"] == "validating"
        time.sleep(1.0)
        got = api.get(f"/batches/{b['id']}").json()
        assert got["status"] == "in_progress" and "in_progress_at" in got
    finally:
        emu.configure(start_delay=0, paused=False)
    assert api.wait(b["id"])["status"] == "completed"


def test_all_failed_and_partly_failed(api):
    bad = {"x_emulator_status": 400}
    b = api.wait(api.batch([chat_line(i, **bad) for i in range(3)])["id"])
    assert (
        b["status"] == "failed" and "failed_at" in b and "finalizing_at" not in b and "completed_at" not in b
    )
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert api.lines(b["output_file_id"]) == []
    b = api.wait(api.batch([chat_line(0, **bad), chat_line(1)])["id"])
    assert b["status"] == "completed" and b["finalizing_at"] == b["completed_at"]
    assert "failed_at" not in b
    assert b["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


def test_expired_at_whatever_the_status():
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        done = api.wait(api.batch([chat_line(1)])["id"])
        assert "expired_at" not in done
        emu.configure(paused=True)
        running = api.batch([chat_line(2)])
        emu.advance_clock(86400 + 5)
        done = api.get(f"/batches/{done['id']}").json()
        assert done["status"] == "completed" and done["expired_at"] == done["expires_at"]
        late = api.get(f"/batches/{running['id']}").json()
        assert late["status"] == "in_progress" and late["expired_at"] == late["expires_at"]
        ids = [b["id"] for b in api.get("/batches", params={"status": "expired"}).json()["data"]]
        assert running["id"] in ids
        emu.configure(paused=False)
        # unfinished work continues past the deadline and never shows `expired`
        assert api.wait(running["id"])["status"] == "completed"


def test_retriable_and_non_retriable_upstream_statuses(api):
    lines = [
        chat_line("flaky", x_emulator_status=503, x_emulator_fail_times=2),
        chat_line("r429", x_emulator_status=429),
        chat_line("r404", x_emulator_status=404),
        chat_line("n422", x_emulator_status=422),
        chat_line("n401", x_emulator_status=401),
    ]
    b = api.wait(api.batch(lines)["id"])
    out = api.lines(b["output_file_id"])
    assert [x["custom_id"] for x in out] == ["req-flaky"]
    errors = {x["custom_id"]: json.loads(x["error"]["message"]) for x in api.lines(b["error_file_id"])}
    assert (
        errors["req-r429"]["type"] == "RetriableHttpStatus" and errors["req-r429"]["details"]["status"] == 429
    )
    assert errors["req-r404"]["type"] == "RetriableHttpStatus"
    assert (
        errors["req-n422"]["type"] == "NonRetriableHttpStatus"
        and errors["req-n422"]["details"]["status"] == 422
    )
    assert json.loads(errors["req-n401"]["details"]["body"])["error"]["message"]
    # non-retriable ones fail at once, so they come before the exhausted retries in the error file
    order = [x["custom_id"] for x in api.lines(b["error_file_id"])]
    assert set(order[:2]) == {"req-n422", "req-n401"}


def test_cancel_semantics(emu, api, paused):
    b = api.batch([chat_line(i) for i in range(5)])
    emu.configure(start_delay=0)
    # populated but nothing run while paused
    deadline = time.time() + 5
    while api.get(f"/batches/{b['id']}").json()["status"] != "in_progress" and time.time() < deadline:
        time.sleep(0.05)
    r = api.post(f"/batches/{b['id']}/cancel")
    c = r.json()
    assert r.status_code == 200 and c["status"] == "cancelled"
    assert c["cancelling_at"] == c["cancelled_at"]
    assert c["request_counts"] == {"total": 5, "completed": 0, "failed": 0}
    emu.configure(paused=False)
    time.sleep(0.3)
    again = api.post(f"/batches/{b['id']}/cancel")
    assert again.status_code == 200 and again.json()["request_counts"]["completed"] == 0
    r = api.get(f"/files/{c['output_file_id']}/content")
    assert r.text == "" and r.headers["X-Incomplete"] == "false" and r.headers["X-Last-Line"] == "0"
    assert api.lines(c["error_file_id"]) == []


def test_cancel_completed_batch_relabels(api):
    b = api.wait(api.batch([chat_line(1)])["id"])
    r = api.post(f"/batches/{b['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert api.get(f"/batches/{b['id']}").json()["status"] == "cancelled"
    assert r.json()["request_counts"]["completed"] == 1


def test_cancel_while_validating_is_cancelling_forever(emu, api):
    emu.configure(start_delay=60)
    try:
        b = api.batch([chat_line(1)])
        c = api.post(f"/batches/{b['id']}/cancel").json()
        assert c["status"] == "cancelling"
    finally:
        emu.configure(start_delay=0)
    time.sleep(0.3)
    assert api.get(f"/batches/{b['id']}").json()["status"] == "cancelling"
    r = api.get(f"/files/{b['output_file_id']}/content")
    assert r.headers["X-Incomplete"] == "true"


def test_retry_and_retry_requests(emu, api):
    b = api.wait(api.batch([chat_line(0, x_emulator_status=400), chat_line(1)])["id"])
    assert len(api.lines(b["error_file_id"])) == 1
    r = api.post(f"/batches/{b['id']}/retry")
    assert r.status_code == 200
    assert r.json()["expires_at"] == b["expires_at"] and "completed_at" not in r.json()
    b2 = api.wait(b["id"])
    assert b2["status"] == "completed" and b2["request_counts"]["failed"] == 1
    # nothing failed, not cancelled
    ok = api.wait(api.batch([chat_line(1)])["id"])
    r = api.post(f"/batches/{ok['id']}/retry")
    assert (r.status_code, r.text) == (
        400,
        "Nothing to retry: no failed or canceled requests, and the batch is not cancelled",
    )
    line_id = api.lines(b2["error_file_id"])[0]["id"]
    r = api.post(f"/batches/{b['id']}/retry-requests", json={"request_ids": [line_id, "junk"]})
    assert (r.status_code, r.text) == (400, "No valid request IDs provided")
    emu.configure(paused=True)
    try:
        bare = line_id.removeprefix("batch_req_")
        r = api.post(f"/batches/{b['id']}/retry-requests", json={"request_ids": [bare]})
        assert r.status_code == 200 and r.json()["status"] == "in_progress"
        # the error file shrank
        assert api.lines(b["error_file_id"]) == []
        res = [json.loads(x) for x in api.get(f"/batches/{b['id']}/results").text.splitlines()]
        assert [x["status"] for x in res] == ["pending", "completed"]
    finally:
        emu.configure(paused=False)
    assert api.wait(b["id"])["request_counts"]["failed"] == 1


def test_cancel_then_retry_resumes(emu, api, paused):
    b = api.batch([chat_line(i) for i in range(4)])
    time.sleep(0.2)
    assert api.post(f"/batches/{b['id']}/cancel").json()["status"] == "cancelled"
    r = api.post(f"/batches/{b['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "in_progress" and "cancelled_at" not in r.json()
    emu.configure(paused=False)
    done = api.wait(b["id"])
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 4


def test_delete_batch(api):
    b = api.wait(api.batch([chat_line(1)])["id"])
    r = api.delete(f"/batches/{b['id']}")
    assert r.status_code == 204 and r.content == b""
    assert api.get(f"/batches/{b['id']}").status_code == 404
    assert api.post(f"/batches/{b['id']}/cancel").status_code == 404
    assert b["id"] not in [x["id"] for x in api.get("/batches", params={"limit": 101}).json()["data"]]
    assert len(api.lines(b["output_file_id"])) == 1


def test_delete_input_file_cancels_running_batches(emu, api, paused):
    f = api.upload_ok([chat_line(1), chat_line(2)])
    b = api.create(f["id"]).json()
    time.sleep(0.2)
    r = api.delete(f"/files/{f['id']}")
    assert r.status_code == 200 and r.json() == {"id": f["id"], "object": "file", "deleted": True}
    got = api.get(f"/batches/{b['id']}").json()
    assert got["status"] == "cancelled" and got["input_file_id"] == ""
    r = api.delete(f"/files/{f['id']}")
    assert (r.status_code, r.text) == (404, f"File with ID {f['id']} not found")
    # deleting an output file removes output_file_id
    assert api.delete(f"/files/{b['output_file_id']}").status_code == 200
    got = api.get(f"/batches/{b['id']}").json()
    assert "output_file_id" not in got and "error_file_id" in got
