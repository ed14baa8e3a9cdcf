"""End to end: submit -> poll -> fetch_results against the emulator over HTTP, scripts as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest


def _submit_and_wait(h, env, tmp_path, lines, name="jobs.jsonl", *extra):
    src = h.write_jsonl(tmp_path / name, lines)
    code, doc, err = h.run_script("submit", str(src), *extra, env=env)
    assert code == 0, err
    manifest = doc["manifest"]
    code, doc, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    return src, manifest, code, doc


def test_chat_flow_results_in_input_order(emulator, env, tmp_path, h):
    lines = h.chat_lines(40)
    src, manifest, code, poll = _submit_and_wait(h, env, tmp_path, lines)
    assert code == 0
    [batch] = poll["batches"]
    assert batch["status"] == "completed" and batch["terminal"] and batch["percent"] == 100.0
    assert poll["next_check_seconds"] is None

    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0, err
    assert doc["complete"] is True
    assert doc["counts"] == {
        "requests": 40,
        "completed": 40,
        "failed": 0,
        "truncated": 0,
        "invalid": 0,
        "pending": 0,
        "missing": 0,
    }
    assert doc["usage"]["total_tokens"] > 0
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all(r["status"] == "completed" and r["content"] for r in results)
    assert "Question number 7" in results[7]["content"]
    assert (tmp_path / "jobs.results" / "retry.jsonl").read_bytes() == b""
    # the manifest records the whole story
    data = json.loads((tmp_path / "jobs.jsonl.manifest.json").read_text())
    shard = data["shards"][0]
    assert shard["status"] == "completed" and shard["final_counts"]["completed"] == 40
    assert shard["downloads"]["output"]["complete"] is True
    # a second fetch changes nothing and costs at most one status call per batch
    before = len(emulator.requests_log())
    code, doc2, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0 and doc2["counts"] == doc["counts"]
    assert len(emulator.requests_log()) - before == 1
    h.assert_no_key_in_tree(tmp_path)


def test_embeddings_flow(emulator, env, tmp_path, h):
    lines = h.embedding_lines(12)
    _, manifest, code, _ = _submit_and_wait(h, env, tmp_path, lines, "emb.jsonl")
    assert code == 0
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0, err
    results = h.read_jsonl(tmp_path / "emb.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all(isinstance(r["embedding"], list) and r["embedding"] for r in results)
    assert all(isinstance(x, float) for x in results[0]["embedding"])


def test_dry_run_makes_no_calls_and_rerun_is_idempotent(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(5))
    code, doc, err = h.run_script("submit", str(src), "--dry-run", env=env)
    assert code == 0 and doc["dry_run"] and doc["requests"] == 5
    assert doc["estimated_input_tokens"] > 0
    assert emulator.requests_log() == [] and not (tmp_path / "jobs.jsonl.manifest.json").exists()
    # the closing line on stderr says what the plan is, not a bare "success"
    assert err.splitlines()[-1] == (
        "submit.py: dry run: 1 batch(es) would be created, 5 requests, "
        f"~{doc['estimated_input_tokens']:,} input tokens; nothing sent (exit 0)"
    )

    code, first, err = h.run_script("submit", str(src), "--metadata", "project=t", env=env)
    assert code == 0 and first["created"] == 1
    for _ in range(2):
        code, again, err = h.run_script("submit", str(src), "--metadata", "project=t", env=env)
        assert code == 0 and again["created"] == 0 and again["existing"] == 1
        assert again["batches"][0]["batch_id"] == first["batches"][0]["batch_id"]
    stats = emulator.stats()
    assert stats["files_created"] == 1 and stats["batches_created"] == 1
    # --force resubmits on purpose
    code, forced, err = h.run_script("submit", str(src), "--force", env=env)
    assert code == 0 and forced["created"] == 1
    assert emulator.stats()["batches_created"] == 2


def test_multi_shard_submit(emulator, env, tmp_path, h):
    lines = h.chat_lines(25)
    src, manifest, code, poll = _submit_and_wait(
        h, env, tmp_path, lines, "jobs.jsonl", "--max-requests", "10"
    )
    assert code == 0 and len(poll["batches"]) == 3
    assert emulator.stats()["batches_created"] == 3
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0, err
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert len({r["batch_id"] for r in results}) == 3


def test_a_multi_shard_submit_creates_each_batch_right_after_its_upload(emulator, env, tmp_path, h):
    """Pipelined: the server starts on the first shard while the others upload (issue 15)."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(40))
    code, doc, err = h.run_script("submit", str(src), "--max-requests", "10", env=env)
    assert code == 0 and doc["created"] == 4, err
    posts = [e["path"].rsplit("/", 1)[-1] for e in emulator.requests_log() if e["method"] == "POST"]
    assert posts == ["files", "batches"] * 4, posts


