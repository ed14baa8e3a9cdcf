"""A batch that finished, was fetched, then re-run with /retry (which un-cancels) and finished again:
the error file was rewritten under the saved cursor, so fetch must read it again from the start."""

from __future__ import annotations

import time

import requests
from emulator_server import EmulatorServer


def test_refetch_after_cancel_retry_and_second_finish(tmp_path, h):
    lines = h.chat_lines(2)
    lines[1]["body"]["x_emulator_status"] = 400  # the emulator's hook: this request always fails
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        auth = {"Authorization": f"Bearer {h.CANARY_KEY}"}
        emu.configure(paused=True, fail_rate=1.0, rate=1)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        code, doc, err = h.run_script("submit", str(src), env=env)
        assert code == 0, err
        batch_id, manifest = doc["batches"][0]["batch_id"], doc["manifest"]

        # first run: the first request fails (fail_rate 1), then the batch is cancelled before the second
        emu.configure(paused=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            batch = requests.get(f"{emu.base_url}/batches/{batch_id}", headers=auth, timeout=10).json()
            if batch["request_counts"]["failed"] >= 1:
                break
            time.sleep(0.02)
        emu.configure(paused=True)
        assert h.run_script("cancel_batch", "--manifest", manifest, env=env).code == 0
        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
        assert code == 6 and doc["counts"]["failed"] == 1 and doc["counts"]["missing"] == 1, doc

        # /retry un-cancels: now the first request succeeds and the second fails; the error file holds
        # one line again, but a different one, so the saved cursor (1) matches the count by chance
        emu.configure(fail_rate=0.0, rate=1000, paused=False)
        emu.advance_clock(5)  # the second finish gets another timestamp
        reply = requests.post(f"{emu.base_url}/batches/{batch_id}/retry", headers=auth, timeout=10)
        assert reply.status_code == 200, reply.text
        code, doc, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
        assert (
            doc["batches"][0]["status"] == "completed" and doc["batches"][0]["request_counts"]["failed"] == 1
        )

        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 6 and doc["complete"] is False, err  # finished, but one input has no usable answer
    assert doc["counts"] == {
        "requests": 2,
        "completed": 1,
        "failed": 1,
        "truncated": 0,
        "invalid": 0,
        "pending": 0,
        "missing": 0,
    }, doc
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["status"] for r in results] == ["completed", "failed"]
    assert results[1]["error"]["status"] == 400
    assert [r["custom_id"] for r in h.read_jsonl(tmp_path / "jobs.results" / "retry.jsonl")] == [
        lines[1]["custom_id"]
    ]


def test_fetch_collects_what_a_batch_deleted_on_the_server_produced(emulator, env, tmp_path, h):
    lines = h.chat_lines(4)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    batch_id, manifest = doc["batches"][0]["batch_id"], doc["manifest"]
    assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 0
    auth = {"Authorization": f"Bearer {h.CANARY_KEY}"}
    assert (
        requests.delete(f"{emulator.base_url}/batches/{batch_id}", headers=auth, timeout=10).status_code
        == 204
    )

    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0 and doc["complete"] is True, doc  # gone, but every input has its answer on disk
    assert doc["counts"]["completed"] == 4 and "no longer exists" in err
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all("Question number" in r["content"] for r in results)
    # a bare id that never had a manifest still gets the server's 404
    code, doc, err = h.run_script(
        "fetch_results", "00000000-0000-4000-8000-000000000000", env=env, cwd=tmp_path
    )
    assert code == 4 and "not found" in doc["error"]["message"]


def test_a_batch_deleted_after_its_fetch_is_not_read_again(emulator, env, tmp_path, h):
    """Fetched, then deleted on the server: the next fetch describes it as the manifest recorded it,
    finish time included, so it is not taken for a batch that finished again (whose error file would
    be read again, and is gone)."""
    lines = h.chat_lines(4)
    lines[1]["body"]["x_emulator_status"] = 400  # the emulator's hook: this request always fails
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    batch_id, manifest = doc["batches"][0]["batch_id"], doc["manifest"]
    polled = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    assert polled.code == 6 and polled.doc["all_terminal"] is True  # 6: finished with a failure
    first = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert first.code == 6 and first.doc["counts"]["failed"] == 1, first.doc
    auth = {"Authorization": f"Bearer {h.CANARY_KEY}"}
    reply = requests.delete(f"{emulator.base_url}/batches/{batch_id}", headers=auth, timeout=10)
    assert reply.status_code == 204
    mark = len(emulator.requests_log())
    again = h.run_script("fetch_results", "--manifest", manifest, env=env)
    contents = [c["path"] for c in emulator.requests_log()[mark:] if c["path"].endswith("/content")]
    assert again.code == 6 and again.doc["counts"] == first.doc["counts"], again.doc
    assert contents == []  # nothing read again
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["status"] for r in results] == ["completed", "failed", "completed", "completed"]
