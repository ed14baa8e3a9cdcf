"""A shard that was never sent (no file id, no batch id) is no damage to its manifest, whatever fields it
lacks: poll, fetch and cancel work on the job's other batches and say what was not sent, and a re-run sends
it exactly once. A damaged manifest (bad JSON, a sent shard missing what later commands need) is still a
clear error naming the file, the shard and what to do.

Last session, a shard recorded without an endpoint (a file submit.py refused, or one that failed at
upload before any batch existed) made the whole manifest unreadable to every later command.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import requests
from emulator_server import EmulatorServer

# What planning fills in before a shard is sent: an older version could leave any of them out (it recorded
# a file it then refused without an endpoint); the states a never-sent shard may lack as well.
PLANNED = (
    *("endpoint", "marker", "upload_filename", "sha256", "bytes", "rows_path"),
    *("upload_state", "create_state"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_files(emu: EmulatorServer) -> list[dict[str, Any]]:
    r = requests.get(f"{emu.base_url}/files", headers=emu.headers, params={"limit": 100}, timeout=10)
    r.raise_for_status()
    return [f for f in r.json()["data"] if f.get("purpose") == "batch"]


def strip_unsent_shard(manifest: Path, index: int) -> dict[str, Any]:
    """Remove what planning filled in from a never-sent shard, as an older version left it."""
    data = json.loads(manifest.read_text())
    shard = data["shards"][index]
    assert shard["upload_state"] == "pending" and not shard["file_id"] and not shard["batch_id"], shard
    for key in PLANNED:
        shard.pop(key, None)
    manifest.write_text(json.dumps(data))
    return shard


def test_a_job_with_a_never_sent_shard_is_polled_fetched_and_resubmitted_once(tmp_path, h):
    """The server refuses the second file at upload (its request cap); the first runs as a batch. With the
    refused shard's record stripped of what planning filled in, every later command reads the manifest;
    once the cap is gone, the advised re-run sends that shard exactly once, and the job completes."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(3, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(4, prefix="b"))
    manifest = tmp_path / "job.manifest.json"
    db, port = str(tmp_path / "emu.db"), free_port()
    submit = ("submit", str(a), str(b), "--manifest", str(manifest))
    poll = ("poll", "--manifest", str(manifest), "--wait", "--interval", "0.1")
    fetch = ("fetch_results", "--manifest", str(manifest))
    capped = ("--start-delay", "0", "--quiet", "--max-requests", "3")
    with EmulatorServer(*capped, api_key=h.CANARY_KEY, db=db, port=port) as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 4 and "exceeds the maximum of 3" in doc["error"]["message"], (code, doc, err)
        refused = doc["error"]  # names the refused file and the job
        assert refused["shard"] == str(b.resolve()) and refused["manifest"] == str(manifest.resolve())
        strip_unsent_shard(manifest, 1)

        code, doc, err = h.run_script(*poll, env=env)
        assert code == 6, (code, doc, err)  # every batch finished, but 4 requests are in no batch
        assert doc["counts"] == {"completed": 1} and doc["unsent"] == {"shards": 1, "requests": 4}, doc
        assert doc["unanswered"] == 4 and "never sent" in err and "--resubmit" in err, (doc, err)

        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["complete"] is False and doc["finished"] is True, (code, doc, err)
        assert doc["counts"]["completed"] == 3 and doc["unsent"] == {"shards": 1, "requests": 4}, doc
        assert "never sent" in err

        code, doc, err = h.run_script("cancel_batch", "--manifest", str(manifest), env=env)
        assert "damaged" not in json.dumps(doc) and doc["batches"][0]["status"] == "completed", doc
        assert emu.stats()["batches_created"] == 1

    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY, db=db, port=port) as emu:
        env = h.script_env(emu.base_url)
        resubmit = ("submit", "--resubmit", "--manifest", str(manifest))  # what poll and fetch advised
        code, doc, err = h.run_script(*resubmit, "--max-tokens", "99", env=env)  # an adjustment: said ignored
        assert code == 0 and doc["created"] == 1 and doc["existing"] == 1, (code, doc, err)
        assert any("--max-tokens" in w and "ignored" in w for w in doc["warnings"]), doc
        code, doc, err = h.run_script(*submit, env=env)  # and the first command again: nothing more
        assert code == 0 and doc["created"] == 0 and doc["existing"] == 2, (code, doc, err)
        assert emu.stats()["files_created"] == 1 and emu.stats()["batches_created"] == 1  # since the restart
        names = sorted(f["filename"].split(".")[0] for f in server_files(emu))
        assert names == ["a", "b"], names  # b sent exactly once, a never again

        shard = json.loads(manifest.read_text())["shards"][1]
        assert shard["endpoint"] == "/v1/chat/completions" and shard["sha256"] and shard["bytes"]
        assert shard["marker"].startswith("dwb-") and shard["upload_filename"].startswith("b.")
        code, doc, err = h.run_script(*poll, env=env)
        assert code == 0 and "unsent" not in doc and doc["unanswered"] == 0, (code, doc, err)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == 7, (code, doc, err)
        order = [r["custom_id"][0] for r in h.read_jsonl(Path(doc["files"]["results"]))]
        assert order == ["a"] * 3 + ["b"] * 4, order


