"""Crashes, kills, faults and OpenAI-shaped servers: nothing created twice, downloads resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _follow(h, manifest, env, **kw):
    """fetch_results --follow until every batch of the job has finished."""
    return h.run_script(
        "fetch_results", "--manifest", manifest, "--follow", "--interval", "0.1", env=env, **kw
    )


def _manifest_cursor(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    fetch = data.get("fetch") or {}
    return int(((fetch.get("files") or {}).get("output") or {}).get("lines", 0))


def test_killed_fetch_resumes_byte_identical(tmp_path, h):
    with h.start_emulator("--fail-rate", "0.1", "--seed", "11") as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(3000)
        batch_id = h.submit_lines(tmp_path, lines, env).batch_id
        manifest = tmp_path / "jobs.jsonl.manifest.json"
        h.poll_wait("--manifest", str(manifest), env=env, code=6)  # finished, but 10% failed: not done

        # the reference: one uninterrupted download of the same batch into another directory
        code, ref, err = h.run_script("fetch_results", batch_id, "--out", str(tmp_path / "ref"), env=env)
        assert code == 6, err  # finished, 10% failed

        # small pages make the download long enough to kill it in the middle
        proc = subprocess.Popen(
            [
                sys.executable,
                str(h.SCRIPTS / "fetch_results.py"),
                "--manifest",
                str(manifest),
                "--page-size",
                "10",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while _manifest_cursor(manifest) < 200 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the download finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        saved = _manifest_cursor(manifest)
        assert 0 < saved < 2700

        code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
        assert code == 6, err
    out = tmp_path / "jobs.results"
    for name in ("output.jsonl", "errors.jsonl", "results.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert doc["counts"] == ref["counts"]
    assert doc["counts"]["completed"] + doc["counts"]["failed"] == 3000 and doc["counts"]["failed"] > 0
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    retry = h.read_jsonl(out / "retry.jsonl")
    assert [r["custom_id"] for r in retry] == [r["custom_id"] for r in results if r["status"] == "failed"]
    h.assert_no_key_in_tree(tmp_path)


def _edit_manifest(path, **fields):
    data = json.loads(path.read_text())
    data["shards"][0].update(fields)
    path.write_text(json.dumps(data))


def test_interrupted_submit_creates_nothing_twice(emulator, env, tmp_path, h):
    """A crash after a request was sent but before its reply was recorded leaves the shard in state
    "sending" without an id (the state is saved before sending); the re-run must adopt, not repeat."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(6))
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    # the upload happens, batch creation is held back by the cost guard
    code, doc, err = h.run_script("submit", str(src), "--max-cost", "0", env=env)
    assert code == 4 and emulator.stats()["files_created"] == 1
    _edit_manifest(manifest, upload_state="sending", file_id=None)  # "killed before recording the upload"
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    assert "found the earlier upload" in err
    batch_id = doc["batches"][0]["batch_id"]
    _edit_manifest(manifest, create_state="sending", batch_id=None, status=None)  # "killed before recording"
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    assert "found the earlier batch" in err and doc["batches"][0]["batch_id"] == batch_id
    code, again, err = h.run_script("submit", str(src), env=env)
    assert code == 0 and again["created"] == 0 and again["batches"][0]["batch_id"] == batch_id
    stats = emulator.stats()
    assert stats["files_created"] == 1 and stats["batches_created"] == 1


def test_submit_killed_at_random_points_converges(emulator, env, tmp_path, h):
    """SIGKILL at several moments, then re-run: never more than one upload and one batch."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(200))
    for delay in (0.05, 0.15, 0.25, 0.35):
        proc = subprocess.Popen(
            [sys.executable, str(h.SCRIPTS / "submit.py"), str(src)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.kill()
        proc.wait()
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    stats = emulator.stats()
    assert stats["files_created"] <= 1 and stats["batches_created"] == 1, stats


def test_faulty_server_still_exactly_once(tmp_path, h):
    with h.start_emulator("--fault-rate", "0.25", "--fault-retry-after", "0", "--seed", "5") as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(20)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        for _ in range(4):  # an ambiguous failure may stop a run; re-running must converge
            code, doc, err = h.run_script(
                "submit", str(src), "--max-requests", "5", env=env, timeout=120, prelude=h.SHORT_WAITS
            )
            if code == 0:
                break
            assert code == 5, err
        assert code == 0, err
        stats = emu.stats()
        assert stats["files_created"] == 4 and stats["batches_created"] == 4, stats
        manifest = doc["manifest"]
        for _ in range(4):
            code, doc, err = _follow(h, manifest, env, timeout=120, prelude=h.SHORT_WAITS)
            if code == 0:
                break
        assert code == 0, err
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all(r["status"] == "completed" for r in results)
    assert len(h.read_jsonl(tmp_path / "jobs.results" / "output.jsonl")) == 20


def test_openai_flavoured_server(tmp_path, h):
    with h.start_emulator("--flavor", "openai", "--fail-rate", "0.5", "--seed", "2") as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(20)
        manifest = h.submit_lines(tmp_path, lines, env).manifest
        code, doc, err = _follow(h, manifest, env)
    assert code == 6, err  # finished, some failed
    counts = doc["counts"]
    assert counts["completed"] + counts["failed"] == 20 and counts["failed"] > 0
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    failed = [r for r in results if r["status"] == "failed"]
    assert all(r["error"]["message"] for r in failed)


def test_openai_flavoured_all_failed(tmp_path, h):
    with h.start_emulator("--flavor", "openai", "--fail-rate", "1") as emu:
        env = h.script_env(emu.base_url)
        manifest = h.submit_lines(tmp_path, h.chat_lines(5), env).manifest
        code, doc, err = _follow(h, manifest, env)
    assert code == 6, err
    assert doc["finished"] and not doc["complete"] and doc["counts"]["failed"] == 5
    assert len(h.read_jsonl(tmp_path / "jobs.results" / "retry.jsonl")) == 5


def test_fetch_after_server_side_retry(tmp_path, h):
    """/retry shrinks the error file; the next fetch re-reads it and the successes win."""
    import requests

    with h.start_emulator("--fail-rate", "1") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(6), env)
        batch_id, manifest = job.batch_id, job.manifest
        code, doc, err = _follow(h, manifest, env)
        assert code == 6 and doc["counts"]["failed"] == 6
        emu.configure(fail_rate=0)
        reply = requests.post(
            f"{emu.base_url}/batches/{batch_id}/retry",
            headers={"Authorization": f"Bearer {h.CANARY_KEY}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        code, doc, err = _follow(h, manifest, env)
    assert code == 0, err
    assert doc["counts"]["completed"] == 6 and doc["counts"]["failed"] == 0, doc
    assert (tmp_path / "jobs.results" / "retry.jsonl").read_bytes() == b""