def test_poll_wait_asks_about_a_finished_batch_no_more(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "quick.jsonl", h.chat_lines(2))
    slow = h.write_jsonl(tmp_path / "slow.jsonl", h.chat_lines(60, prefix="slow"))
    quick_id = h.run_script("submit", str(src), env=env).doc["batches"][0]["batch_id"]
    poll = h.run_script("poll", quick_id, "--wait", "--interval", "0.1", env=env)
    assert poll.code == 0
    emulator.configure(paused=True)  # the slow batch runs until poll has seen it running twice
    slow_id = h.run_script("submit", str(slow), env=env).doc["batches"][0]["batch_id"]
    before = len(emulator.requests_log())
    ran: list = []
    waiter = threading.Thread(
        target=lambda: ran.append(
            h.run_script("poll", quick_id, slow_id, "--wait", "--interval", "0.1", env=env)
        )
    )
    waiter.start()
    h.wait_until(lambda: sum(e["path"].endswith(slow_id) for e in emulator.requests_log()[before:]) >= 2)
    emulator.configure(paused=False)
    waiter.join(120)
    code, poll, err = ran[0]
    assert code == 0 and poll["checks"] >= 3, poll
    log = emulator.requests_log()[before:]
    asked = [e for e in log if e["method"] == "GET" and e["path"].endswith(quick_id)]
    assert len(asked) == 1  # seen finished at the first check, never asked about again
    assert len([e for e in log if e["path"].endswith(slow_id)]) == poll["checks"]


def test_next_check_grows_with_the_time_left():
    from doubleword.status import next_check_seconds

    now = 1_000_000.0
    # 7.5% of a 5-minute batch after 22.5 s: the rest takes about 277 s, so not "5 s" again and again
    batch = {
        "status": "in_progress",
        "created_at": now - 22.5,
        "request_counts": {"total": 1000, "completed": 75},
    }
    assert 60 <= next_check_seconds(batch, now) <= 150
    nearly = {**batch, "created_at": now - 290, "request_counts": {"total": 1000, "completed": 990}}
    assert next_check_seconds(nearly, now) == 5
    assert next_check_seconds({**batch, "status": "completed"}, now) is None


