"""create_batch_file.py inputs (issue 13): images from a column or a folder, the reasoning effort, empty
prompts, --limit, duplicate ids, and the source-rows file beside every batch file. Run as a subprocess:
exit code, the JSON on stdout, the files on disk."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def run(script: str, *args: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, timeout=120, cwd=cwd
    )
    return proc, json.loads(proc.stdout)


def create(*args: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    return run("create_batch_file.py", "--model", MODEL, *args, cwd=cwd)


def lines(path: Path | str) -> list[dict]:
    return [json.loads(raw) for raw in Path(path).read_text(encoding="utf-8").split("\n") if raw]


def validate(path: Path | str) -> dict:
    proc, out = run("validate_batch_file.py", str(path))
    assert proc.returncode == 0, out
    return out


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(PNG)
    (folder / "img" / "b.jpg").write_bytes(JPEG)
    return folder


def test_image_column_mixes_png_jpeg_and_url_into_exact_parts(photos, tmp_path):
    csv = photos / "rows.csv"
    csv.write_text(
        "id,img,q\nr1,img/a.png,What is it?\nr2,img/b.jpg,And this?\nr3,https://x.test/c.webp,Web\n"
    )
    out = tmp_path / "out" / "vision.jsonl"
    # run from another folder: image paths are relative to the CSV's folder, not the working directory
    proc, result = create(
        "--csv",
        str(csv),
        "--id-field",
        "id",
        "--field",
        "q",
        "--image-field",
        "img",
        "-o",
        str(out),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert result["requests"] == 3
    contents = [line["body"]["messages"][0]["content"] for line in lines(out)]
    assert contents[0] == [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": data_uri("image/png", PNG)}},
    ]
    assert contents[1][1]["image_url"]["url"] == data_uri("image/jpeg", JPEG)
    assert contents[2][1] == {"type": "image_url", "image_url": {"url": "https://x.test/c.webp"}}
    report = validate(out)["files"][0]
    assert report["valid"] and report["warnings"] == []


def test_responses_endpoint_gets_input_image_parts(photos, tmp_path):
    csv = photos / "rows.csv"
    csv.write_text("img,q\nimg/a.png,Describe\n")
    out = tmp_path / "r.jsonl"
    proc, _ = create(
        "--endpoint", "responses", "--csv", str(csv), "--field", "q", "--image-field", "img", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert lines(out)[0]["body"]["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": data_uri("image/png", PNG)},
            ],
        }
    ]
    validate(out)


def test_missing_image_is_an_error_naming_row_and_path(photos, tmp_path):
    csv = photos / "rows.csv"
    csv.write_text("img,q\nimg/a.png,one\nimg/nope.png,two\n")
    out = tmp_path / "o.jsonl"
    proc, result = create("--csv", str(csv), "--field", "q", "--image-field", "img", "-o", str(out))
    assert proc.returncode == 4
    message = result["error"]["message"]
    assert "row 2" in message and "nope.png" in message and "does not exist" in message
    assert not out.exists() and not (tmp_path / "o.rows.jsonl").exists()


def test_image_over_the_10_mb_line_limit_is_an_error_naming_the_row(photos, tmp_path):
    (photos / "img" / "huge.png").write_bytes(PNG[:16] + os.urandom(8 * 1024 * 1024))
    csv = photos / "rows.csv"
    csv.write_text("img,q\nimg/a.png,fine\nimg/huge.png,too big\n")
    out = tmp_path / "o.jsonl"
    proc, result = create("--csv", str(csv), "--field", "q", "--image-field", "img", "-o", str(out))
    assert proc.returncode == 4
    assert "row 2" in result["error"]["message"] and "10,485,760" in result["error"]["message"]
    assert list(tmp_path.glob("o*")) == []


def test_images_folder_one_request_per_image_ids_from_file_names(photos, tmp_path):
    (photos / "img" / "notes.txt").write_text("not an image")
    out = tmp_path / "ocr.jsonl"
    proc, result = create("--images", str(photos / "img"), "--prompt", "Transcribe the page.", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    got = lines(out)
    assert [line["custom_id"] for line in got] == ["a.png", "b.jpg"]
    assert got[0]["body"]["messages"][0]["content"][0] == {"type": "text", "text": "Transcribe the page."}
    assert lines(tmp_path / "ocr.rows.jsonl") == [
        {"custom_id": "a.png", "row": {"image": "a.png", "prompt": "Transcribe the page."}},
        {"custom_id": "b.jpg", "row": {"image": "b.jpg", "prompt": "Transcribe the page."}},
    ]
    validate(out)


def test_images_refused_for_an_endpoint_without_image_parts(photos, tmp_path):
    out = tmp_path / "o.jsonl"
    proc, result = create("--endpoint", "completions", "--images", str(photos / "img"), "-o", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert (
        result["error"]["message"] == "--images does not apply to the completions endpoint (/v1/completions)"
    )


def test_byte_sharding_holds_with_big_image_lines(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.png").write_bytes(PNG[:16] + os.urandom(100_000))
    out = tmp_path / "s.jsonl"
    proc, result = create("--images", str(folder), "--max-bytes", "300000", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    shards = result["shards"]
    assert [s["requests"] for s in shards] == [2, 2, 2]
    for shard in shards:
        assert Path(shard["path"]).stat().st_size == shard["bytes"] <= 300_000
        assert len(lines(shard["rows_path"])) == shard["requests"]
        validate(shard["path"])


@pytest.mark.parametrize(
    "endpoint, expected",
    [("chat", {"reasoning_effort": "none"}), ("responses", {"reasoning": {"effort": "max"}})],
)
def test_reasoning_effort_goes_in_the_right_field(tmp_path, endpoint, expected):
    effort = "none" if endpoint == "chat" else "max"
    out = tmp_path / "o.jsonl"
    proc, _ = create("--endpoint", endpoint, "--prompt", "hi", "--reasoning-effort", effort, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    body = lines(out)[0]["body"]
    assert {k: body[k] for k in expected} == expected
    validate(out)


def test_reasoning_effort_refused_on_completions_and_unknown_levels(tmp_path):
    out = tmp_path / "o.jsonl"
    proc, result = create(
        "--endpoint", "completions", "--prompt", "hi", "--reasoning-effort", "low", "-o", str(out)
    )
    assert proc.returncode == 2 and "completions" in result["error"]["message"]
    proc, result = create("--prompt", "hi", "--reasoning-effort", "extreme", "-o", str(out))
    assert proc.returncode == 2 and not out.exists()


@pytest.mark.parametrize("endpoint", ["chat", "embeddings"])
def test_blank_fields_give_an_empty_warning_and_skip_empty_drops_them(tmp_path, endpoint):
    csv = tmp_path / "reviews.csv"
    csv.write_text("id,text\n1,good\n2,\n3,   \n4,bad\n")
    out = tmp_path / "o.jsonl"
    proc, result = create("--endpoint", endpoint, "--csv", str(csv), "--field", "text", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert result["requests"] == 4
    assert result["empty_prompts"]["count"] == 2
    assert [w for w in result["warnings"] if w.startswith("empty:")]
    assert "row 2" in result["empty_prompts"]["first"][0]
    proc, result = create(
        "--endpoint", endpoint, "--csv", str(csv), "--field", "text", "--skip-empty", "-o", str(out)
    )
    assert proc.returncode == 0
    assert (result["requests"], result["skipped_empty"]) == (2, 2)
    assert [line["custom_id"] for line in lines(out)] == ["req-00001", "req-00004"]


def test_template_with_only_blank_values_is_empty(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"t": "x"}\n{"t": ""}\n')
    proc, result = create(
        "--jsonl", str(data), "--template", "Classify: {t}", "-o", str(tmp_path / "o.jsonl")
    )
    assert proc.returncode == 0 and result["empty_prompts"]["count"] == 1


def test_limit_takes_the_first_rows(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(20)))
    out = tmp_path / "o.jsonl"
    proc, result = create("--prompts", str(prompts), "--limit", "5", "-o", str(out))
    assert proc.returncode == 0 and result["requests"] == 5
    assert [line["body"]["messages"][0]["content"] for line in lines(out)] == [
        f"prompt {i}" for i in range(5)
    ]


def test_duplicate_ids_fail_by_default_or_are_numbered_or_skipped(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("id,text\na,one\nb,two\na,one\na,three\n")
    out = tmp_path / "o.jsonl"
    proc, result = create("--csv", str(csv), "--id-field", "id", "--field", "text", "-o", str(out))
    assert proc.returncode == 4 and "row 3" in result["error"]["message"] and not out.exists()
    proc, result = create(
        "--csv", str(csv), "--id-field", "id", "--field", "text", "--duplicates", "number", "-o", str(out)
    )
    assert proc.returncode == 0 and result["renamed_duplicates"] == 2
    assert [line["custom_id"] for line in lines(out)] == ["a", "b", "a-2", "a-3"]
    assert [r["custom_id"] for r in lines(tmp_path / "o.rows.jsonl")] == ["a", "b", "a-2", "a-3"]
    validate(out)
    proc, result = create(
        "--csv", str(csv), "--id-field", "id", "--field", "text", "--duplicates", "skip", "-o", str(out)
    )
    assert proc.returncode == 4 and "row 4" in result["error"]["message"]  # same id, another request
    csv.write_text("id,text\na,one\nb,two\na,one\n")
    proc, result = create(
        "--csv", str(csv), "--id-field", "id", "--field", "text", "--duplicates", "skip", "-o", str(out)
    )
    assert proc.returncode == 0 and (result["requests"], result["skipped_duplicates"]) == (2, 1)


def test_rows_file_beside_every_shard_line_for_line(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("id,text,lang\n" + "".join(f"k{i},text {i},en\n" for i in range(5)))
    out = tmp_path / "b.jsonl"
    proc, result = create(
        "--csv", str(csv), "--id-field", "id", "--field", "text", "--max-requests", "2", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert [Path(s["rows_path"]).name for s in result["shards"]] == [
        "b-001.rows.jsonl",
        "b-002.rows.jsonl",
        "b-003.rows.jsonl",
    ]
    for shard in result["shards"]:
        batch, rows = lines(shard["path"]), lines(shard["rows_path"])
        assert [r["custom_id"] for r in rows] == [b["custom_id"] for b in batch]
        for line, row in zip(batch, rows, strict=True):
            assert row["row"] == {
                "id": line["custom_id"],
                "text": line["body"]["messages"][0]["content"],
                "lang": "en",
            }
    proc, _ = create("--prompt", "solo", "-o", str(tmp_path / "p.jsonl"))
    assert lines(tmp_path / "p.rows.jsonl") == [{"custom_id": "req-00001", "row": {"prompt": "solo"}}]


def test_several_image_columns_give_one_part_each_and_a_row_without_any_is_an_error(photos, tmp_path):
    csv = photos / "rows.csv"
    csv.write_text("front,back,q\nimg/a.png,img/b.jpg,Compare\nimg/a.png,,Only one\n")
    out = tmp_path / "o.jsonl"
    args = (
        "--csv",
        str(csv),
        "--field",
        "q",
        "--image-field",
        "front",
        "--image-field",
        "back",
        "-o",
        str(out),
    )
    proc, _ = create(*args)
    assert proc.returncode == 0, proc.stderr
    parts = [[p["type"] for p in line["body"]["messages"][0]["content"]] for line in lines(out)]
    assert parts == [["text", "image_url", "image_url"], ["text", "image_url"]]
    csv.write_text("front,back,q\n,,Nothing\n")
    proc, result = create(*args)
    assert (
        proc.returncode == 4
        and "row 1" in result["error"]["message"]
        and "'back'" in result["error"]["message"]
    )


def test_a_rows_file_given_as_a_batch_file_is_named_as_such(tmp_path):
    out = tmp_path / "b.jsonl"
    proc, _ = create("--prompt", "one", "--prompt", "two", "-o", str(out))
    assert proc.returncode == 0
    proc, result = run("validate_batch_file.py", str(out), str(tmp_path / "b.rows.jsonl"))
    assert proc.returncode == 4
    assert [f["valid"] for f in result["files"]] == [True, False]
    assert [(e["line"], e["code"]) for e in result["files"][1]["errors"]] == [(0, "rows_file")]
    assert "pass X.jsonl instead" in result["files"][1]["errors"][0]["message"]


def test_sharding_an_existing_file_splits_its_rows_file_too(tmp_path):
    from doubleword.build import shard_file

    out = tmp_path / "b.jsonl"
    proc, _ = create(*[arg for i in range(5) for arg in ("--prompt", f"p{i}")], "-o", str(out))
    assert proc.returncode == 0
    shards = shard_file(out, tmp_path / "parts.jsonl", max_requests=2)
    assert [s["requests"] for s in shards] == [2, 2, 1]
    for shard in shards:
        rows = lines(shard["rows_path"])
        assert [r["custom_id"] for r in rows] == [b["custom_id"] for b in lines(shard["path"])]


def test_skip_empty_with_only_empty_rows_says_so(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text('text\n""\n \n')
    proc, result = create(
        "--csv", str(csv), "--field", "text", "--skip-empty", "-o", str(tmp_path / "o.jsonl")
    )
    assert proc.returncode == 4 and "every row (2) has an empty prompt" in result["error"]["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_a_jsonl_image_list_gives_one_part_per_image(photos, tmp_path):
    data = photos / "rows.jsonl"
    data.write_text(json.dumps({"pages": ["img/a.png", "https://x.test/p2.png"], "q": "Read both"}) + "\n")
    out = tmp_path / "o.jsonl"
    proc, _ = create("--jsonl", str(data), "--field", "q", "--image-field", "pages", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    content = lines(out)[0]["body"]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url"]
    assert content[2]["image_url"]["url"] == "https://x.test/p2.png"
    assert lines(tmp_path / "o.rows.jsonl")[0]["row"]["pages"] == ["img/a.png", "https://x.test/p2.png"]


def test_ocr_folder_end_to_end_against_the_emulator(emulator, env, tmp_path, h, photos):
    out = tmp_path / "ocr.jsonl"
    proc, result = create(
        "--images", str(photos / "img"), "--prompt", "Transcribe.", "--max-tokens", "50", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    code, doc, err = h.run_script("submit", str(out), env=env)
    assert code == 0, err
    code, doc, err = h.run_script(
        "poll", "--manifest", doc["manifest"], "--wait", "--interval", "0.1", env=env
    )
    assert code == 0, err
    code, doc, err = h.run_script("fetch_results", "--manifest", doc["manifest"], env=env)
    assert code == 0, err
    assert doc["counts"]["completed"] == 2
    prompt_tokens = [
        line["response"]["body"]["usage"]["prompt_tokens"]
        for line in lines(tmp_path / "ocr.results" / "output.jsonl")
    ]
    assert all(
        tokens > 100 for tokens in prompt_tokens
    )  # the image parts were counted, not just "Transcribe."


def test_a_short_csv_row_has_empty_values_not_nulls(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("id,text\nA,hello\nB\n")
    out = tmp_path / "o.jsonl"
    proc, result = create("--csv", str(csv), "--id-field", "id", "--field", "text", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert result["empty_prompts"]["count"] == 1
    assert lines(tmp_path / "o.rows.jsonl")[1] == {"custom_id": "B", "row": {"id": "B", "text": ""}}


@pytest.mark.parametrize("sep, name", [(";", "';'"), ("\t", "tab")])
def test_a_csv_separated_otherwise_than_by_commas_is_named_at_its_header(tmp_path, sep, name):
    data = tmp_path / "tickets.csv"
    data.write_text(f"id{sep}subject\nT1{sep}Login broken\n", encoding="utf-8")
    proc, out = create(
        "--csv", str(data), "--template", "Classify: {subject}", "-o", str(tmp_path / "b.jsonl")
    )
    assert proc.returncode == 4 and f"looks {name}-separated" in out["error"]["message"], out
    assert not (tmp_path / "b.jsonl").exists()


def test_a_workbook_given_as_csv_is_named_as_such(tmp_path):
    book = tmp_path / "tickets.xlsx"
    book.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(128, 256)) * 4)  # a zip, as .xlsx files are
    proc, out = create("--csv", str(book), "--field", "subject", "-o", str(tmp_path / "b.jsonl"))
    assert proc.returncode == 4 and "spreadsheet workbook, not CSV" in out["error"]["message"], out


def test_a_csv_quote_never_closed_is_an_error_naming_its_row_not_a_file_missing_its_rows(tmp_path):
    """A stray opening quote makes the lenient CSV reader run that value to the end of the file: 50 rows
    came out as 2 requests, exit 0. Now exit 4 naming the row and line, and nothing is written. Values
    that span lines, and a quote inside an unquoted value (5" screen), are read as before."""
    data = tmp_path / "reviews.csv"
    rows = "".join(f"r{i},row {i}\n" for i in range(3, 51))
    data.write_text('id,review\nr1,fine\nr2,"unclosed quote then left\n' + rows, encoding="utf-8")
    out = tmp_path / "b.jsonl"
    proc, result = create("--csv", str(data), "--id-field", "id", "--field", "review", "-o", str(out))
    assert proc.returncode == 4, result
    message = result["error"]["message"]
    assert f"row 2 (line 3) of {data} opens a quoted value that is never closed" in message, message
    assert "taking in the 48 line(s) after it" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]
    trial = ("--csv", str(data), "--id-field", "id", "--field", "review", "--limit", "5", "-o", str(out))
    proc, result = create(*trial)  # within the first N rows, it runs to the end of the file all the same
    assert proc.returncode == 4 and "is never closed" in result["error"]["message"], result

    data.write_text('id,review\nr1,"two\nlines"\nr2,5" screen\nr3,"last\nvalue"\n', encoding="utf-8")
    proc, result = create("--csv", str(data), "--id-field", "id", "--field", "review", "-o", str(out))
    assert proc.returncode == 0, result
    prompts = [line["body"]["messages"][0]["content"] for line in lines(out)]
    assert prompts == ["two\nlines", '5" screen', "last\nvalue"]


