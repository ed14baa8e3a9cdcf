"""fetch_results.py gives the same results with the optional JSON accelerator (orjson) and without it.

The standard library path is the reference: ``DOUBLEWORD_PURE_JSON=1`` switches orjson off. A job of
answers of every kind (truncated by small budgets, reasoning, JSON output with its check, failures,
sloppy answers) is fetched both ways into two folders; the results, the retry lines and the summary must
agree. Without orjson installed both runs take the plain path and the test still checks the pair.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3

import pytest
from emulator_server import EmulatorServer

from doubleword.store import INDEX_NAME

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    "required": ["label", "score"],
}


def _indexed_inputs(out) -> int:
    with contextlib.closing(sqlite3.connect(out / INDEX_NAME)) as db:
        return db.execute("SELECT count(*) FROM inputs").fetchone()[0]


def _lines(h):
    lines = h.chat_lines(120)
    for i, line in enumerate(lines):
        body = line["body"]
        if i % 3 == 0:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
            body["max_tokens"] = 200
        elif i % 5 == 0:
            body["max_tokens"] = 2  # cut off
        elif i % 7 == 0:
            body["messages"][0]["content"] += ' with "quotes", a \\ backslash, 東京 and 🎉'
    return lines


def test_the_accelerated_and_the_plain_json_paths_write_the_same_results(tmp_path, h):
    args = ("--start-delay", "0", "--quiet", "--fail-rate", "0.1", "--sloppy-rate", "0.2", "--seed", "5")
    with EmulatorServer(*args, api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        batch = h.write_jsonl(tmp_path / "jobs.jsonl", _lines(h))
        code, doc, err = h.run_script("submit", str(batch), env=env)
        assert code == 0, err
        manifest = doc["manifest"]
        code, _, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
        assert code in (0, 6), err
        runs = {}
        for name, pure in (("accelerated", "0"), ("plain", "1")):
            out = tmp_path / name
            copy = tmp_path / f"{name}.manifest.json"
            shutil.copyfile(manifest, copy)
            code, doc, err = h.run_script(
                "fetch_results", "--manifest", str(copy), "--out", str(out),
                env=dict(env, DOUBLEWORD_PURE_JSON=pure),
            )  # fmt: skip
            assert code == 6, err  # failures and cut-off answers: not every input has a usable answer
            runs[name] = (out, doc)
    (fast_out, fast), (plain_out, plain) = runs["accelerated"], runs["plain"]
    fast_results, plain_results = (
        h.read_jsonl(fast_out / "results.jsonl"),
        h.read_jsonl(plain_out / "results.jsonl"),
    )
    assert len(fast_results) == 120 and fast_results == plain_results
    statuses = {r["status"] for r in plain_results}
    assert {"completed", "failed", "truncated"} <= statuses  # the job exercised more than the happy path
    assert any(r["parsed"] for r in plain_results)
    assert (fast_out / "retry.jsonl").read_bytes() == (plain_out / "retry.jsonl").read_bytes()
    for key in ("counts", "usage", "failures_by_type", "failure_groups"):
        assert json.dumps(fast[key], sort_keys=True) == json.dumps(plain[key], sort_keys=True), key


@pytest.mark.parametrize("fail_rate", [0.0, 0.05])
def test_a_job_answered_in_completion_order_is_written_the_same_without_the_per_line_join(
    tmp_path, h, fail_rate
):
    """A job in completion order, as a server writes it (here three shards). Answered whole, it is written
    by copying its record file's answers in input order (no index of the inputs, no per-line join); with
    failures among them, the index's join still copies the completed answers between the failures as runs
    (a run goes on across the places where the file holds other answers). --export needs every row, so
    it takes the per-line join: the two results.jsonl must be byte for byte the same, in input order,
    and the summary the same."""
    args = ("--start-delay", "0", "--quiet", "--fail-rate", str(fail_rate), "--seed", "3")
    whole = fail_rate == 0
    with EmulatorServer(*args, api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(150)
        batch = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        code, doc, err = h.run_script("submit", str(batch), "--max-requests", "50", env=env)
        assert code == 0 and len(doc["batches"]) == 3, err
        manifest = doc["manifest"]
        code, _, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
        assert code in (0, 6), err
        docs = {}
        for name, extra in (("copied", ()), ("joined", ("--export", str(tmp_path / "answers.jsonl")))):
            copy = tmp_path / f"{name}.manifest.json"
            shutil.copyfile(manifest, copy)
            code, docs[name], err = h.run_script(
                "fetch_results", "--manifest", str(copy), "--out", str(tmp_path / name), *extra, env=env
            )
            assert code == (0 if whole else 6) and docs[name]["complete"] is whole, err
    arrived = [
        json.loads(line)["custom_id"]
        for name in ("output.jsonl", "errors.jsonl")
        for line in (tmp_path / "copied" / name).read_bytes().splitlines()
    ]
    assert sorted(arrived) == sorted(line["custom_id"] for line in lines)
    assert arrived != [line["custom_id"] for line in lines]  # the server's order was not the input's
    assert _indexed_inputs(tmp_path / "copied") == (0 if whole else 150)
    assert _indexed_inputs(tmp_path / "joined") == 150
    copied = (tmp_path / "copied" / "results.jsonl").read_bytes()
    assert copied == (tmp_path / "joined" / "results.jsonl").read_bytes()
    results = [json.loads(line) for line in copied.splitlines()]
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    completed = [r for r in results if r["status"] == "completed"]
    assert all(r["content"] for r in completed)
    assert len(completed) == 150 if whole else 100 < len(completed) < 150
    assert len(h.read_jsonl(tmp_path / "answers.jsonl")) == 150
    for key in ("counts", "usage", "failure_groups"):
        assert docs["copied"][key] == docs["joined"][key], key
