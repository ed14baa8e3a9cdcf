"""Restart on the same SQLite file after SIGKILL mid-batch; a 50,000-request batch; upload memory."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Api, chat_line
from emulator_server import EmulatorServer


def test_restart_after_sigkill_mid_batch(tmp_path):
    db = str(tmp_path / "emu.sqlite3")
    first = EmulatorServer("--start-delay", "0", "--rate", "400", db=db)
    try:
        api = Api(first)
        b = api.batch([chat_line(i) for i in range(1500)], metadata={"k": "v"})
        deadline = time.time() + 20
        while api.get(f"/batches/{b['id']}").json()["request_counts"]["completed"] < 200:
            assert time.time() < deadline
            time.sleep(0.05)
        before = {x["id"]: x for x in api.lines(b["output_file_id"])}
    finally:
        first.kill()
    assert 200 <= len(before) < 1500
    with EmulatorServer("--start-delay", "0", db=db) as second:
        api = Api(second)
        got = api.get(f"/batches/{b['id']}").json()
        assert got["metadata"]["k"] == "v" and got["request_counts"]["completed"] >= len(before)
        done = api.wait(b["id"])
        assert done["status"] == "completed" and done["request_counts"] == {
            "total": 1500,
            "completed": 1500,
            "failed": 0,
        }
        after = api.lines(b["output_file_id"])
        assert {x["custom_id"] for x in after} == {f"req-{i}" for i in range(1500)}
        by_id = {x["id"]: x for x in after}
        assert all(by_id[k] == v for k, v in before.items())  # nothing completed was lost or changed
        assert [x["id"] for x in after][: len(before)] == list(before)  # order kept
        assert api.get(f"/files/{b['input_file_id']}").json()["filename"] == "jobs.jsonl"


@pytest.mark.serial  # a time bound: runs alone, after the parallel run (make test)
def test_fifty_thousand_requests_well_under_a_minute():
    # at the rate scale tests use (the default 5,000/s would make this a 10 s wait on the rate)
    with EmulatorServer("--start-delay", "0", "--rate", "50000") as emu:
        api = Api(emu)
        content = "".join(json.dumps(chat_line(i, f"item {i}", max_tokens=32)) + "\n" for i in range(50_000))
        t0 = time.time()
        r = api.upload(content)
        assert r.status_code == 201, r.text
        upload_s = time.time() - t0
        t1 = time.time()
        b = api.create(r.json()["id"]).json()
        done = api.wait(b["id"], timeout=50)
        run_s = time.time() - t1
        assert done["request_counts"] == {"total": 50_000, "completed": 50_000, "failed": 0}
        resp = api.get(f"/files/{done['output_file_id']}/content")
        assert resp.headers["X-Last-Line"] == "50000" and resp.content.count(b"\n") == 50_000
        print(f"50k: upload {upload_s:.1f}s, processing {run_s:.1f}s")
        assert run_s < 30


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_upload_is_streamed_not_held_in_memory():
    with EmulatorServer() as emu:
        api = Api(emu)
        api.upload_ok([chat_line(0)])  # warm up the upload path
        base = vm_hwm_kb(emu.pid)
        pad = "p" * 900
        content = "".join(json.dumps(chat_line(i, pad)) + "\n" for i in range(30_000)).encode()
        assert len(content) > 30_000_000
        r = api.upload(content)
        assert r.status_code == 201 and r.json()["bytes"] == len(content)
        growth_mb = (vm_hwm_kb(emu.pid) - base) / 1024
        print(f"upload of {len(content) / 1e6:.0f} MB grew VmHWM by {growth_mb:.1f} MB")
        assert growth_mb < len(content) / 1e6 / 3


def test_sigterm_shuts_down_cleanly():
    emu = EmulatorServer()
    assert emu.base_url.startswith("http://127.0.0.1:") and emu.base_url.endswith("/v1")
    emu.stop()
    assert emu.proc.returncode == 0
    assert not any("Traceback" in line for line in emu.output)