def test_never_sent_shards_that_cannot_be_sent_are_refused_naming_them(emulator, env, tmp_path, h):
    """Nothing of the job was sent (a refused key). A never-sent shard without its file, or whose file is
    not a batch file, is refused by the re-run before anything is uploaded, naming the shard and its file."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(2, prefix="b"))
    manifest = tmp_path / "job.manifest.json"
    submit = ("submit", str(a), str(b), "--manifest", str(manifest))
    assert h.run_script(*submit, env=h.script_env(emulator.base_url, "sk-wrong-key-1234")).code == 3

    strip_unsent_shard(manifest, 1)
    data = json.loads(manifest.read_text())
    del data["shards"][1]["path"]
    manifest.write_text(json.dumps(data))
    code, doc, err = h.run_script(*submit, env=env)
    message = doc["error"]["message"]
    assert code == 4 and str(manifest) in message and "shard 1" in message and '"path"' in message, doc

    data["shards"][1]["path"] = str(tmp_path / "b.rows.jsonl")  # what an older version let through
    h.write_jsonl(tmp_path / "b.rows.jsonl", [{"custom_id": "b-00000", "row": {"prompt": "hi"}}])
    manifest.write_text(json.dumps(data))
    code, doc, err = h.run_script(*submit, env=env)
    assert code == 4 and "not a batch file" in doc["error"]["message"] and "b.rows.jsonl" in err, doc
    assert emulator.stats()["files_created"] == 0 and emulator.stats()["batches_created"] == 0


def test_a_sent_shard_missing_what_later_commands_need_is_still_damage(emulator, env, tmp_path, h):
    """The error names the manifest, the shard (its place, file and batch) and what to do, including how
    to reach the job's batches without the manifest; bad JSON names the file."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(4))
    assert h.run_script("submit", str(src), "--max-requests", "2", env=env).code == 0
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    data = json.loads(manifest.read_text())
    first, second = data["shards"]
    second.update(create_state="sending", marker=None)  # a batch creation that may have reached the server
    manifest.write_text(json.dumps(data))
    for script in ("poll", "fetch_results", "cancel_batch"):
        code, doc, err = h.run_script(script, "--manifest", str(manifest), env=env)
        message = doc["error"]["message"]
        assert code == 4 and str(manifest) in message and "shards[1].marker is missing" in message, doc
        assert second["path"] in message and second["batch_id"] in message, message  # which shard
        assert "backup" in message and "poll.py BATCH_ID" in message and first["batch_id"] in message

    data["shards"][0]["upload_state"] = "pending"  # "never uploaded" with a file id: a re-run would send it
    data["shards"][1] = second | {"create_state": "done", "marker": "dwb-x"}
    manifest.write_text(json.dumps(data))
    code, doc, err = h.run_script("submit", str(src), "--max-requests", "2", env=env)
    assert code == 4 and "shards[0] says it was never uploaded but has a file_id" in doc["error"]["message"]

    manifest.write_text('{"format": "doubleword-batches/manifest", "shards": [')
    code, doc, err = h.run_script("poll", "--manifest", str(manifest), env=env)
    assert code == 4 and str(manifest) in doc["error"]["message"] and "JSON" in doc["error"]["message"], doc
    assert emulator.stats()["batches_created"] == 2


def test_a_file_the_server_refused_is_fixed_in_place_and_sent_by_resubmit(tmp_path, h):
    """The server refuses the second file at upload (a model the key cannot use); the user fixes that file
    (named in the error) and --resubmit sends it as it is now: the job completes with every input."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(3, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(4, prefix="b", model="Qwen/Qwen3.5-27B"))
    manifest = tmp_path / "job.manifest.json"
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", str(a), str(b), "--manifest", str(manifest), env=env)
        assert code == 3 and doc["error"]["shard"] == str(b.resolve()), (code, doc, err)
        b.write_text(b.read_text().replace("Qwen/Qwen3.5-27B", h.CHAT_MODEL))  # the fix
        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["created"] == 1 and "never sent" in err, (code, doc, err)
        assert (
            h.run_script("poll", "--manifest", str(manifest), "--wait", "--interval", "0.1", env=env).code
            == 0
        )
        code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == 7, (code, doc, err)
        assert emu.stats()["batches_created"] == 2
