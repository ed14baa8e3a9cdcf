"""Things an agent following SKILL.md ran into: warnings it can see in the JSON, errors that point at
the real cause, and re-runs that do the obvious thing."""

from __future__ import annotations


def test_submit_after_fixing_a_rejected_file_just_works(emulator, env, tmp_path, h):
    lines = h.chat_lines(3)
    lines[1]["body"]["model"] = "no-such/model"
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 3 and "no-such/model" in doc["error"]["message"]
    assert "GET /models" in doc["error"]["message"]  # points at the model, not at the key

    lines[1]["body"]["model"] = h.CHAT_MODEL
    h.write_jsonl(src, lines)  # fixed; nothing was ever stored on the server
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0 and doc["created"] == 1, err
    assert emulator.stats()["files_created"] == 1 and emulator.stats()["batches_created"] == 1


def test_changed_inputs_after_a_real_submission_still_need_force(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    assert h.run_script("submit", str(src), env=env).code == 0
    h.write_jsonl(src, h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 4 and "--force" in doc["error"]["message"]
    assert emulator.stats()["batches_created"] == 1


def test_submit_reports_an_ignored_window_and_validation_warnings_in_json(emulator, env, tmp_path, h):
    lines = h.chat_lines(2)
    lines[0]["body"]["max_token"] = 5
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 0 and any("max_tokens" in w for w in doc["warnings"]), doc
    code, doc, err = h.run_script("submit", str(src), "--window", "1h", env=env)
    assert code == 0 and doc["created"] == 0
    assert any("--window 1h was ignored" in w for w in doc["warnings"]), doc


def test_create_batch_file_warns_about_a_near_miss_set_name(tmp_path, h):
    out = tmp_path / "b.jsonl"
    args = ["--model", h.CHAT_MODEL, "--prompt", "hi", "--set", "max_token=10", "-o", str(out)]
    code, doc, err = h.run_script("create_batch_file", *args)
    assert code == 0 and "max_tokens" in doc["warnings"][0] and "max_tokens" in err


def test_fetch_groups_failures_by_type_and_status_with_an_example(emulator, env, tmp_path, h):
    lines = h.chat_lines(4)
    lines[2]["body"]["x_emulator_status"] = 400  # the emulator's hook: this request fails with a 400
    src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    assert h.run_script("submit", str(src), env=env).code == 0
    manifest = str(tmp_path / "jobs.jsonl.manifest.json")
    # one request failed: the batch completed but the job is not done (poll exits 6, not 0)
    assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 6
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 6, err  # finished, one input failed
    [group] = doc["failure_groups"]
    assert group["type"] == "NonRetriableHttpStatus" and group["status"] == 400 and group["count"] == 1
    assert group["example"]["custom_id"] == lines[2]["custom_id"] and group["example"]["message"]


def test_cost_limit_message_uses_plain_decimals(emulator, env, tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    code, doc, err = h.run_script("submit", str(src), "--max-cost", "0.0000001", env=env)
    assert code == 4 and doc["error"]["type"] == "cost_limit"
    assert "E-" not in doc["error"]["message"] and "$0.0000001" in doc["error"]["message"]
    assert emulator.stats()["batches_created"] == 0


def test_a_refused_upload_names_the_physical_line_and_custom_id(emulator, env, tmp_path, h):
    """The server's "Line N" counts non-blank lines only: in a file with blank lines it points elsewhere.
    The error says which line of the file and which custom_id it is (also as error.line, error.custom_id)."""
    import json

    lines = [json.dumps(line) for line in h.chat_lines(4)]
    bad = h.chat_lines(1, prefix="bad")[0]
    bad["body"]["model"] = "no-such/model"
    src = tmp_path / "jobs.jsonl"
    src.write_text("\n".join([lines[0], "", lines[1], "", json.dumps(bad), lines[2]]) + "\n")
    code, doc, err = h.run_script("submit", str(src), env=env)
    error = doc["error"]
    assert code == 3 and "Line 3:" in error["message"], doc  # the server's own count
    assert (error["line"], error["custom_id"]) == (5, "bad-00000")
    assert f"it is line 5 of {src}, custom_id 'bad-00000'" in error["message"]

    src.write_text("\n".join([lines[0], json.dumps(bad), lines[1]]) + "\n")  # no blank line: no note
    code, doc, err = h.run_script("submit", str(src), env=env)
    assert code == 3 and (doc["error"]["line"], doc["error"]["custom_id"]) == (2, "bad-00000")
    assert "counts only non-blank lines" not in doc["error"]["message"]


def test_a_resubmit_whose_set_breaks_the_lines_is_refused_before_anything_is_sent(emulator, env, tmp_path, h):
    """`--resubmit --set temperature=9` was sent as it was (the server does not check ranges at upload,
    so every request would fail at the model). The adjusted round file is validated like any input:
    exit 4 with error.validation, no round planned, nothing uploaded; a valid --set then goes."""
    emulator.configure(fail_rate=1.0)
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    code, doc, err = h.run_script("submit", str(src), env=env)
    manifest = doc["manifest"]
    code, doc, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    assert code == 6, doc
    emulator.configure(fail_rate=0.0)
    files = emulator.stats()["files_created"]
    dry = ("submit", "--resubmit", "--manifest", manifest, "--dry-run", "--set", "temperature=9")
    code, doc, err = h.run_script(*dry, env=env)
    assert code == 4 and "temperature" in doc["error"]["message"], doc  # the dry run says so too
    code, doc, err = h.run_script(
        "submit", "--resubmit", "--manifest", manifest, "--set", "temperature=9", env=env
    )
    assert (
        code == 4
        and "temperature" in doc["error"]["message"]
        and "nothing was sent" in doc["error"]["message"]
    )
    assert doc["error"]["validation"][0]["valid"] is False
    assert emulator.stats()["files_created"] == files
    code, doc, err = h.run_script(
        "submit", "--resubmit", "--manifest", manifest, "--set", "temperature=0.5", env=env
    )
    assert code == 0 and doc["round"] == 2 and doc["resubmitted"] == 3, doc
