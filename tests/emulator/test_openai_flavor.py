"""The optional --flavor openai switch: prefixed ids, JSON errors, no paging headers, null output file id
when everything failed, batch_cancelled / batch_expired error lines, `expired` reachable."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Api, chat_line
from emulator_server import EmulatorServer


@pytest.fixture(scope="module")
def oai():
    with EmulatorServer("--flavor", "openai", "--start-delay", "0") as emu:
        yield Api(emu)


def test_prefixed_ids_and_json_errors(oai):
    r = oai.upload(json.dumps(chat_line(1)) + "\n")
    assert r.status_code == 200 and r.json()["id"].startswith("file-")
    fid = r.json()["id"]
    r = oai.create(fid)
    assert r.status_code == 200 and r.json()["id"].startswith("batch_")
    b = oai.wait(r.json()["id"])
    assert b["output_file_id"].startswith("file-") and b["error_file_id"] is None
    resp = oai.get(f"/files/{b['output_file_id']}/content")
    assert "X-Incomplete" not in resp.headers and "X-Last-Line" not in resp.headers
    r = oai.get("/batches/batch_nope")
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid batch ID format"
    assert oai.post(f"/batches/{b['id']}/cancel").status_code == 409


def test_all_failed_has_null_output_and_status_code_lines(oai):
    b = oai.wait(oai.batch([chat_line(1, x_emulator_status=400)])["id"])
    assert b["status"] == "failed" and b["output_file_id"] is None
    line = oai.lines(b["error_file_id"])[0]
    assert line["response"]["status_code"] == 400 and line["error"] is None


def test_cancelled_and_expired_lines():
    with EmulatorServer("--flavor", "openai", "--start-delay", "0") as emu:
        api = Api(emu)
        emu.configure(paused=True)
        c = api.batch([chat_line(i) for i in range(3)])
        x = api.batch([chat_line(i) for i in range(2)])
        time.sleep(0.3)
        got = api.post(f"/batches/{c['id']}/cancel").json()
        assert got["status"] == "cancelled"
        codes = [ln["error"]["code"] for ln in api.lines(got["error_file_id"])]
        assert codes == ["batch_cancelled"] * 3
        emu.advance_clock(86400 + 10)
        exp = api.wait(x["id"], statuses=("expired",))
        assert exp["expired_at"] == exp["expires_at"]
        assert [ln["error"]["code"] for ln in api.lines(exp["error_file_id"])] == ["batch_expired"] * 2