def test_invalid_input_uploads_nothing(emulator, env, tmp_path, h):
    lines = h.chat_lines(3)
    lines[1]["custom_id"] = lines[0]["custom_id"]
    src = h.write_jsonl(tmp_path / "bad.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 4 and doc["ok"] is False and doc["validation"][0]["valid"] is False
    assert emulator.requests_log() == []


def test_max_cost_stops_before_creating(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(20))
    code, doc, err = h.run_script("submit", str(src), "--max-cost", "0", env=env)
    assert code == 4 and doc["error"]["type"] == "cost_limit", doc
    assert emulator.stats()["batches_created"] == 0 and "check later" not in err
    estimate = doc["estimated_cost_usd"]
    code, doc, err = h.run_script("submit", str(src), "--max-cost", "100", env=env)
    assert code == 0 and doc["created"] == 1 and doc["estimated_cost_usd"] == estimate  # what was allowed
    stats = emulator.stats()
    assert stats["files_created"] == 1 and stats["batches_created"] == 1


def test_all_failed_batch(tmp_path, h):
    from emulator_server import EmulatorServer

    with EmulatorServer("--start-delay", "0", "--fail-rate", "1", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(8)
        _, manifest, code, poll = _submit_and_wait(h, env, tmp_path, lines)
        assert code == 6 and poll["batches"][0]["status"] == "failed"
        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 6, err
    assert doc["finished"] is True and doc["complete"] is False and doc["counts"]["failed"] == 8
    assert sum(doc["failures_by_type"].values()) == 8
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert all(r["status"] == "failed" and r["error"]["type"] and r["error"]["message"] for r in results)
    retry = h.read_jsonl(tmp_path / "jobs.results" / "retry.jsonl")
    assert retry == lines  # the original requests, ready to resubmit


def test_partial_results_while_running_then_follow(emulator, env, tmp_path, h):
    emulator.configure(rate=10)
    lines = h.chat_lines(60)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    manifest = doc["manifest"]
    # held part-way, however slow the machine: paused once the first answers are in, resumed for --follow
    h.wait_until(lambda: h.server_counts(emulator, doc["batches"][0]["batch_id"])["completed"] > 0)
    emulator.configure(paused=True)
    code, poll, err = h.run_script("poll", "--manifest", manifest, env=env)
    assert code == 7 and poll["next_check_seconds"] >= 1 and not poll["all_terminal"]
    code, part, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 7 and part["complete"] is False and part["next_check_seconds"] >= 1
    assert part["counts"]["pending"] > 0 and part["counts"]["requests"] == 60
    emulator.configure(paused=False, rate=0)
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", manifest, "--follow", "--interval", "0.2", "--timeout", "30", env=env
    )
    assert code == 0 and doc["complete"] and doc["next_check_seconds"] is None, err
    assert doc["counts"]["completed"] == 60
    output = h.read_jsonl(tmp_path / "jobs.results" / "output.jsonl")
    assert len(output) == 60 and len({o["id"] for o in output}) == 60


def test_poll_wait_timeout_and_deadline(emulator, env, tmp_path, h):
    emulator.configure(paused=True)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(5))
    code, doc, err = h.run_script("submit", str(src), "--window", "1h", env=env)
    manifest = doc["manifest"]
    code, poll, err = h.run_script(
        "poll", "--manifest", manifest, "--wait", "--timeout", "0.5", "--interval", "0.1", env=env
    )
    assert code == 7 and poll["checks"] >= 2
    assert poll["batches"][0]["overdue"] is False and "overdue" not in err.splitlines()[-1]
    emulator.advance_clock(2 * 3600)
    code, poll, err = h.run_script("poll", "--manifest", manifest, env=env)
    assert code == 7
    view = poll["batches"][0]
    assert view["overdue"] is True and view["expired_at"] and not view["terminal"]
    assert "1 batch(es) overdue (past expires_at, still running)" in err.splitlines()[-1], err  # said, too


def test_cancel_running_and_refuse_finished(emulator, env, tmp_path, h):
    emulator.configure(paused=True)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(5))
    code, doc, err = h.run_script("submit", str(src), env=env)
    batch_id = doc["batches"][0]["batch_id"]
    manifest = doc["manifest"]
    code, doc, err = h.run_script("cancel_batch", "--manifest", manifest, env=env)
    assert code == 0 and doc["batches"][0]["cancelled"] is True
    code, poll, err = h.run_script("poll", batch_id, env=env)
    assert code == 6 and poll["batches"][0]["status"] == "cancelled"
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 6 and doc["finished"] and not doc["complete"] and doc["counts"]["missing"] == 5
    assert len(h.read_jsonl(tmp_path / "jobs.results" / "retry.jsonl")) == 5
    # cancelling it again is a no-op success, and sends no second cancel
    before = len([r for r in emulator.requests_log() if r["path"].endswith("/cancel")])
    code, doc, err = h.run_script("cancel_batch", batch_id, env=env)
    assert code == 0 and doc["batches"][0]["already"] is True, doc
    assert len([r for r in emulator.requests_log() if r["path"].endswith("/cancel")]) == before

    emulator.configure(paused=False)
    src2 = h.write_jsonl(tmp_path / "done.jsonl", h.chat_lines(3))
    _, manifest2, code, poll = _submit_and_wait(h, env, tmp_path, h.read_jsonl(src2), "done.jsonl")
    done_id = poll["batches"][0]["batch_id"]
    code, doc, err = h.run_script("cancel_batch", done_id, env=env)
    assert code == 4 and "completed" in doc["error"]["message"]
    code, poll, err = h.run_script("poll", done_id, env=env)
    assert poll["batches"][0]["status"] == "completed"
    code, doc, err = h.run_script("cancel_batch", done_id, "--force", env=env)
    assert code == 0