@pytest.mark.parametrize("limit", [[], ["--limit", "5"]], ids=["whole", "limit-5"])
def test_a_csv_quote_closed_only_rows_later_is_an_error_naming_its_row(tmp_path, limit):
    """A stray opening quote closed by a quote inside a later value (r10's 5" screen): the lenient reader
    took the 8 lines between them as row 2's text and went on, so 50 rows gave 42 requests (with --limit
    5, a trial run, 5 requests: row 2's prompt holding rows 3-10), exit 0. Now exit 4 naming the row, both
    lines and what to fix; nothing is written."""
    data = tmp_path / "reviews.csv"
    rows = [f"r{i},row {i}" for i in range(1, 51)]
    rows[1], rows[9] = 'r2,"unclosed quote then left', 'r10,a 5" screen'
    data.write_text("id,review\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "b.jsonl"
    proc, result = create(
        "--csv", str(data), "--id-field", "id", "--field", "review", *limit, "-o", str(out)
    )  # fmt: skip
    assert proc.returncode == 4, result
    message = result["error"]["message"]
    assert f"row 2 (line 3) of {data} opens a quoted value that is closed only by a quote" in message, message
    assert "on line 11, so the 8 line(s) after it were read as that row's text" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


def test_a_wrong_or_empty_id_column_says_which_and_lists_the_columns(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("ticket_id,text\nT1,hello\n,bye\n", encoding="utf-8")
    out = str(tmp_path / "o.jsonl")
    proc, result = create("--csv", str(data), "--id-field", "id", "--field", "text", "-o", out)
    assert proc.returncode == 4
    assert result["error"]["message"].endswith(
        "the id column 'id' is missing; columns are: ticket_id, text"
    ), result
    proc, result = create("--csv", str(data), "--id-field", "ticket_id", "--field", "text", "-o", out)
    assert proc.returncode == 4
    assert (
        "row 2 (line 3)" in result["error"]["message"]
        and "'ticket_id' is empty" in result["error"]["message"]
    )


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("scan-3.png", b"<html><body>404 Not Found</body></html>", "does not start as an image file does"),
        ("scan-3.jpg", b"", "is empty"),
    ],
)
def test_a_file_named_as_an_image_that_is_none_is_an_error_naming_it(photos, tmp_path, name, data, says):
    """An error page saved as .png, or an empty download, was sent as data:image/png (the model then fails
    on that request, or answers without seeing a page); now exit 4 naming the file, nothing written."""
    (photos / "img" / name).write_bytes(data)
    out = tmp_path / "ocr.jsonl"
    proc, result = create("--images", str(photos / "img"), "--prompt", "Transcribe the page.", "-o", str(out))
    assert proc.returncode == 4, result
    message = result["error"]["message"]
    assert message.startswith(f"image {name}: ") and "is not an image" in message and says in message, message
    assert not out.exists()


