"""fetch reports the server's real cost, and --delete-remote removes the job's files once results are safe."""

from __future__ import annotations

from decimal import Decimal

import requests


def _files(emulator):
    reply = requests.get(
        f"{emulator.base_url}/files", headers=emulator.headers, params={"limit": 100}, timeout=10
    )
    return {f["id"] for f in reply.json()["data"]}


def test_cost_from_analytics_and_delete_remote_after_everything_is_on_disk(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(6))
    code, doc, err = h.run_script("submit", str(src), "--max-requests", "3", env=env)
    assert code == 0, err
    manifest = doc["manifest"]
    shards = doc["batches"]
    h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--delete-remote", env=env)
    assert code == 0 and doc["complete"] is True, (doc, err)
    cost = doc["cost"]
    assert [b["batch_id"] for b in cost["per_batch"]] == [s["batch_id"] for s in shards]
    assert Decimal(cost["total"]) == sum(Decimal(b["total_cost"]) for b in cost["per_batch"])
    assert Decimal(cost["total"]) > 0 and cost["tokens"]["total_tokens"] > 0
    job_files = set()
    for batch in doc["batches"]:
        job_files |= {batch["output_file_id"], batch["error_file_id"]}
    job_files |= {s["input_file_id"] for s in shards}
    assert doc["delete_remote"]["done"] is True and set(doc["delete_remote"]["deleted"]) == job_files
    assert not job_files & _files(emulator)
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert len(results) == 6 and all(r["status"] == "completed" and r["content"] for r in results)
    # a later fetch still answers from what is on disk
    code, again, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0 and again["counts"]["completed"] == 6, (again, err)
    assert (tmp_path / "jobs.results" / "results.jsonl").read_text().count("\n") == 6


def test_delete_remote_is_refused_while_a_batch_runs(emulator, env, tmp_path, h):
    emulator.configure(paused=True)
    try:
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
        code, doc, err = h.run_script("submit", str(src), env=env)
        assert code == 0, err
        before = _files(emulator)
        code, doc, err = h.run_script(
            "fetch_results", "--manifest", doc["manifest"], "--delete-remote", env=env
        )
    finally:
        emulator.configure(paused=False)
    assert (
        code == 7
        and doc["delete_remote"]["done"] is False
        and "nothing was deleted" in doc["delete_remote"]["reason"]
    )
    assert _files(emulator) == before
