"""The manifest: a damaged or hand-edited one is a clear error, never a second submission."""

from __future__ import annotations

import json
import uuid


def test_corrupt_or_edited_manifest_is_a_clear_error(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    data = json.loads(manifest.read_text())
    assert data["format"] == "doubleword-batches/manifest" and data["version"] == 2
    assert data["base_url"] == emulator.base_url and [r["number"] for r in data["rounds"]] == [1]
    shard = data["shards"][0]
    assert shard["round"] == 1 and shard["path"] == str(src.resolve())
    assert shard["upload_filename"].startswith("jobs.") and shard["marker"].startswith("dwb-")
    assert shard["sha256"] and shard["requests"] == 3 and shard["endpoint"] == "/v1/chat/completions"

    data["shards"][0]["batch_id"] = None
    manifest.write_text(json.dumps(data))
    for script in ("submit", "poll", "fetch_results"):
        args = [str(src)] if script == "submit" else ["--manifest", str(manifest)]
        code, doc, err = h.run_script(script, *args, env=env)
        assert code == 4 and "edited by hand" in doc["error"]["message"], (script, doc)
    manifest.write_text("{ not json")
    code, doc, err = h.run_script("poll", "--manifest", str(manifest), env=env)
    assert code == 4 and "not readable JSON" in doc["error"]["message"]
    assert "without it submit.py would send the job again" in doc["error"]["message"]  # not "remove it"
    assert emulator.stats()["batches_created"] == 1


def test_fetch_into_a_file_is_a_usage_error_naming_it(emulator, env, tmp_path, h):
    job = h.submit_lines(tmp_path, h.chat_lines(2), env)
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    code, doc, err = h.run_script("fetch_results", "--manifest", job.manifest, "--out", str(taken), env=env)
    assert code == 2 and doc["error"]["type"] == "usage_error", (doc, err)
    assert f"--out {taken} is a file" in doc["error"]["message"]
    assert taken.read_text() == "mine\n"


def test_a_version_1_manifest_still_works_as_one_round(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(5))
    assert h.run_script("submit", str(src), env=env).code == 0
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    data = json.loads(manifest.read_text())
    # what version 1 wrote: no rounds, no job id, no base URL, shards without a round
    for key in ("rounds", "job_id", "base_url"):
        del data[key]
    for shard in data["shards"]:
        del shard["round"], shard["rows_path"]
    data["version"] = 1
    manifest.write_text(json.dumps(data))
    code, doc, err = h.run_script("submit", str(src), env=env)  # the same inputs: nothing new is sent
    assert code == 0 and doc["created"] == 0 and doc["existing"] == 1, doc
    code, doc, err = h.run_script("poll", "--manifest", str(manifest), "--wait", "--interval", "0.1", env=env)
    assert code == 0 and doc["rounds"] == 1 and doc["counts"] == {"completed": 1}, doc
    code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
    assert code == 0 and doc["counts"]["completed"] == 5, doc
    upgraded = json.loads(manifest.read_text())
    assert upgraded["version"] == 2 and upgraded["rounds"][0]["number"] == 1
    assert [s["round"] for s in upgraded["shards"]] == [1]
    assert emulator.stats()["batches_created"] == 1


def test_changed_input_needs_force(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    assert h.run_script("submit", str(src), env=env).code == 0
    h.write_jsonl(src, h.chat_lines(4))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 4 and "--force" in doc["error"]["message"]
    assert emulator.stats()["batches_created"] == 1


def test_force_keeps_the_job_manifest_until_the_new_job_is_written(emulator, env, tmp_path, h):
    """A --force dry run, or a --force that stops (no key, an invalid file), leaves the job where it is:
    the manifest stays at its path and fetch still finds the job (it moved it aside, and lost it, before)."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0, err
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    before = manifest.read_bytes()

    code, doc, err = h.run_script("submit", str(src), "--force", "--dry-run", env=env)
    assert code == 0 and doc["dry_run"] is True, doc
    assert any("would be moved aside" in w for w in doc["warnings"]), doc
    no_key = {k: v for k, v in env.items() if k != "DOUBLEWORD_API_KEY"}
    code, doc, err = h.run_script("submit", str(src), "--force", env=no_key)
    assert code == 3 and "DOUBLEWORD_API_KEY" in doc["error"]["message"], doc
    assert manifest.read_bytes() == before and not list(tmp_path.glob("*.bak"))
    code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
    assert code in (0, 7) and doc["counts"]["requests"] == 3, doc

    code, doc, err = h.run_script("submit", str(src), "--force", env=env)  # the real thing: moved aside
    assert code == 0 and doc["created"] == 1, err
    assert [json.loads(b.read_bytes())["job_id"] for b in tmp_path.glob("*.bak")] == [
        json.loads(before)["job_id"]
    ]
    assert emulator.stats()["batches_created"] == 2


def test_usage_errors(env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(1))
    assert h.run_script("submit", str(src), "--metadata", "novalue", env=env).code == 2
    assert h.run_script("submit", str(src), "--window", "2h", env=env).code == 2
    assert h.run_script("poll", env=env).code == 2
    assert h.run_script("fetch_results", "x", "--manifest", "m.json", env=env).code == 2


def test_a_moved_job_folder_keeps_working_where_it_now_is(emulator, env, tmp_path, h):
    first = tmp_path / "first"
    first.mkdir()
    src = h.write_jsonl(first / "jobs.jsonl", h.chat_lines(30))
    assert h.run_script("submit", str(src), "--max-requests", "10", env=env).code == 0
    manifest = first / "jobs.jsonl.manifest.json"
    h.run_script(
        "fetch_results", "--manifest", str(manifest), "--export", str(first / "answers.csv"), env=env
    )
    moved = tmp_path / "moved"
    first.rename(moved)
    manifest = moved / manifest.name
    code, doc, err = h.run_script("submit", str(moved / "jobs.jsonl"), "--max-requests", "10", env=env)
    assert code == 0 and doc["created"] == 0 and doc["existing"] == 3, doc  # the same job, nothing sent
    assert "moved" in err and "--force" not in err + json.dumps(doc)
    assert all(b["shard"].startswith(str(moved.resolve())) for b in doc["batches"])
    code, doc, err = h.run_script("poll", "--manifest", str(manifest), "--wait", "--interval", "0.1", env=env)
    assert code == 0, err
    # the next command updates the export the user asked for, where it now is
    assert f"--export {moved.resolve() / 'answers.csv'}" in doc["next"], doc["next"]
    code, doc, err = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
    assert code == 0 and doc["files"]["results"].startswith(str(moved.resolve())), doc
    assert not first.exists()  # nothing recreated at the old place
    assert emulator.stats()["batches_created"] == 3


def test_content_validated_moments_before_is_not_validated_again(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(20, prefix=f"fp-{uuid.uuid4().hex[:12]}"))
    code, doc, err = h.run_script("submit", str(src), "--dry-run", env=env)
    assert code == 0 and "passed validation before" not in err  # new content: validated
    code, doc, err = h.run_script("validate_batch_file", str(src), env=env)
    assert code == 0
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0 and "passed validation before" in err, err
    # changed content is validated again (and a broken line is still caught)
    src.write_text(src.read_text() + "{not json\n")
    code, doc, err = h.run_script("submit", str(src), "--manifest", str(tmp_path / "other.json"), env=env)
    assert code == 4 and "passed validation before" not in err


def test_a_file_that_is_not_a_batch_file_is_refused_before_anything_is_sent(emulator, env, tmp_path, h):
    """`submit.py jobs-*.jsonl --no-validate` also matches create's jobs-001.rows.jsonl: it used to upload the
    batch file, get a 400 for the rows file, and leave a manifest every later command called damaged."""
    batch = h.write_jsonl(tmp_path / "jobs-001.jsonl", h.chat_lines(3))
    rows = h.write_jsonl(
        tmp_path / "jobs-001.rows.jsonl", [{"custom_id": "req-00000", "row": {"prompt": "hi"}}]
    )
    manifest = tmp_path / "job.manifest.json"
    code, doc, err = h.run_script(
        "submit", str(batch), str(rows), "--no-validate", "--manifest", str(manifest), env=env
    )
    assert code == 4 and "not a batch file" in doc["error"]["message"], (code, doc, err)
    assert str(rows) in doc["error"]["message"]
    assert not manifest.exists()
    assert emulator.stats()["files_created"] == 0  # nothing was uploaded
    code, doc, err = h.run_script("submit", str(batch), "--no-validate", "--manifest", str(manifest), env=env)
    assert code == 0 and len(doc["batches"]) == 1, err  # the corrected command works at once


def test_the_same_file_given_twice_is_refused_before_anything_is_sent(emulator, env, tmp_path, h):
    """`submit.py a.jsonl ./a.jsonl` (or a glob and a name, or a symlink) made two batches of the same
    requests, paid twice, and an export with every row twice. Now exit 2 naming it, nothing sent; a copy
    of the file beside it is refused too (exit 4); two different files whose ids overlap (each made by
    its own create run) still go as one job."""
    src = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(3))
    (tmp_path / "link.jsonl").symlink_to(src)
    for second in ("./a.jsonl", "link.jsonl"):
        code, doc, err = h.run_script("submit", "a.jsonl", second, env=env, cwd=tmp_path)
        assert code == 2 and "is given twice" in doc["error"]["message"], doc
    assert emulator.requests_log() == [] and not (tmp_path / "a.jsonl.manifest.json").exists()
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(src.read_bytes())  # a copy beside its original: the same requests twice
    code, doc, err = h.run_script("submit", str(src), str(copy), env=env)
    assert code == 4 and "holds the same requests as" in doc["error"]["message"], doc
    assert emulator.requests_log() == []
    # the dry run refuses it the same way (it said exit 0, a plan of 2 batches, 6 requests)
    code, doc, err = h.run_script("submit", str(src), str(copy), "--dry-run", env=env)
    assert code == 4 and f"{copy} holds the same requests as {src}" in doc["error"]["message"], doc
    assert not (tmp_path / "a.jsonl.manifest.json").exists()
    lines = h.chat_lines(3)
    for line in lines:
        line["body"]["messages"][0]["content"] += " (the second dataset)"
    other = h.write_jsonl(tmp_path / "b.jsonl", lines)  # the same custom_ids, other requests
    code, doc, err = h.run_script("submit", str(src), str(other), env=env)
    assert code == 0 and doc["created"] == 2, doc


def test_the_batch_file_given_as_the_manifest_names_the_manifest_to_give(emulator, env, tmp_path, h):
    """--manifest jobs.jsonl (the batch file) said "not readable JSON ...; fix or remove it", advice that
    would have an agent delete the user's batch file. Now: what the file is, and the manifest beside it.
    A manifest given where batch ids go is a usage error pointing to --manifest."""
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0
    manifest = doc["manifest"]
    for script in ("poll", "fetch_results", "cancel_batch"):
        code, doc, err = h.run_script(script, "--manifest", str(src), env=env)
        message = doc["error"]["message"]
        assert code == 4 and "is a JSON-lines file" in message and "not a manifest" in message, message
        assert f"this one's is {src}.manifest.json" in message and "remove" not in message, message
        code, doc, err = h.run_script(script, manifest, env=env)
        assert code == 2 and f"goes with --manifest {manifest}" in doc["error"]["message"], doc
    data = tmp_path / "data.csv"
    data.write_text("id,text\n1,a\n")
    code, doc, err = h.run_script("submit", str(src), "--manifest", str(data), env=env)
    message = doc["error"]["message"]
    assert code == 4 and "not JSON at all, not a manifest" in message and "remove" not in message, message
    assert data.read_text() == "id,text\n1,a\n"
    code, doc, err = h.run_script("submit", str(src), "--manifest", str(tmp_path), env=env)
    assert code == 2 and "is a folder" in doc["error"]["message"], doc  # was exit 1, "unexpected ValueError"
    code, doc, err = h.run_script("poll", "--manifest", str(tmp_path), env=env)
    assert code == 4 and "is a folder, not a manifest" in doc["error"]["message"], (
        doc
    )  # was "... or remove it"
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    code, doc, err = h.run_script("poll", "--manifest", str(tmp_path / "schema.json"), env=env)
    assert code == 4 and "a JSON file of another kind, not a manifest" in doc["error"]["message"], doc
    code, doc, err = h.run_script("poll", "--manifest", manifest, env=env)
    assert code in (0, 7), doc


def test_a_fetchs_retry_file_submitted_as_a_new_job_points_to_resubmit(tmp_path, h):
    with h.start_emulator("--seed", "5") as emu:
        env = h.script_env(emu.base_url)
        emu.configure(fail_rate=0.5)
        job = h.submit_lines(tmp_path, h.chat_lines(12), env)
        h.poll_wait("--manifest", job.manifest, env=env, code=6)
        out = tmp_path / "results"
        code, doc, err = h.run_script("fetch_results", "--manifest", job.manifest, "--out", str(out), env=env)
        assert code == 6 and (out / "retry.jsonl").stat().st_size > 0, (doc, err)
        code, doc, err = h.run_script("submit", str(out / "retry.jsonl"), "--dry-run", env=env)
        assert code == 0, (doc, err)
        (note,) = [w for w in doc["warnings"] if w.startswith("retry_file:")]
        assert "submit.py --resubmit --manifest" in note and "retry_file" in err
        elsewhere = tmp_path / "mine" / "retry.jsonl"  # a file of that name outside a results folder
        elsewhere.parent.mkdir()
        elsewhere.write_bytes((out / "retry.jsonl").read_bytes())
        code, doc, err = h.run_script("submit", str(elsewhere), "--dry-run", env=env)
        assert code == 0 and not [w for w in doc.get("warnings", []) if w.startswith("retry_file:")], doc
