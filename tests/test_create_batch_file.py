"""create_batch_file.py and the batch_file library: everything written validates, sharding, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from doubleword import build as bf
from doubleword import validation as bv
from doubleword.errors import InputError, UsageError

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


MODEL = "Qwen/Qwen3.5-9B"


def create(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "create_batch_file.py"), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=cwd,
    )


def read_lines(path: Path) -> list[dict]:
    # split on LF only: str.splitlines() would also split inside a prompt holding U+0085 or U+2028
    return [json.loads(raw) for raw in path.read_text(encoding="utf-8").split("\n") if raw]


def assert_valid(path: Path | str) -> dict:
    report = bv.validate_batch_file(str(path))
    assert report["valid"], report["errors"]
    assert report["warnings"] == []
    return report


# --------------------------------------------------------------------------- library


@pytest.mark.parametrize("endpoint", sorted(bf.ENDPOINTS))
def test_make_request_every_endpoint_validates(endpoint):
    options = {} if endpoint == "embeddings" else {"max_tokens": 32, "temperature": 0.3}
    request = bf.make_request("hello", model=MODEL, custom_id="a", endpoint=endpoint, **options)
    assert request["url"] == bf.ENDPOINTS[endpoint]
    assert bv.validate_line(request) == []


def test_make_request_options_map_to_each_endpoint():
    schema = {"title": "Verdict", "type": "object", "properties": {"ok": {"type": "boolean"}}}
    chat = bf.make_request(
        "q", model=MODEL, custom_id="a", system="s", max_tokens=5, stop="END", top_p=0.5, json_schema=schema
    )["body"]
    assert chat["messages"][0] == {"role": "system", "content": "s"}
    assert chat["stop"] == ["END"] and chat["max_tokens"] == 5 and chat["top_p"] == 0.5
    assert chat["response_format"]["json_schema"]["name"] == "Verdict"
    responses = bf.make_request(
        "q", model=MODEL, custom_id="a", endpoint="responses", system="s", max_tokens=5
    )
    assert responses["body"]["instructions"] == "s" and responses["body"]["max_output_tokens"] == 5
    messages = bf.make_request("q", model=MODEL, custom_id="a", endpoint="messages", system="s", max_tokens=5)
    assert messages["body"]["system"] == "s" and messages["body"]["messages"] == [
        {"role": "user", "content": "q"}
    ]
    extra = bf.make_request("q", model=MODEL, custom_id="a", extra={"seed": 1, "temperature": 0})["body"]
    assert extra["seed"] == 1 and extra["temperature"] == 0


def test_make_request_rejects_options_that_do_not_apply():
    with pytest.raises(UsageError):
        bf.make_request("q", model=MODEL, custom_id="a", endpoint="embeddings", temperature=0.5)
    with pytest.raises(UsageError):
        bf.make_request("q", model=MODEL, custom_id="a", endpoint="messages")  # no max_tokens
    with pytest.raises(UsageError):
        bf.make_request("q", model=MODEL, custom_id="a", endpoint="nope")


def test_write_batch_single_file(tmp_path):
    requests = (bf.make_request(f"p{i}", model=MODEL, custom_id=f"r{i}") for i in range(5))
    shards = bf.write_batch(requests, tmp_path / "out.jsonl")
    assert shards == [
        {"path": str(tmp_path / "out.jsonl"), "requests": 5, "bytes": (tmp_path / "out.jsonl").stat().st_size}
    ]
    assert_valid(tmp_path / "out.jsonl")
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp files left


def test_write_batch_shards_by_count(tmp_path):
    requests = [bf.make_request(f"p{i}", model=MODEL, custom_id=f"r{i}") for i in range(7)]
    shards = bf.write_batch(requests, tmp_path / "out.jsonl", max_requests=3)
    assert [Path(s["path"]).name for s in shards] == ["out-001.jsonl", "out-002.jsonl", "out-003.jsonl"]
    assert [s["requests"] for s in shards] == [3, 3, 1]
    ids = [line["custom_id"] for s in shards for line in read_lines(Path(s["path"]))]
    assert ids == [f"r{i}" for i in range(7)]
    for shard in shards:
        assert_valid(shard["path"])
    assert not (tmp_path / "out.jsonl").exists()


def test_write_batch_shards_by_bytes_never_splitting_a_line(tmp_path):
    requests = [bf.make_request("x" * 100, model=MODEL, custom_id=f"r{i}") for i in range(10)]
    one = len(json.dumps(requests[0], separators=(",", ":"))) + 1
    shards = bf.write_batch(requests, tmp_path / "out.jsonl", max_bytes=3 * one + 10)
    assert [s["requests"] for s in shards] == [3, 3, 3, 1]
    for shard in shards:
        assert Path(shard["path"]).stat().st_size == shard["bytes"] <= 3 * one + 10
        assert Path(shard["path"]).read_bytes().endswith(b"\n")
        assert_valid(shard["path"])


def test_write_batch_refuses_invalid_and_duplicate_requests_writing_nothing(tmp_path):
    good = bf.make_request("p", model=MODEL, custom_id="same")
    with pytest.raises(InputError, match="already used by request 1"):
        bf.write_batch([good, dict(good)], tmp_path / "out.jsonl")
    bad = bf.make_request("p", model=MODEL, custom_id="b", temperature=9)
    with pytest.raises(InputError, match="request 2 .*invalid_body"):
        bf.write_batch([good, bad], tmp_path / "out.jsonl")
    with pytest.raises(InputError, match="custom_id_too_long"):
        bf.write_batch([bf.make_request("p", model=MODEL, custom_id="x" * 65)], tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_shard_file_splits_an_existing_file(tmp_path):
    source = tmp_path / "big.jsonl"
    bf.write_batch([bf.make_request(f"p{i}", model=MODEL, custom_id=f"r{i}") for i in range(10)], source)
    shards = bf.shard_file(source, tmp_path / "parts" / "big.jsonl", max_requests=4)
    assert [s["requests"] for s in shards] == [4, 4, 2]
    assert b"".join(Path(s["path"]).read_bytes() for s in shards) == source.read_bytes()
    single = bf.shard_file(source, tmp_path / "one.jsonl")
    assert [Path(s["path"]).name for s in single] == ["one-001.jsonl"]


# --------------------------------------------------------------------------- round trips

prompts = st.text(
    st.characters(blacklist_categories=("Cs",)),  # lone surrogates cannot be written as UTF-8
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(prompts, min_size=1, max_size=8), st.sampled_from(sorted(bf.ENDPOINTS)))
@example(texts=[" ", "a", "\t"], endpoint="chat")  # blank prompts: valid, each warned about (empty_content)
def test_round_trip_arbitrary_prompts(tmp_path, texts, endpoint):
    options = {} if endpoint == "embeddings" else {"max_tokens": 16}
    requests = [
        bf.make_request(t, model=MODEL, custom_id=f"id-{i}", endpoint=endpoint, **options)
        for i, t in enumerate(texts)
    ]
    out = tmp_path / f"rt-{endpoint}.jsonl"
    shards = bf.write_batch(requests, out, max_requests=3)
    back = [line for s in shards for line in read_lines(Path(s["path"]))]
    assert back == requests
    blank = {f"id-{i}" for i, t in enumerate(texts) if not t.strip()}
    for shard in shards:
        report = bv.validate_batch_file(str(shard["path"]))
        assert report["valid"], report["errors"]
        warned = {w["custom_id"] for w in report["warnings"]}  # a blank prompt is warned about, no other
        assert {w["code"] for w in report["warnings"]} <= {"empty_content"} and warned <= blank, report
        if endpoint == "chat":
            mine = {line["custom_id"] for line in read_lines(Path(shard["path"]))}
            assert warned == blank & mine, report
        Path(shard["path"]).unlink()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(prompts.filter(lambda t: "\n" not in t and "\r" not in t and t.strip()), min_size=1, max_size=5)
)
def test_cli_round_trip_prompts_file(tmp_path, texts):
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "rt.jsonl"
    proc = create("--model", MODEL, "--prompts", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = read_lines(out)
    assert [line["body"]["messages"][-1]["content"] for line in lines] == [t.rstrip("\r\n") for t in texts]
    assert_valid(out)


# --------------------------------------------------------------------------- CLI


def test_cli_prompts_with_all_body_options(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"title": "answer", "type": "object"}))
    out = tmp_path / "b.jsonl"
    proc = create(
        "--model", MODEL, "--prompt", 'say "hi"\nplease', "--prompt", "two",
        "--system", "be brief", "--temperature", "0.5", "--max-tokens", "20", "--top-p", "0.9",
        "--stop", "END", "--stop", "STOP", "--json-schema", str(schema),
        "--set", "seed=42", "--set", 'metadata={"k":"v"}', "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["requests"] == 2 and result["shards"][0]["path"] == str(out)
    first = read_lines(out)[0]
    assert first["custom_id"] == "req-00001"
    body = first["body"]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": 'say "hi"\nplease'},
    ]
    assert body["stop"] == ["END", "STOP"] and body["seed"] == 42 and body["metadata"] == {"k": "v"}
    assert body["response_format"]["type"] == "json_schema"
    assert_valid(out)
    assert proc.stderr.decode().splitlines() == [
        "create_batch_file.py: wrote 2 requests to 1 file(s) (0 warnings); "
        f"next: python3 {SCRIPTS / 'submit.py'} {out} (exit 0)"
    ]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "objectx"}, "at /type"),
        ({"name": "verdict", "schema": {"type": "object", "required": "label"}}, "at /required"),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "at /properties/a/type"),
        ("deep", "nested too deeply"),
    ],
    ids=["bad-type", "wrapped", "nested-bad-type", "deep"],
)
def test_an_invalid_or_too_deep_json_schema_is_refused_naming_where(tmp_path, schema, expected):
    path = tmp_path / "schema.json"
    if schema == "deep":  # deeper than the JSON reader goes
        path.write_text('{"type":"object","properties":{"a":' * 3000 + '{"type":"string"}' + "}}" * 3000)
    else:
        path.write_text(json.dumps(schema))
    out = tmp_path / "b.jsonl"
    proc = create("--model", MODEL, "--prompt", "hi", "--json-schema", str(path), "-o", str(out))
    doc = json.loads(proc.stdout)
    assert proc.returncode == 4 and doc["error"]["type"] == "invalid_input", doc
    assert expected in doc["error"]["message"] and "Traceback" not in proc.stderr.decode(), doc
    assert not out.exists()


def test_cli_csv_template_and_id_field(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text('id,text,lang\nA1,"hello, ""you""",en\nA2,bonjour,fr\n', encoding="utf-8")
    out = tmp_path / "b.jsonl"
    proc = create(
        "--model",
        MODEL,
        "--csv",
        str(data),
        "--id-field",
        "id",
        "--template",
        "Translate {{{lang}}}: {text}",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    lines = read_lines(out)
    assert [line["custom_id"] for line in lines] == ["A1", "A2"]
    assert lines[0]["body"]["messages"][0]["content"] == 'Translate {en}: hello, "you"'
    assert_valid(out)


def test_cli_jsonl_field_and_embeddings(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"doc": "first", "n": 1}\n\n{"doc": "second", "n": 2}\n', encoding="utf-8")
    out = tmp_path / "e.jsonl"
    proc = create(
        "--model",
        "emb",
        "--endpoint",
        "embeddings",
        "--jsonl",
        str(data),
        "--field",
        "doc",
        "--id-prefix",
        "doc",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    lines = read_lines(out)
    assert [(line["custom_id"], line["body"]["input"], line["url"]) for line in lines] == [
        ("doc-00001", "first", "/v1/embeddings"),
        ("doc-00002", "second", "/v1/embeddings"),
    ]
    assert_valid(out)


def test_cli_prompts_from_stdin_and_sharding(tmp_path):
    out = tmp_path / "s.jsonl"
    stdin = "".join(f"prompt {i}\n" for i in range(5)).encode()
    proc = create("--model", MODEL, "--prompts", "-", "--max-requests", "2", "-o", str(out), stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    shards = json.loads(proc.stdout)["shards"]
    assert [s["requests"] for s in shards] == [2, 2, 1]
    assert [Path(s["path"]).name for s in shards] == ["s-001.jsonl", "s-002.jsonl", "s-003.jsonl"]
    for shard in shards:
        assert_valid(shard["path"])


def test_cli_shards_by_bytes(tmp_path):
    out = tmp_path / "s.jsonl"
    args = []
    for i in range(6):
        args += ["--prompt", f"{i}" * 500]
    proc = create("--model", MODEL, *args, "--max-bytes", "1500", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    shards = json.loads(proc.stdout)["shards"]
    assert len(shards) == 3 and all(s["bytes"] <= 1500 for s in shards)


@pytest.mark.parametrize(
    "setup, args, code, needle",
    [
        ("id,text\n1,a\n1,b\n", ["--id-field", "id", "--field", "text"], 4, "row 2"),
        ("id,text\n" + "x" * 65 + ",a\n", ["--id-field", "id", "--field", "text"], 4, "row 1"),
        ("id,text\n1,a\n2,b\n", ["--template", "{missing}"], 4, "row 1"),
        ("id,text\n1,a\n", ["--field", "nope"], 4, "row 1"),
        ("id,text\n1,a\n", ["--field", "text", "--set", "seed=notjson"], 2, "--set seed"),
        ("id,text\n1,a\n", ["--field", "text", "--temperature", "5"], 4, "invalid_body"),
        ("id,text\n1,a\n", ["--field", "text", "--template", "{text}"], 2, "exactly one"),
        ("id,text\n1,a\n", [], 2, "exactly one"),
    ],
)
def test_cli_errors_name_the_row_or_flag(tmp_path, setup, args, code, needle):
    data = tmp_path / "d.csv"
    data.write_text(setup, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = create("--model", MODEL, "--csv", str(data), *args, "-o", str(out))
    assert proc.returncode == code, proc.stderr
    assert b"Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False and needle in result["error"]["message"]
    assert needle.encode() in proc.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["d.csv"]


def test_cli_missing_input_and_missing_model(tmp_path):
    proc = create("--model", MODEL, "--prompts", str(tmp_path / "none.txt"), "-o", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 4 and b"cannot open" in proc.stderr
    proc = create("--prompt", "x", "-o", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and b"--model" in proc.stderr
    proc = create("--help")
    assert proc.returncode == 0 and b"exit codes" in proc.stdout and b"--template" in proc.stdout


def test_every_path_create_prints_is_absolute_and_submit_takes_them_from_another_folder(
    tmp_path, emulator, env, h
):
    """Relative paths in, absolute paths out (as submit and fetch print theirs): stdout's output, shards and
    rows files, the rows named in warnings and errors; submit run from elsewhere with the printed paths."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "d.csv").write_text("id,text\n1,one\n2,\n3,three\n", encoding="utf-8")
    args = ("--model", MODEL, "--csv", "data/d.csv", "--id-field", "id", "--field", "text")
    proc = create(*args, "--max-requests", "2", "-o", "out/batch.jsonl", cwd=work)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["output"] is None  # sharded: batch.jsonl itself was not written
    assert result["outputs"] == [str(work / "out" / "batch-001.jsonl"), str(work / "out" / "batch-002.jsonl")]
    assert [(s["path"], s["rows_path"]) for s in result["shards"]] == [
        (str(work / "out" / "batch-001.jsonl"), str(work / "out" / "batch-001.rows.jsonl")),
        (str(work / "out" / "batch-002.jsonl"), str(work / "out" / "batch-002.rows.jsonl")),
    ]
    assert all(Path(s["path"]).is_file() and Path(s["rows_path"]).is_file() for s in result["shards"])
    csv_path = str(work / "data" / "d.csv")
    assert result["empty_prompts"]["first"] == [f"row 2 (line 3) of {csv_path}"]
    assert f"of {csv_path}" in result["warnings"][0] and f"of {csv_path}".encode() in proc.stderr

    failed = create(*args[:-1], "nope", "-o", "bad.jsonl", cwd=work)  # an error names the file the same way
    assert failed.returncode == 4
    assert f"row 1 (line 2) of {csv_path}" in json.loads(failed.stdout)["error"]["message"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths = result["outputs"]
    submitted = h.run_script("submit", *paths, env=env, cwd=elsewhere)
    assert submitted.code == 0, submitted
    assert [b["shard"] for b in submitted.doc["batches"]] == paths
    assert submitted.doc["manifest"] == str(work / "out" / "batch-001.jsonl.manifest.json")


def test_an_option_embeddings_cannot_take_is_named_as_its_flag(tmp_path):
    """It said "sampling options and --json-schema do not apply to embeddings (['max_tokens'])"."""
    proc = create(
        "--model", "Qwen/Qwen3-Embedding-8B", "--endpoint", "embeddings", "--prompt", "x",
        "--max-tokens", "5", "--temperature", "0", "-o", str(tmp_path / "e.jsonl"),
    )  # fmt: skip
    assert proc.returncode == 2
    message = json.loads(proc.stdout)["error"]["message"]
    assert message.startswith("--temperature, --max-tokens do not apply to the embeddings endpoint"), message
    assert "[" not in message


def test_the_output_name_of_a_sharded_file_points_to_its_shards(tmp_path):
    """Sharded, -o batch.jsonl is written as batch-001.jsonl ...: stdout's `outputs` names them (its
    `output` named batch.jsonl, which was never written: now null), and they submit as they are; given
    the unwritten name, submit and validate say so and give the pattern to pass."""
    proc = create(
        "--model", MODEL, "--prompt", "a", "--prompt", "b", "--prompt", "c", "--max-requests", "2",
        "-o", str(tmp_path / "batch.jsonl"),
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and len(doc["shards"]) == 2
    assert doc["output"] is None and not (tmp_path / "batch.jsonl").exists()
    assert doc["outputs"] == [str(tmp_path / "batch-001.jsonl"), str(tmp_path / "batch-002.jsonl")]
    plan = subprocess.run(
        [sys.executable, str(SCRIPTS / "submit.py"), *doc["outputs"], "--dry-run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert plan.returncode == 0 and json.loads(plan.stdout)["requests"] == 3, plan.stdout
    one = json.loads(create("--model", MODEL, "--prompt", "a", "-o", str(tmp_path / "one.jsonl")).stdout)
    assert one["output"] == str(tmp_path / "one.jsonl") and one["outputs"] == [one["output"]]
    hint = f"written as 2 shard(s), batch-001.jsonl ... batch-002.jsonl; pass them all: {tmp_path}/batch-"
    submit = subprocess.run(
        [sys.executable, str(SCRIPTS / "submit.py"), str(tmp_path / "batch.jsonl"), "--dry-run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submit.returncode == 4 and hint in json.loads(submit.stdout)["error"]["message"], submit.stdout
    check = subprocess.run(
        [sys.executable, str(SCRIPTS / "validate_batch_file.py"), str(tmp_path / "batch.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 4
    assert hint in json.loads(check.stdout)["files"][0]["errors"][0]["message"]


@pytest.mark.parametrize(
    "source, name, out",
    [
        ("--jsonl", "d.jsonl", "d.jsonl"),
        ("--prompts", "p.txt", "p.txt"),
        ("--jsonl", "x.rows.jsonl", "x.jsonl"),
    ],
)
def test_an_output_over_the_input_is_refused_and_the_data_kept(tmp_path, source, name, out):
    """-o equal to the data file (or its rows file landing on it) replaced the user's data with the batch
    file, exit 0. Now exit 2 naming both; the data file is unchanged."""
    data = tmp_path / name
    data.write_text('{"text": "a"}\n' if source == "--jsonl" else "a prompt\n", encoding="utf-8")
    before = data.read_bytes()
    field = ["--field", "text"] if source == "--jsonl" else []
    proc = create("--model", MODEL, source, str(data), *field, "-o", str(tmp_path / out))
    assert proc.returncode == 2, proc.stdout
    assert f"would write over {source} {data}" in json.loads(proc.stdout)["error"]["message"]
    assert data.read_bytes() == before


def test_an_output_that_is_a_folder_is_a_usage_error(tmp_path):
    """-o DIR said "cannot use /tmp/.DIR.123.x.tmp -> DIR: Is a directory" (a temporary name it made)."""
    proc = create("--model", MODEL, "--prompt", "x", "-o", str(tmp_path))
    assert proc.returncode == 2, proc.stdout
    message = json.loads(proc.stdout)["error"]["message"]
    assert (
        message == f"-o {tmp_path} is a folder; give the batch file's name, e.g. {tmp_path / 'batch.jsonl'}"
    )


def test_a_set_field_that_replaces_a_named_option_is_a_warning(tmp_path):
    """--max-tokens 10 --set max_tokens=99 sent 99 without a word; now stdout's warnings say so."""
    out = tmp_path / "b.jsonl"
    proc = create(
        "--model", MODEL, "--prompt", "x", "--max-tokens", "10", "--set", "max_tokens=99", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stdout
    warnings = json.loads(proc.stdout)["warnings"]
    assert any(w.startswith("set_overrides: --set max_tokens replaces") and "(10)" in w for w in warnings)
    assert read_lines(out)[0]["body"]["max_tokens"] == 99
    proc = create("--model", MODEL, "--prompt", "x", "--set", "seed=1", "-o", str(out))
    assert "warnings" not in json.loads(proc.stdout)
