"""List envelopes, pagination and filters for files and batches (references/api_reference.md section 8)."""

from __future__ import annotations

import uuid

import pytest
from conftest import Api, chat_line
from emulator_server import EmulatorServer


@pytest.fixture(scope="module")
def fresh():
    with EmulatorServer("--start-delay", "0") as emu:
        yield Api(emu)


def test_empty_list_omits_first_last(fresh):
    for path in ("/files", "/batches"):
        body = fresh.get(path).json()
        assert body == {"object": "list", "data": [], "has_more": False}


def test_file_list_paging_order_purpose_search(fresh):
    ids = [fresh.upload_ok([chat_line(i)], filename=f"Part-{i}.jsonl")["id"] for i in range(25)]
    page = fresh.get("/files").json()
    assert len(page["data"]) == 20 and page["has_more"] is True
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    rest = fresh.get("/files", params={"after": page["last_id"]}).json()
    seen = [f["id"] for f in page["data"] + rest["data"]]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 25 and rest["has_more"] is False
    assert fresh.get("/files", params={"after": str(uuid.uuid4())}).json()["data"] == page["data"]
    assert fresh.get("/files", params={"after": "garbage"}).json()["data"] == page["data"]
    assert len(fresh.get("/files", params={"limit": 0}).json()["data"]) == 1
    assert len(fresh.get("/files", params={"limit": 1000}).json()["data"]) == 25
    asc = fresh.get("/files", params={"order": "asc", "limit": 101}).json()["data"]
    desc = fresh.get("/files", params={"order": "desc", "limit": 101}).json()["data"]
    assert asc == desc[::-1]
    r = fresh.get("/files", params={"order": "newest"})
    assert (r.status_code, r.text) == (400, "Order must be 'asc' or 'desc'")
    found = fresh.get("/files", params={"search": "part-13"}).json()["data"]
    assert [f["filename"] for f in found] == ["Part-13.jsonl"]
    fresh.upload(__import__("conftest").jsonl([chat_line(1)]), purpose="Batch")
    assert all(
        f["purpose"] == "batch"
        for f in fresh.get("/files", params={"purpose": "batch", "limit": 101}).json()["data"]
    )
    assert len(fresh.get("/files", params={"purpose": "Batch"}).json()["data"]) == 1
    b = fresh.wait(fresh.batch([chat_line(1)])["id"])
    outs = fresh.get("/files", params={"purpose": "batch_output"}).json()["data"]
    assert [f["id"] for f in outs] == [b["output_file_id"]]
    assert (
        fresh.get("/files", params={"purpose": "batch_error"}).json()["data"][0]["id"] == b["error_file_id"]
    )


def test_batch_list_filters(fresh):
    f = fresh.upload_ok([chat_line(1)], filename="special-input.jsonl")
    made = [fresh.create(f["id"], metadata={"tag": f"marker-{i}"}).json() for i in range(3)]
    for b in made:
        fresh.wait(b["id"])
    failed = fresh.wait(fresh.batch([chat_line(1, x_emulator_status=400)])["id"])
    listed = fresh.get("/batches", params={"limit": 101}).json()["data"]
    # Newest first by creation time; within one second, the later-created batch first (the server's
    # created_at has microseconds), not by id.
    assert [b["created_at"] for b in listed] == sorted((b["created_at"] for b in listed), reverse=True)
    mine = [b["id"] for b in listed if b["id"] in {x["id"] for x in made} | {failed["id"]}]
    assert mine == [failed["id"]] + [b["id"] for b in reversed(made)]
    assert listed[0]["metadata"]["context_type"] == "personal"
    r = fresh.get("/batches", params={"status": "running"})
    assert (r.status_code, r.text) == (
        400,
        "Unknown batch status filter: 'running'. Valid values: in_progress, completed, failed, cancelled, expired",
    )
    assert [b["id"] for b in fresh.get("/batches", params={"status": "failed"}).json()["data"]] == [
        failed["id"]
    ]
    assert [b["id"] for b in fresh.get("/batches", params={"search": "MARKER-1"}).json()["data"]] == [
        made[1]["id"]
    ]
    assert len(fresh.get("/batches", params={"search": "special-input"}).json()["data"]) == 3
    assert [b["id"] for b in fresh.get("/batches", params={"search": made[2]["id"][:13]}).json()["data"]] == [
        made[2]["id"]
    ]
    page = fresh.get("/batches", params={"limit": 2}).json()
    assert page["has_more"] is True and len(page["data"]) == 2
    nxt = fresh.get("/batches", params={"limit": 2, "after": page["last_id"]}).json()
    assert not {b["id"] for b in nxt["data"]} & {b["id"] for b in page["data"]}
    fresh.post(f"/batches/{made[0]['id']}/cancel")
    assert made[0]["id"] in [
        b["id"] for b in fresh.get("/batches", params={"status": "cancelled"}).json()["data"]
    ]
    assert fresh.get("/batches", params={"status": "in_progress"}).json()["data"] == []
    assert len(fresh.get("/batches", params={"completion_window": "1h"}).json()["data"]) == 0
    with_a = fresh.get("/batches", params={"include": "analytics", "limit": 1}).json()["data"][0]
    assert "total_tokens" in with_a["analytics"]
    assert fresh.get("/batches", params={"created_after": "2000-01-01T00:00:00Z"}).json()["data"]
    assert fresh.get("/batches", params={"created_before": "2000-01-01T00:00:00Z"}).json()["data"] == []
    assert fresh.get("/batches", params={"created_after": "yesterday"}).status_code == 400
