"""--export: one row per input, in input order, beside the user's own columns, for a spreadsheet."""

from __future__ import annotations

import csv
import json

from answer_schemas import SENTIMENT

ROWS = [
    {"id": "r1", "text": "Great, really great", "note": 'She said "wow"'},
    {"id": "r2", "text": "Line one\nline two, with comma", "note": "emoji 🎉 ok"},
    {"id": "r3", "text": "Café naïve 東京", "note": ""},
]
SCHEMA = SENTIMENT


def _make_job(tmp_path, h, env):
    data = tmp_path / "reviews.csv"
    with open(data, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "note"])
        writer.writeheader()
        writer.writerows(ROWS)
    schema = tmp_path / "sentiment.json"
    schema.write_text(json.dumps(SCHEMA))
    batch = tmp_path / "batch.jsonl"
    code, doc, err = h.run_script(
        "create_batch_file",
        "--model", "Qwen/Qwen3.5-9B", "--csv", str(data), "--id-field", "id",
        "--template", "Classify: {text}", "--json-schema", str(schema), "--max-tokens", "200", "-o", str(batch),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "batch.rows.jsonl").exists()  # the source rows the export joins
    code, doc, err = h.run_script("submit", str(batch), env=env)
    assert code == 0, err
    manifest = doc["manifest"]
    code, _, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    return manifest


def test_csv_export_keeps_the_users_columns_and_adds_status_and_the_schemas_properties(
    emulator, env, tmp_path, h
):
    manifest = _make_job(tmp_path, h, env)
    export = tmp_path / "answers.csv"
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--export", str(export), env=env)
    assert code == 0 and doc["complete"] is True, (doc, err)
    assert doc["files"]["export"] == str(export)
    raw = export.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # a BOM, so that Excel reads UTF-8
    with open(export, encoding="utf-8-sig", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["id", "text", "note", "custom_id", "status", "sentiment", "score", "error"]
    body = table[1:]
    assert [row[:3] for row in body] == [[r["id"], r["text"], r["note"]] for r in ROWS]  # unchanged
    assert [row[3] for row in body] == ["r1", "r2", "r3"]
    assert all(row[4] == "completed" and row[5] in ("positive", "negative") for row in body)
    assert all(float(row[6]) == float(row[6]) and row[7] == "" for row in body)
    results = h.read_jsonl(tmp_path / "batch.results" / "results.jsonl")
    assert [r["parsed"]["sentiment"] for r in results] == [row[5] for row in body]


def test_jsonl_export_has_the_same_rows_as_objects(emulator, env, tmp_path, h):
    manifest = _make_job(tmp_path, h, env)
    export = tmp_path / "answers.jsonl"
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--export", str(export), env=env)
    assert code == 0, err
    rows = h.read_jsonl(export)
    assert [{k: r[k] for k in ("id", "text", "note")} for r in rows] == ROWS
    assert all(r["status"] == "completed" and r["sentiment"] in ("positive", "negative") for r in rows)
    assert all(isinstance(r["score"], (int, float)) and r["error"] is None for r in rows)


def test_an_export_path_that_is_neither_csv_nor_jsonl_is_a_usage_error(tmp_path, h):
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", "x.json", "--export", str(tmp_path / "a.xlsx")
    )
    assert code == 2 and ".csv or .jsonl" in doc["error"]["message"]


def test_a_csv_export_of_embeddings_warns_that_a_spreadsheet_cell_cannot_hold_them(
    emulator, env, tmp_path, h
):
    """A 4096-number embedding is ~38,000 characters of JSON, past Excel's 32,767 a cell: the CSV is still
    written whole, and stderr says so and names the .jsonl to use; a .jsonl export or a text CSV says
    nothing of it."""
    batch = h.write_jsonl(tmp_path / "emb.jsonl", h.embedding_lines(2))
    code, doc, err = h.run_script("submit", str(batch), env=env)
    assert code == 0, err
    manifest = doc["manifest"]
    h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", manifest, "--export", "emb.csv", env=env, cwd=tmp_path
    )
    assert code == 0, err
    with open(tmp_path / "emb.csv", encoding="utf-8-sig", newline="") as handle:
        table = list(csv.reader(handle))
    assert len(json.loads(table[1][table[0].index("embedding")])) == 4096  # written whole
    warning = next(line for line in err.splitlines() if "spreadsheet cell" in line)
    assert "32,767" in warning and "emb.jsonl" in warning, warning
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", manifest, "--export", "emb-out.jsonl", env=env, cwd=tmp_path
    )
    assert code == 0 and "spreadsheet cell" not in err, err
    text_job = _make_job(tmp_path, h, env)
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", text_job, "--export", "answers.csv", env=env, cwd=tmp_path
    )
    assert code == 0 and "spreadsheet cell" not in err, err