def test_list_batches(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    for i in range(3):
        code, doc, err = h.run_script("submit", str(src), "--force", "--metadata", f"n={i}", env=env)
        assert code == 0
    code, doc, err = h.run_script("list_batches", "--limit", "2", env=env)
    assert code == 0 and doc["count"] == 2 and doc["has_more"] is True
    code, doc, err = h.run_script("list_batches", "--all", env=env)
    assert code == 0 and doc["count"] == 3
    assert {b["metadata"].get("n") for b in doc["batches"]} == {"0", "1", "2"}


@pytest.mark.parametrize("name", ["submit", "poll", "fetch_results", "list_batches", "cancel_batch"])
def test_help_and_missing_key(name, tmp_path, h):
    proc = subprocess.run(
        [sys.executable, str(h.SCRIPTS / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and "exit codes" in proc.stdout and "examples" in proc.stdout
    env = h.script_env("http://127.0.0.1:9/v1", key="")
    args = {"submit": [str(h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(1)))], "list_batches": []}
    code, doc, err = h.run_script(name, *args.get(name, ["some-batch-id"]), env=env)
    assert code == 3 and "DOUBLEWORD_API_KEY" in doc["error"]["message"]


def test_an_input_over_the_per_file_limits_is_sharded_not_refused(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(50_001))  # one over the server's limit
    code, doc, err = h.run_script("submit", str(src), "--uploads", "2", env=env, timeout=180)
    assert code == 0 and doc["created"] == 2, err
    assert [b["requests"] for b in doc["batches"]] == [50_000, 1]
    assert emulator.stats()["files_created"] == emulator.stats()["batches_created"] == 2


def test_cancelling_a_job_cancels_what_runs_and_leaves_its_finished_rounds(emulator, env, tmp_path, h):
    """cancel_batch.py --manifest on a job whose round 1 finished and round 2 runs: round 2 is cancelled,
    round 1 left as it is, exit 0 (it was exit 4, "refusing to cancel finished batches", though the job
    was cancelled). A finished batch named by its id is still refused."""
    emulator.configure(fail_rate=1.0)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    manifest = doc["manifest"]
    first = doc["batches"][0]["batch_id"]
    assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 6
    emulator.configure(fail_rate=0.0, paused=True)
    code, doc, err = h.run_script("submit", "--resubmit", "--manifest", manifest, env=env)
    assert code == 0, doc
    second = doc["batches"][0]["batch_id"]
    code, doc, err = h.run_script("cancel_batch", "--manifest", manifest, env=env)
    assert code == 0 and doc["ok"] is True, doc
    by_id = {b["batch_id"]: b for b in doc["batches"]}
    assert by_id[first]["finished"] is True and by_id[first]["cancelled"] is False
    assert by_id[second]["cancelled"] is True
    assert "1 of the job already finished (left as they are)" in err.splitlines()[-1]
    code, doc, err = h.run_script("poll", first, env=env)
    assert doc["batches"][0]["status"] == "failed"  # not relabelled
    code, doc, err = h.run_script("cancel_batch", first, env=env)
    assert code == 4 and doc["batches"][0]["refused"] is True
