"""SKILL.md's examples switch thinking off with `--reasoning-effort none` for Qwen/Qwen3.5-9B "where
list_models.py lists none for the model": the emulator lists it (doubleword-api.md 4.5: a Qwen model's
effort becomes its chat template's thinking flag), the example runs to a complete job, and an effort the
model does not list is refused at upload with the server's text, nothing created."""

from __future__ import annotations

from pathlib import Path

import requests


def test_list_models_shows_none_for_qwen35_and_the_skill_example_runs_while_an_unlisted_effort_is_refused(
    emulator, env, tmp_path, h
):
    code, doc, err = h.run_script("list_models", env=env)
    assert code == 0, (code, doc, err)
    efforts = {m["id"]: m["reasoning_efforts"] for m in doc["models"]}
    assert efforts[h.CHAT_MODEL] == ["none", "low", "medium", "high"], efforts
    assert efforts["openai/gpt-oss-20b"] == ["low", "medium", "high"] and efforts[h.EMBED_MODEL] == []

    (tmp_path / "prompts.txt").write_text("Name a colour.\nName a fruit.\n", encoding="utf-8")
    out = tmp_path / "batch.jsonl"
    code, doc, err = h.run_script(  # SKILL.md step 1's first command
        "create_batch_file", "--model", h.CHAT_MODEL, "--prompts", str(tmp_path / "prompts.txt"),
        "--reasoning-effort", "none", "--max-tokens", "256", "-o", str(out), env=env,
    )  # fmt: skip
    assert code == 0, (code, doc, err)
    code, doc, err = h.run_script("submit", str(out), env=env)
    assert code == 0 and doc["created"] == 1, (code, doc, err)
    sent = requests.get(
        f"{emulator.base_url}/files/{doc['batches'][0]['input_file_id']}/content",
        headers=emulator.headers,
        timeout=10,
    ).text
    assert sent.count('"reasoning_effort":"none"') == 2, sent  # what the server stored
    h.poll_wait("--manifest", doc["manifest"], env=env)
    code, doc, err = h.run_script("fetch_results", "--manifest", doc["manifest"], env=env)
    assert code == 0 and doc["complete"] is True, (code, doc, err)
    results = h.read_jsonl(Path(doc["files"]["results"]))
    assert [r["status"] for r in results] == ["completed"] * 2 and not any(r["reasoning"] for r in results)

    before = emulator.stats()
    minimal = tmp_path / "minimal.jsonl"
    code, doc, err = h.run_script(
        "create_batch_file", "--model", h.CHAT_MODEL, "--prompt", "Hi", "--reasoning-effort", "minimal",
        "-o", str(minimal), env=env,
    )  # fmt: skip
    assert code == 0, (code, doc, err)  # a level of the API: the file is valid; the model's list decides
    code, doc, err = h.run_script("submit", str(minimal), env=env)
    assert code == 4, (code, doc, err)
    assert doc["error"]["message"].endswith(
        "Line 1: Reasoning effort 'minimal' is not supported by this provider. Supported values: none, low, "
        "medium, high."
    ), doc
    after = emulator.stats()
    assert (after["files_created"], after["batches_created"]) == (
        before["files_created"],
        before["batches_created"],
    )
