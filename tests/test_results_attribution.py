"""results must never be attributed to the wrong input, and answered lines are never dropped."""

from __future__ import annotations

from pathlib import Path

import requests


def test_two_inputs_sharing_custom_ids_are_joined_each_to_its_own_answers(emulator, env, tmp_path, h):
    a = h.chat_lines(3)
    b = h.chat_lines(3)
    for i, line in enumerate(b):  # same custom_ids as a, other prompts
        line["body"]["messages"][0]["content"] = f"Other question {i + 100}"
    fa = h.write_jsonl(tmp_path / "a.jsonl", a)
    fb = h.write_jsonl(tmp_path / "b.jsonl", b)
    code, doc, err = h.run_script("submit", str(fa), str(fb), env=env)
    assert code == 0, err  # the join is per batch, so repeated ids across inputs are no ambiguity
    h.poll_wait("--manifest", doc["manifest"], env=env)
    code, doc, err = h.run_script("fetch_results", "--manifest", doc["manifest"], env=env)
    assert code == 0 and doc["complete"] is True, (doc, err)
    results = h.read_jsonl(tmp_path / "a.results" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in a + b]
    assert all(f"Question number {i}" in results[i]["content"] for i in range(3)), results
    assert all(f"Other question {i + 100}" in results[i + 3]["content"] for i in range(3)), results


def test_fetching_two_batches_with_the_same_custom_ids_does_not_mix_them(emulator, env, tmp_path, h):
    """Two jobs whose inputs share custom_ids (no resubmission between them): separate inputs, each
    answer with its own batch, a first attempt each."""
    ids = []
    for name, text in (("a.jsonl", "Alpha"), ("b.jsonl", "Beta")):
        lines = h.chat_lines(3)
        for line in lines:
            line["body"]["messages"][0]["content"] = f"{text} question"
        job = h.submit_lines(tmp_path, lines, env, name=name)
        h.poll_wait("--manifest", job.manifest, env=env)
        ids.append(job.batch_id)
    out = tmp_path / "both"
    code, doc, err = h.run_script("fetch_results", *ids, "--out", str(out), env=env)
    assert code == 0, err
    results = h.read_jsonl(out / "results.jsonl")
    assert [(r["batch_id"], r["attempts"]) for r in results] == [(ids[0], 1)] * 3 + [(ids[1], 1)] * 3
    assert all("Alpha" in r["content"] for r in results[:3]), results
    assert all("Beta" in r["content"] for r in results[3:]), results


def test_results_list_answered_lines_when_the_input_file_was_deleted(emulator, env, tmp_path, h):
    job = h.submit_lines(tmp_path, h.chat_lines(4), env)
    batch = job.doc["batches"][0]
    h.poll_wait("--manifest", job.manifest, env=env)
    r = requests.delete(f"{emulator.base_url}/files/{batch['input_file_id']}", headers=emulator.headers)
    assert r.status_code == 200
    out = tmp_path / "out"
    code, doc, err = h.run_script("fetch_results", batch["batch_id"], "--out", str(out), env=env)
    assert code == 0, err
    assert len(h.read_jsonl(out / "output.jsonl")) == 4
    results = h.read_jsonl(out / "results.jsonl")
    assert sorted(r["custom_id"] for r in results) == [f"req-{i:05d}" for i in range(4)], (doc, err)
    assert doc["counts"]["completed"] == 4


def test_results_are_written_when_the_input_file_cannot_be_downloaded(emulator, env, tmp_path, h):
    """A bare batch id whose input file cannot be read (deleted, or a server that refuses to serve
    batch inputs): the downloaded results still reach results.jsonl instead of the run failing."""
    import json

    job = h.submit_lines(tmp_path, h.chat_lines(3), env)
    batch_id = job.batch_id
    h.poll_wait("--manifest", job.manifest, env=env)
    out = tmp_path / "out"
    state = out / "fetch.manifest.json"
    out.mkdir()
    # the input file id recorded for the batch no longer exists on the server
    code, doc, err = h.run_script("fetch_results", batch_id, "--out", str(out), env=env)
    assert code == 0, err
    data = json.loads(state.read_text())
    data["shards"][0]["file_id"] = "00000000-0000-4000-8000-000000000000"
    state.write_text(json.dumps(data))
    (out / "input-000.jsonl").unlink()
    (out / "results.jsonl").unlink()
    code, doc, err = h.run_script("fetch_results", batch_id, "--out", str(out), env=env)
    assert code == 0, (doc, err)
    assert doc["counts"]["completed"] == 3
    assert len(h.read_jsonl(out / "results.jsonl")) == 3


def test_a_shard_whose_input_can_be_read_nowhere_keeps_its_place_in_the_results(emulator, env, tmp_path, h):
    """A 3-shard job whose first shard's file is gone here and on the server: its answers are listed by what
    was answered, in its place (before the later shards'), on the first fetch and on every later one (they
    came last: req-00003 ... req-00008, then req-00000 ... req-00002)."""
    job = h.submit_lines(tmp_path, h.chat_lines(9), env, "--max-requests", "3")
    first = job.doc["batches"][0]
    h.poll_wait("--manifest", job.manifest, env=env)
    Path(first["shard"]).unlink()
    r = requests.delete(f"{emulator.base_url}/files/{first['input_file_id']}", headers=emulator.headers)
    assert r.status_code == 200
    order = [line["custom_id"] for line in job.lines]
    for _ in range(2):
        code, doc, err = h.run_script("fetch_results", "--manifest", job.manifest, env=env)
        assert code == 0 and "results list only what was answered" in err, (code, doc, err)
        results = h.read_jsonl(Path(doc["files"]["results"]))
        assert [r["custom_id"] for r in results] == order, results
        assert [r["batch_id"] for r in results] == [
            b["batch_id"] for b in job.doc["batches"] for _ in range(3)
        ]