def test_an_export_whose_source_rows_file_is_gone_says_so(emulator, env, tmp_path, h):
    """The rows file create wrote (and submit recorded) moved away: the export has only our columns, and
    stderr names the file instead of handing over a table without the user's columns unremarked."""
    manifest = _make_job(tmp_path, h, env)
    rows = tmp_path / "batch.rows.jsonl"
    rows.rename(tmp_path / "elsewhere.jsonl")
    code, doc, err = h.run_script(
        "fetch_results", "--manifest", manifest, "--export", "a.csv", env=env, cwd=tmp_path
    )
    assert code == 0, err
    with open(tmp_path / "a.csv", encoding="utf-8-sig", newline="") as handle:
        assert next(csv.reader(handle))[:2] == ["custom_id", "status"]
    warning = next(line for line in err.splitlines() if "is gone" in line)
    assert str(rows) in warning and "put it back" in warning, warning


def test_an_export_over_the_jobs_own_files_is_refused(emulator, env, tmp_path, h):
    """--export batch.jsonl overwrote the job's own batch file with export rows (and --export of the
    rows file, a round file or results.jsonl likewise), exit 0: the original requests a resubmit sends
    were gone. Now exit 2 naming what it is, the file untouched; a new name in the results folder is fine."""
    manifest = _make_job(tmp_path, h, env)
    batch, rows = tmp_path / "batch.jsonl", tmp_path / "batch.rows.jsonl"
    before = {p: p.read_bytes() for p in (batch, rows)}
    for target, says in (
        (batch, "the job's own input file"),
        (rows, "the job's own rows file"),
        (tmp_path / "batch.results" / "results.jsonl", "results.jsonl of the results folder"),
    ):
        code, doc, err = h.run_script(
            "fetch_results", "--manifest", manifest, "--export", str(target), env=env
        )
        assert code == 2 and says in doc["error"]["message"], doc
    assert {p: p.read_bytes() for p in before} == before
    inside = tmp_path / "batch.results" / "answers.csv"
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--export", str(inside), env=env)
    assert code == 0 and inside.is_file(), doc


def test_whole_json_followed_by_blank_space_to_the_limit_is_a_usable_answer(tmp_path, h):
    """JSON-mode decoding that will not stop: the sloppy model's long structured answers are the whole JSON
    and then blank lines until max_tokens cuts them (finish_reason "length"). The JSON is whole and fits
    the schema, so the answer counts (completed, parsed, its columns in the export) rather than asking
    for a resubmit with a larger limit, which would only buy more blank space. A cut that leaves no whole
    JSON stays truncated."""
    schema = tmp_path / "sentiment.json"
    schema.write_text(json.dumps(SCHEMA))
    lines = h.chat_lines(40)
    for line in lines:
        line["body"]["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": SCHEMA},
        }
        line["body"]["max_tokens"] = 200  # below every long answer's 300-800 tokens, above the JSON
    lines[0]["body"]["max_tokens"] = 3  # inside the JSON itself
    with h.start_emulator("--sloppy-rate", "1", "--seed", "7") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, lines, env)
        h.poll_wait("--manifest", job.manifest, env=env, code=None)
        out = tmp_path / "answers.csv"
        code, doc, err = h.run_script(
            "fetch_results", "--manifest", job.manifest, "--export", str(out), env=env
        )
    results = {r["custom_id"]: r for r in h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")}
    runaway = [r for r in results.values() if r["finish_reason"] == "length" and r["status"] == "completed"]
    assert runaway, doc["counts"]  # the seed gives some long answers
    for record in runaway:
        assert record["content"].startswith("{") and record["content"].endswith("\n\n")
        assert record["parsed"] == json.loads(record["content"]) and record["error"] is None
    cut = results[lines[0]["custom_id"]]
    assert cut["status"] == "truncated" and cut["parsed"] is None and cut["error"]["type"] == "truncated"
    assert doc["counts"]["truncated"] == 1, doc["counts"]  # only the JSON cut inside
    with open(out, encoding="utf-8-sig", newline="") as handle:
        rows = {row["custom_id"]: row for row in csv.DictReader(handle)}
    for record in runaway:
        row = rows[record["custom_id"]]
        assert row["status"] == "completed" and row["sentiment"] == record["parsed"]["sentiment"]