def test_a_template_with_json_braces_says_to_double_them(tmp_path):
    """'Answer like {"label": "x"}' reads {"label": "x"} as a column: the error says to write literal
    braces doubled; doubled, the prompt holds the JSON as written. A plain typo gets no such hint."""
    data = tmp_path / "d.csv"
    data.write_text("id,text\nr1,great\n", encoding="utf-8")
    out = str(tmp_path / "o.jsonl")
    proc, result = create(
        "--csv", str(data), "--template", 'Rate {text}. Answer like {"label": "x"}', "-o", out
    )
    assert proc.returncode == 4 and "write literal braces doubled, {{ and }}" in result["error"]["message"]
    proc, result = create("--csv", str(data), "--template", "Rate {txt}", "-o", out)
    assert proc.returncode == 4 and "doubled" not in result["error"]["message"], result
    proc, result = create(
        "--csv", str(data), "--template", 'Rate {text}. Answer like {{"label": "x"}}', "-o", out
    )
    assert proc.returncode == 0, result
    assert lines(out)[0]["body"]["messages"][0]["content"] == 'Rate great. Answer like {"label": "x"}'


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """id,text,text: the second 'text' silently replaced the first in every row (the prompt took
    "world", "hello" was lost). Now exit 4 naming the column and both positions; blank names may repeat."""
    data = tmp_path / "d.csv"
    data.write_text("id,text,text\nr1,hello,world\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    proc, result = create("--csv", str(data), "--id-field", "id", "--template", "{text}", "-o", str(out))
    assert (
        proc.returncode == 4 and "names column 'text' twice (columns 2 and 3)" in result["error"]["message"]
    )
    assert not out.exists()
    data.write_text("id,text,,\nr1,hello,,\n", encoding="utf-8")  # trailing commas, as spreadsheets write
    proc, result = create("--csv", str(data), "--id-field", "id", "--template", "{text}", "-o", str(out))
    assert proc.returncode == 0, result


def test_a_whole_response_format_given_as_json_schema_is_unwrapped(tmp_path):
    """A response_format copied from a request ({"type": "json_schema", "json_schema": {...}}) was
    refused as "not a valid JSON Schema: 'json_schema' is not valid ... (at /type)"; it holds the schema."""
    inner = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    schema = tmp_path / "rf.json"
    schema.write_text(json.dumps({"type": "json_schema", "json_schema": {"name": "labels", "schema": inner}}))
    out = tmp_path / "o.jsonl"
    proc, result = create("--prompt", "hi", "--json-schema", str(schema), "-o", str(out))
    assert proc.returncode == 0, result
    fmt = lines(out)[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "labels"
    assert fmt["json_schema"]["schema"] == inner
