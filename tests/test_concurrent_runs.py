"""Two scripts on one manifest at once: poll beside a running fetch keeps fetch's cursors, and a second
fetch into the same folder is turned away instead of appending to the same files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def _fetch_cursor(manifest_path) -> int:
    data = json.loads(manifest_path.read_text())
    return data["shards"][0]["downloads"].get("output", {}).get("skip", 0)


def test_poll_beside_fetch_follow_keeps_the_download_cursor(emulator, env, tmp_path, h):
    lines = h.chat_lines(300)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    emulator.configure(rate=20)  # 15 s of work; paused below while poll and a second fetch run
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    manifest = tmp_path / "jobs.jsonl.manifest.json"

    follower = subprocess.Popen(
        [sys.executable, str(h.SCRIPTS / "fetch_results.py"), "--manifest", str(manifest), "--follow"]
        + ["--interval", "0.2", "--timeout", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until fetch has saved a cursor, then let poll write the manifest several times
        deadline = time.monotonic() + 30
        while _fetch_cursor(manifest) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        emulator.configure(paused=True)  # the batch keeps running (and fetch following) on a busy machine
        assert _fetch_cursor(manifest) > 0
        for _ in range(5):
            before = _fetch_cursor(manifest)
            code, doc, err = h.run_script("poll", "--manifest", str(manifest), env=env)
            assert code in (0, 7), err
            assert _fetch_cursor(manifest) >= before  # poll never rolls fetch's cursor back

            # a second fetch into the same folder is refused at once, touching nothing
            code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
            assert code == 7 and doc["error"]["type"] == "busy", doc
            assert "already downloading" in doc["error"]["message"]
            time.sleep(0.3)
        emulator.configure(paused=False, rate=0)
        out, err = follower.communicate(timeout=90)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert json.loads(out)["counts"]["completed"] == 300

    # output.jsonl was downloaded once: the requests the emulator served cover each line once
    content_lines = (tmp_path / "jobs.results" / "output.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in content_lines]
    assert len(ids) == len(set(ids)) == 300
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    skips = [
        int(q.split("skip=")[1].split("&")[0])
        for q in (r["query"] or "" for r in emulator.requests_log() if r["path"].endswith("/content"))
        if "skip=" in q
    ]
    assert skips == sorted(skips), "a download restarted from an earlier line"


def test_poll_reports_status_even_when_the_manifest_cannot_be_updated(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    before = manifest.read_bytes()
    lock = tmp_path / ".jobs.jsonl.manifest.json.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # the manifest's lock cannot be taken, as in a folder the user may not write to
    code, doc, err = h.run_script("poll", "--manifest", str(manifest), "--wait", "--interval", "0.1", env=env)
    assert code == 0 and doc["batches"][0]["status"] == "completed", err
    assert "could not update the manifest" in err and "Traceback" not in err
    assert manifest.read_bytes() == before


def _spawn(h, *args: str, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(h.SCRIPTS / "submit.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, json.loads(out)


def test_two_submits_of_one_file_at_once_make_one_batch_per_shard(emulator, env, tmp_path, h):
    """An agent retrying a command that looked stuck: the second submit waits, then reports the first's."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(900))
    for trial in range(3):
        manifest = tmp_path / f"trial-{trial}.manifest.json"
        args = (str(src), "--max-requests", "300", "--manifest", str(manifest))
        procs = [_spawn(h, *args, env=env) for _ in range(2)]
        (code_a, a), (code_b, b) = (_finish(p) for p in procs)
        assert code_a == code_b == 0, (a, b)
        assert sorted([a["created"], b["created"]]) == [0, 3], (a, b)
        assert [x["batch_id"] for x in a["batches"]] == [x["batch_id"] for x in b["batches"]]
    stats = emulator.stats()
    assert stats["files_created"] == stats["batches_created"] == 9, stats


def test_two_resubmits_at_once_make_one_round(tmp_path, h):
    from emulator_server import EmulatorServer

    with EmulatorServer(
        "--start-delay", "0", "--fail-rate", "0.2", "--seed", "2", "--quiet", api_key=h.CANARY_KEY
    ) as emu:
        env = h.script_env(emu.base_url)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(200))
        manifest = h.run_script("submit", str(src), env=env).doc["manifest"]
        assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 6
        emu.configure(paused=True)  # the round stays running: the loser of the race must see it
        procs = [_spawn(h, "--resubmit", "--manifest", manifest, env=env) for _ in range(2)]
        outcomes = sorted((_finish(p) for p in procs), key=lambda o: o[0])
        assert [code for code, _ in outcomes] == [0, 7], outcomes
        assert outcomes[0][1]["round"] == 2 and outcomes[1][1]["error"]["type"] == "not_finished"
        assert emu.stats()["batches_created"] == 2
    assert len(json.loads(Path(manifest).read_text())["rounds"]) == 2
