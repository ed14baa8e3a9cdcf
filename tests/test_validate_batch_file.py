"""validate_batch_file.py and the batch_validation library: every error code and warning, good files of
every endpoint, the CLI contract (exit codes, stdout JSON, stderr), and fast path vs schema agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doubleword import validation as bv

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "batch_files"


CHAT = "/v1/chat/completions"


def line(cid="q-1", *, method="POST", url=CHAT, body=None, **extra) -> str:
    if body is None:
        body = {"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": "hi"}]}
    obj = {"custom_id": cid, "method": method, "url": url, "body": body, **extra}
    return json.dumps(obj, ensure_ascii=False)


def chat(**fields) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return body


def drop(key: str) -> str:
    obj = json.loads(line("q-2"))
    del obj[key]
    return json.dumps(obj)


GOOD = line("q-0")

# (case id, file content, expected code, physical line, custom_id)
ERROR_CASES = [
    ("invalid_utf8", GOOD + "\n" + "\n", "invalid_utf8", 3, None),  # content patched below
    ("invalid_json", GOOD + '\n{"custom_id": "q-1",\n', "invalid_json", 2, None),
    (
        "nan_is_not_json",
        GOOD + "\n" + line("q-1", body=chat(temperature=1)).replace("1}", "NaN}"),
        "invalid_json",
        2,
        None,
    ),
    ("bom", "\ufeff" + GOOD + "\n", "invalid_json", 1, None),
    ("trailing_garbage", GOOD + "\n" + line("q-1") + " x\n", "invalid_json", 2, None),
    ("not_object", GOOD + "\n[1, 2]\n", "not_object", 2, None),
    ("not_object_string", GOOD + '\n"text"\n', "not_object", 2, None),
    ("missing_custom_id", GOOD + "\n" + drop("custom_id") + "\n", "missing_field", 2, None),
    ("missing_method", GOOD + "\n" + drop("method") + "\n", "missing_field", 2, "q-2"),
    ("missing_url", GOOD + "\n" + drop("url") + "\n", "missing_field", 2, "q-2"),
    ("missing_body", GOOD + "\n" + drop("body") + "\n", "missing_field", 2, "q-2"),
    ("custom_id_number", GOOD + "\n" + line(17) + "\n", "invalid_type", 2, None),
    ("method_not_string", GOOD + "\n" + line("q-1", method=1) + "\n", "invalid_type", 2, "q-1"),
    ("url_not_string", GOOD + "\n" + line("q-1", url=None) + "\n", "invalid_type", 2, "q-1"),
    ("body_not_object", GOOD + "\n" + line("q-1", body="hi") + "\n", "invalid_type", 2, "q-1"),
    ("custom_id_control", GOOD + "\n" + line("q\u00011") + "\n", "invalid_custom_id", 2, "q\u00011"),
    ("custom_id_del", GOOD + "\n" + line("q\u007f") + "\n", "invalid_custom_id", 2, "q\u007f"),
    ("custom_id_newline", GOOD + "\n" + line("q\n1") + "\n", "invalid_custom_id", 2, "q\n1"),
    ("custom_id_65_ascii", GOOD + "\n" + line("x" * 65) + "\n", "custom_id_too_long", 2, "x" * 65),
    ("custom_id_bytes", GOOD + "\n" + line("é" * 33) + "\n", "custom_id_too_long", 2, "é" * 33),
    ("duplicate", GOOD + "\n" + line("q-1") + "\n\n" + line("q-1") + "\n", "duplicate_custom_id", 4, "q-1"),
    ("method_get", GOOD + "\n" + line("q-1", method="GET") + "\n", "invalid_method", 2, "q-1"),
    ("url_unknown", GOOD + "\n" + line("q-1", url="/v1/images/generations") + "\n", "invalid_url", 2, "q-1"),
    (
        "url_full",
        GOOD + "\n" + line("q-1", url="https://api.doubleword.ai/v1/chat/completions") + "\n",
        "invalid_url",
        2,
        "q-1",
    ),
    ("url_query", GOOD + "\n" + line("q-1", url=CHAT + "?x=1") + "\n", "invalid_url", 2, "q-1"),
    (
        "url_mismatch",
        GOOD + "\n" + line("q-1", url="/v1/embeddings", body={"model": "e", "input": "x"}) + "\n",
        "url_mismatch",
        2,
        "q-1",
    ),
    (
        "missing_model",
        GOOD + "\n" + line("q-1", body={"messages": [{"role": "user", "content": "x"}]}) + "\n",
        "missing_model",
        2,
        "q-1",
    ),
    ("model_number", GOOD + "\n" + line("q-1", body=chat(model=5)) + "\n", "missing_model", 2, "q-1"),
    ("model_empty", GOOD + "\n" + line("q-1", body=chat(model="")) + "\n", "missing_model", 2, "q-1"),
    (
        "bad_role",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "robot", "content": "x"}])) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    ("no_messages", GOOD + "\n" + line("q-1", body={"model": "m"}) + "\n", "invalid_body", 2, "q-1"),
    ("empty_messages", GOOD + "\n" + line("q-1", body=chat(messages=[])) + "\n", "invalid_body", 2, "q-1"),
    (
        "content_number",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "user", "content": 5}])) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    (
        "user_content_null",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "user", "content": None}])) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    (
        "tool_without_id",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "tool", "content": "x"}])) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    (
        "bad_part",
        GOOD
        + "\n"
        + line("q-1", body=chat(messages=[{"role": "user", "content": [{"type": "txt", "text": "x"}]}]))
        + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    ("temperature_3", GOOD + "\n" + line("q-1", body=chat(temperature=3)) + "\n", "invalid_body", 2, "q-1"),
    (
        "temperature_string",
        GOOD + "\n" + line("q-1", body=chat(temperature="0.5")) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    ("top_p_2", GOOD + "\n" + line("q-1", body=chat(top_p=2)) + "\n", "invalid_body", 2, "q-1"),
    ("max_tokens_0", GOOD + "\n" + line("q-1", body=chat(max_tokens=0)) + "\n", "invalid_body", 2, "q-1"),
    (
        "max_tokens_bool",
        GOOD + "\n" + line("q-1", body=chat(max_tokens=True)) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    ("stop_5", GOOD + "\n" + line("q-1", body=chat(stop=list("abcde"))) + "\n", "invalid_body", 2, "q-1"),
    ("penalty", GOOD + "\n" + line("q-1", body=chat(presence_penalty=-3)) + "\n", "invalid_body", 2, "q-1"),
    (
        "json_schema_no_name",
        GOOD
        + "\n"
        + line("q-1", body=chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}))
        + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    (
        "response_format_type",
        GOOD + "\n" + line("q-1", body=chat(response_format={"type": "xml"})) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
    (
        "misspelt_required",
        GOOD + "\n" + line("q-1", body={"model": "m", "mesages": []}) + "\n",
        "invalid_body",
        2,
        "q-1",
    ),
]
ERROR_CASES[0] = (
    "invalid_utf8",
    (GOOD + "\n" + line("q-1") + "\n").encode() + b'{"custom_id":"q-\xff"}\n',
    "invalid_utf8",
    3,
    None,
)

ENDPOINT_ERRORS = [
    ("/v1/embeddings", {"model": "e", "input": []}),
    ("/v1/embeddings", {"model": "e"}),
    ("/v1/embeddings", {"model": "e", "input": "x", "dimensions": 0}),
    ("/v1/completions", {"model": "c"}),
    ("/v1/completions", {"model": "c", "prompt": "x", "temperature": -1}),
    ("/v1/responses", {"model": "r"}),
    ("/v1/responses", {"model": "r", "input": [{"role": "robot", "content": "x"}]}),
    ("/v1/messages", {"model": "a", "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/messages", {"model": "a", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
]

WARNING_CASES = [
    ("blank_line", GOOD + "\n   \n" + line("q-1") + "\n", "blank_line", 2, None),
    ("stream", GOOD + "\n" + line("q-1", body=chat(stream=True)) + "\n", "stream_enabled", 2, "q-1"),
    ("priority", GOOD + "\n" + line("q-1", body=chat(priority=1)) + "\n", "priority_ignored", 2, "q-1"),
    ("max_token", GOOD + "\n" + line("q-1", body=chat(max_token=5)) + "\n", "unknown_field", 2, "q-1"),
    ("temprature", GOOD + "\n" + line("q-1", body=chat(temprature=0.5)) + "\n", "unknown_field", 2, "q-1"),
    ("top-p", GOOD + "\n" + line("q-1", body=chat(**{"top-p": 0.5})) + "\n", "unknown_field", 2, "q-1"),
    ("maxTokens", GOOD + "\n" + line("q-1", body=chat(maxTokens=5)) + "\n", "unknown_field", 2, "q-1"),
    ("method_case", GOOD + "\n" + line("q-1", method="post") + "\n", "method_case", 2, "q-1"),
    ("empty_custom_id", GOOD + "\n" + line("") + "\n", "empty_custom_id", 2, ""),
    (
        "empty_content",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "user", "content": ""}])) + "\n",
        "empty_content",
        2,
        "q-1",
    ),
    (
        "blank_content",
        GOOD + "\n" + line("q-1", body=chat(messages=[{"role": "user", "content": " \n"}])) + "\n",
        "empty_content",
        2,
        "q-1",
    ),
]


def write(tmp_path: Path, content: str | bytes, name: str = "batch.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "validate_batch_file.py"), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def find(items: list[dict], code: str) -> dict:
    matches = [item for item in items if item["code"] == code]
    assert matches, f"no {code} in {items}"
    return matches[0]


@pytest.mark.parametrize("case, content, code, lineno, cid", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_each_error_is_reported_with_line_code_and_custom_id(tmp_path, case, content, code, lineno, cid):
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    assert report["valid"] is False
    error = find(report["errors"], code)
    assert error["line"] == lineno
    assert error["custom_id"] == cid
    assert error["message"]
    assert lineno == 1 or all(e["line"] != 1 for e in report["errors"]), "the good first line is not blamed"


@pytest.mark.parametrize("url, body", ENDPOINT_ERRORS)
def test_body_errors_for_other_endpoints(tmp_path, url, body):
    content = line("q-1", url=url, body=body) + "\n"
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    error = find(report["errors"], "invalid_body")
    assert (error["line"], error["custom_id"]) == (1, "q-1")
    assert url in error["message"]


@pytest.mark.parametrize("case, content, code, lineno, cid", WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_each_warning_keeps_the_file_valid(tmp_path, case, content, code, lineno, cid):
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    assert report["valid"] is True, report["errors"]
    warning = find(report["warnings"], code)
    assert (warning["line"], warning["custom_id"]) == (lineno, cid)


def test_near_miss_names_the_intended_field(tmp_path):
    report = bv.validate_batch_file(str(write(tmp_path, line("q-1", body=chat(max_token=5)) + "\n")))
    assert "'max_tokens'" in report["warnings"][0]["message"]


def test_unknown_fields_that_are_not_near_misses_pass_silently(tmp_path):
    body = chat(top_k=20, repetition_penalty=1.1, my_extension={"a": 1})
    report = bv.validate_batch_file(str(write(tmp_path, line("q-1", body=body) + "\n")))
    assert report["valid"] and report["warnings"] == []


# --------------------------------------------------------------------------- reasoning rules (server 4.5)

RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"


def responses(**fields) -> dict:
    return {"model": "m", "input": "hi", **fields}


def completions(**fields) -> dict:
    return {"model": "m", "prompt": "hi", **fields}


@pytest.mark.parametrize(
    "url, body, field, fix",
    [
        (CHAT, chat(chat_template_kwargs={"enable_thinking": False}), "chat_template_kwargs.enable_thinking", "'reasoning_effort'"),
        (CHAT, chat(chat_template_kwargs={"thinking": True}), "chat_template_kwargs.thinking", "'reasoning_effort'"),
        (CHAT, chat(chat_template_kwargs={}), "chat_template_kwargs", "'reasoning_effort'"),
        (CHAT, chat(thinking={"type": "enabled"}), "thinking", "'reasoning_effort'"),
        (CHAT, chat(thinking_token_budget=100), "thinking_token_budget", "'reasoning_effort'"),
        (CHAT, chat(reasoning={"effort": "low"}), "reasoning", "'reasoning_effort'"),
        (RESPONSES, responses(reasoning_effort="low"), "reasoning_effort", "'reasoning.effort'"),
        (RESPONSES, responses(chat_template_kwargs={"enable_thinking": True}), "chat_template_kwargs.enable_thinking", "'reasoning.effort'"),
        (RESPONSES, responses(thinking_token_budget=5), "thinking_token_budget", "'reasoning.effort'"),
        (COMPLETIONS, completions(reasoning_effort="none"), "reasoning_effort", "/v1/chat/completions"),
        (COMPLETIONS, completions(reasoning={"effort": "low"}), "reasoning", "/v1/responses"),
        (COMPLETIONS, completions(thinking=True), "thinking", "/v1/chat/completions"),
        (COMPLETIONS, completions(thinking_token_budget=1), "thinking_token_budget", "/v1/chat/completions"),
        (COMPLETIONS, completions(chat_template_kwargs={}), "chat_template_kwargs", "/v1/chat/completions"),
    ],
)  # fmt: skip
def test_refused_reasoning_fields_give_the_server_message_and_the_fix(tmp_path, url, body, field, fix):
    report = bv.validate_batch_file(str(write(tmp_path, line("q-1", url=url, body=body) + "\n")))
    assert report["valid"] is False
    codes = [e["code"] for e in report["errors"]]
    assert codes == ["unsupported_parameter"], report["errors"]
    message = report["errors"][0]["message"]
    assert f"'{field}'" in message and fix in message


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", "max"])
def test_every_server_effort_is_accepted_on_chat_and_responses(tmp_path, effort):
    content = line("c", body=chat(reasoning_effort=effort)) + "\n"
    assert bv.validate_batch_file(str(write(tmp_path, content)))["valid"]
    content = line("r", url=RESPONSES, body=responses(reasoning={"effort": effort})) + "\n"
    assert bv.validate_batch_file(str(write(tmp_path, content)))["valid"]


@pytest.mark.parametrize(
    "url, body, needle",
    [
        (CHAT, chat(reasoning_effort="extreme"), "none, minimal, low, medium, high, xhigh, max"),
        (CHAT, chat(reasoning_effort=3), "Expected a string"),
        (RESPONSES, responses(reasoning={"effort": "turbo"}), "is not a reasoning effort"),
        (RESPONSES, responses(reasoning="high"), "Expected an object"),
    ],
)
def test_unknown_or_mistyped_effort_is_refused(tmp_path, url, body, needle):
    report = bv.validate_batch_file(str(write(tmp_path, line("q-1", url=url, body=body) + "\n")))
    assert [e["code"] for e in report["errors"]] == ["invalid_reasoning_effort"], report["errors"]
    assert needle in report["errors"][0]["message"]


def test_cli_refuses_chat_template_kwargs_pointing_to_reasoning_effort(tmp_path):
    body = chat(chat_template_kwargs={"enable_thinking": False})
    proc = run_cli(str(write(tmp_path, GOOD + "\n" + line("q-1", body=body) + "\n")))
    assert proc.returncode == 4
    error = json.loads(proc.stdout)["files"][0]["errors"][0]
    assert (error["line"], error["code"]) == (2, "unsupported_parameter")
    assert "use 'reasoning_effort'" in error["message"]


# --------------------------------------------------------------------------- image parts

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def image_message(url: str, *, text: str = "Read this") -> list:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


# An image counts 4 characters per estimated token (the estimate is characters / 4): the 1x1 PNG the
# minimum of 64 tokens, a URL (not fetched) or an SVG (no pixel size) the flat 256.
@pytest.mark.parametrize(
    ("url", "tokens"),
    [(f"data:image/png;base64,{PNG_B64}", 64), ("https://example.com/a.jpg", 256), ("http://example.com/b.png", 256), ("data:image/svg+xml;base64,PHN2Zy8+", 256)],
)  # fmt: skip
def test_image_parts_pass_on_the_fast_path(tmp_path, url, tokens):
    body = chat(messages=image_message(url))
    assert bv.endpoint_checker(CHAT).fast_check(body) == len("Read this") + 4 * tokens
    assert bv.validate_batch_file(str(write(tmp_path, line("q-1", body=body) + "\n")))["valid"]


@pytest.mark.parametrize(
    "url, needle",
    [
        (f"data:image/png;base64,{PNG_B64[:-3]}", "base64"),
        ("data:image/png;base64,not base64!", "base64"),
        ("data:text/plain;base64,aGk=", "image MIME"),
        ("data:image/png," + PNG_B64, "image MIME"),
        ("ftp://example.com/a.png", "http(s)"),
        ("data:image/png;base64,", "no image data"),
    ],
)
def test_malformed_image_parts_are_refused(tmp_path, url, needle):
    body = chat(messages=image_message(url))
    assert bv.endpoint_checker(CHAT).fast_check(body) < 0
    report = bv.validate_batch_file(str(write(tmp_path, GOOD + "\n" + line("q-1", body=body) + "\n")))
    assert report["valid"] is False
    assert [e["code"] for e in report["errors"]] == ["invalid_image"]  # once, not also as invalid_body
    error = report["errors"][0]
    assert (error["line"], error["custom_id"]) == (2, "q-1") and needle in error["message"]
    assert "messages[0].content[1]" in error["message"]


def test_responses_image_parts_are_checked_too(tmp_path):
    def body(url: str) -> dict:
        part = {"type": "input_image", "image_url": url}
        return responses(input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}, part]}])

    good = line("a", url=RESPONSES, body=body(f"data:image/png;base64,{PNG_B64}"))
    bad = line("b", url=RESPONSES, body=body("data:image/png;base64,@@@@"))
    report = bv.validate_batch_file(str(write(tmp_path, good + "\n" + bad + "\n")))
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(2, "invalid_image")]


def test_empty_file_and_only_blank_lines(tmp_path):
    for content in ("", "\n\n  \n"):
        report = bv.validate_batch_file(str(write(tmp_path, content)))
        assert report["valid"] is False
        assert find(report["errors"], "empty_file")["line"] == 0


def test_too_many_requests_reports_the_first_excess_line(tmp_path):
    content = "\n".join(line(f"q-{i}") for i in range(5)) + "\n"
    report = bv.validate_batch_file(str(write(tmp_path, content)), max_requests=3)
    error = find(report["errors"], "too_many_requests")
    assert error["line"] == 4
    assert report["stats"]["requests"] == 5


def test_file_too_large(tmp_path):
    content = "\n".join(line(f"q-{i}") for i in range(5)) + "\n"
    one = len(line("q-0")) + 1
    report = bv.validate_batch_file(str(write(tmp_path, content)), max_bytes=2 * one + 5)
    assert find(report["errors"], "file_too_large")["line"] == 3


def test_body_too_large(tmp_path):
    big = line("q-1", body=chat(messages=[{"role": "user", "content": "x" * (bv.MAX_BODY_BYTES + 10)}]))
    report = bv.validate_batch_file(str(write(tmp_path, GOOD + "\n" + big + "\n")))
    assert find(report["errors"], "body_too_large")["line"] == 2


def test_lone_surrogate_escape_is_invalid_json(tmp_path):
    content = GOOD + "\n" + line("q-1").replace('"hi"', '"a\\ud800b"') + "\n"
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    assert find(report["errors"], "invalid_json")["line"] == 2
    # a proper pair is fine
    ok = GOOD + "\n" + line("q-1").replace('"hi"', '"\\ud83d\\ude00"') + "\n"
    assert bv.validate_batch_file(str(write(tmp_path, ok)))["valid"]


def test_physical_line_numbers_count_blank_lines_and_crlf(tmp_path):
    content = GOOD + "\r\n\r\n\r\n" + line("q-0") + "\r\n"
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    assert find(report["errors"], "duplicate_custom_id")["line"] == 4
    assert report["stats"]["blank_lines"] == 2


def test_all_problems_reported_and_output_bounded(tmp_path):
    content = "\n".join(line("dup") for _ in range(30)) + "\n"
    report = bv.validate_batch_file(str(write(tmp_path, content)), max_errors=5)
    assert report["errors_total"] == 29
    assert len(report["errors"]) == 5
    assert report["errors_omitted"] == 24
    assert "first used on line 1" in report["errors"][0]["message"]


def test_several_problems_on_one_line_are_all_reported(tmp_path):
    content = line("x" * 70, method="GET", body=chat(temperature=5)) + "\n"
    codes = {e["code"] for e in bv.validate_batch_file(str(write(tmp_path, content)))["errors"]}
    assert {"custom_id_too_long", "invalid_method", "invalid_body"} <= codes


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("good_*.jsonl")), ids=lambda p: p.name)
def test_good_fixture_files_pass(path):
    report = bv.validate_batch_file(str(path))
    assert report["valid"], report["errors"]
    assert report["stats"]["requests"] >= 2
    assert report["stats"]["endpoint"] in bv.SCHEMA_FILES


def test_stats(tmp_path):
    content = "\n".join(
        [line("a", body=chat(model="A")), line("b", body=chat(model="B")), line("c", body=chat(model="A"))]
    )
    report = bv.validate_batch_file(str(write(tmp_path, content)))
    stats = report["stats"]
    assert stats["models"] == {"A": 2, "B": 1}
    assert stats["requests"] == 3
    assert stats["bytes"] == len(content.encode())
    assert stats["endpoint"] == CHAT
    assert stats["estimated_input_tokens"] == 2  # 6 characters of prompt text / 4, rounded up


def test_validate_line_api():
    assert bv.validate_line(json.loads(GOOD)) == []
    problems = bv.validate_line({"custom_id": "a", "method": "POST", "url": CHAT, "body": chat(top_p=7)})
    assert [p["code"] for p in problems] == ["invalid_body"]
    assert problems[0]["severity"] == "error"


# --------------------------------------------------------------------------- CLI


def test_cli_valid_file_exit_0_and_json(tmp_path):
    path = write(tmp_path, GOOD + "\n")
    proc = run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["files"][0]["valid"] is True
    assert b"valid" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("case, content, code, lineno, cid", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_cli_invalid_file_exit_4(tmp_path, case, content, code, lineno, cid):
    proc = run_cli(str(write(tmp_path, content)))
    assert proc.returncode == 4
    assert b"Traceback" not in proc.stderr
    report = json.loads(proc.stdout)["files"][0]
    assert any(e["code"] == code and e["line"] == lineno for e in report["errors"])
    assert f"line {lineno}".encode() in proc.stderr or lineno == 0
    assert code.encode() in proc.stderr


def test_cli_stdin_and_missing_file(tmp_path):
    proc = run_cli("-", str(tmp_path / "nope.jsonl"), stdin=(GOOD + "\n").encode())
    assert proc.returncode == 4
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    assert out["files"][0]["valid"] is True
    assert out["files"][1]["errors"][0]["code"] == "file_not_found"
    assert b"does not exist" in proc.stderr


def test_cli_usage_errors():
    proc = run_cli()
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["ok"] is False
    proc = run_cli("--help")
    assert proc.returncode == 0 and b"exit codes" in proc.stdout


def test_cli_max_errors_and_quiet(tmp_path):
    path = write(tmp_path, "\n".join(line("dup") for _ in range(10)) + "\n")
    proc = run_cli(str(path), "--max-errors", "2", "--quiet")
    assert proc.returncode == 4 and proc.stderr == b""
    report = json.loads(proc.stdout)["files"][0]
    assert len(report["errors"]) == 2 and report["errors_omitted"] == 7


def test_cli_surrogate_custom_id_does_not_crash(tmp_path):
    content = (
        GOOD
        + '\n{"custom_id":"\\udc80\\u0001","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}\n'
    )
    proc = run_cli(str(write(tmp_path, content)))
    assert proc.returncode == 4 and b"Traceback" not in proc.stderr
    json.loads(proc.stdout)


# --------------------------------------------------------------------------- fast path == schema

image_urls = st.one_of(
    st.sampled_from(
        [
            f"data:image/png;base64,{PNG_B64}",
            f"data:image/png;base64,{PNG_B64[:-2]}",
            "data:image/png;base64,",
            "data:text/plain;base64,aGk=",
            "data:image/png,abc",
            "https://example.com/a.png",
            "ftp://example.com/a.png",
            "",
        ]
    ),
    st.text(max_size=8).map(lambda t: "data:image/jpeg;base64," + t),
    st.integers(),
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot", None])
contents = st.one_of(
    st.text(max_size=5),
    st.none(),
    st.integers(),
    st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=3)})
    ),
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("text"), "text": st.one_of(st.text(max_size=3), st.none())}
            ),
            st.fixed_dictionaries(
                {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": image_urls})},
                optional={"detail": st.sampled_from(["low", "x"])},
            ),
            st.fixed_dictionaries(
                {"type": st.just("image_url"), "image_url": st.one_of(image_urls, st.none())}
            ),
        ),
        max_size=3,
    ),
)
messages = st.lists(
    st.fixed_dictionaries({"role": roles, "content": contents}, optional={"name": st.text(max_size=3)}),
    max_size=3,
)
numbers = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-3, 3), st.text(max_size=2))
bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.text(max_size=3), st.integers())},
    optional={
        "messages": messages,
        "temperature": numbers,
        "top_p": numbers,
        "max_tokens": numbers,
        "n": numbers,
        "presence_penalty": numbers,
        "stop": st.one_of(st.text(max_size=2), st.lists(st.text(max_size=2), max_size=6), st.integers()),
        "logprobs": numbers,
        "stream": numbers,
        "seed": numbers,
        "reasoning_effort": st.sampled_from(["low", "high", "extreme", None]),
    },
)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_chat_fast_path_never_accepts_what_the_schema_rejects(body):
    checker = bv.endpoint_checker(CHAT)
    if checker.fast_check(body) >= 0:
        assert checker.validator.is_valid(body), body
        # nor what the line checks reject (an image part's base64 is beyond the schema)
        assert bv.validate_line({"custom_id": "a", "method": "POST", "url": CHAT, "body": body}) == [], body


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(bv.SCHEMA_FILES)),
    st.one_of(st.text(max_size=3), st.lists(st.one_of(st.text(max_size=2), st.integers(-1, 3)), max_size=3)),
    numbers,
)
def test_other_fast_paths_agree_with_schema(url, value, number):
    checker = bv.endpoint_checker(url)
    for body in (
        {"model": "m", "input": value, "dimensions": number},
        {"model": "m", "prompt": value, "temperature": number},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": value}], "top_p": number},
    ):
        if checker.fast_check(body) >= 0:
            assert checker.validator.is_valid(body), (url, body)


responses_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("input_text"), "text": st.one_of(st.text(max_size=3), st.none())}
        ),
        st.fixed_dictionaries(
            {"type": st.just("input_image"), "image_url": image_urls},
            optional={"detail": st.sampled_from(["low", "x"])},
        ),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["input_file", "output_text"]), "text": st.text(max_size=2)}
        ),
    ),
    max_size=3,
)
responses_inputs = st.one_of(
    st.text(max_size=4),
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "robot"]),
                "content": st.one_of(st.text(max_size=3), responses_parts),
            },
            optional={"type": st.just("message")},
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(responses_inputs)
def test_responses_fast_path_agrees_with_schema_and_line_checks(value):
    body = {"model": "m", "input": value}
    if bv.endpoint_checker(RESPONSES).fast_check(body) >= 0:
        assert bv.endpoint_checker(RESPONSES).validator.is_valid(body), body
        assert bv.validate_line({"custom_id": "a", "method": "POST", "url": RESPONSES, "body": body}) == [], (
            body
        )


def test_responses_image_lines_take_the_fast_path():
    part = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"}
    body = responses(input=[{"role": "user", "content": [{"type": "input_text", "text": "abc"}, part]}])
    assert bv.endpoint_checker(RESPONSES).fast_check(body) == 3 + 4 * 64  # text + the image's tokens


@pytest.mark.parametrize(
    "payload",
    [PNG_B64, PNG_B64[:-1], PNG_B64[:-2], "", "aGk=", "aGk", "a=Gk", "aG==k===", "aGk=\n", "aG k=", "////"],
)
def test_the_portable_base64_check_agrees_with_the_c_one(payload):
    from doubleword.validation import fast

    outcomes = []
    for check in (fast.check_base64, fast.check_base64_portable):
        try:
            check(payload)
            outcomes.append(True)
        except ValueError:  # binascii.Error is a ValueError
            outcomes.append(False)
    assert outcomes[0] == outcomes[1], payload


anthropic_blocks = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=3), st.none())}),
        st.fixed_dictionaries(
            {
                "type": st.just("image"),
                "source": st.one_of(
                    st.fixed_dictionaries(
                        {
                            "type": st.just("base64"),
                            "media_type": st.sampled_from(["image/png", "text/plain", "png"]),
                            "data": st.sampled_from([PNG_B64, PNG_B64[:-1], "", "@@@@"]),
                        }
                    ),
                    st.fixed_dictionaries({"type": st.just("url"), "url": image_urls}),
                    st.fixed_dictionaries({"type": st.sampled_from(["file", "base64"])}),
                ),
            }
        ),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(anthropic_blocks, st.sampled_from(["user", "assistant"]))
def test_messages_fast_path_agrees_with_schema_and_line_checks(blocks, role):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": role, "content": blocks}]}
    if bv.endpoint_checker("/v1/messages").fast_check(body) >= 0:
        assert bv.endpoint_checker("/v1/messages").validator.is_valid(body), body
        assert (
            bv.validate_line({"custom_id": "a", "method": "POST", "url": "/v1/messages", "body": body}) == []
        )


def test_messages_image_blocks_take_the_fast_path():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}, image]}],
    }
    assert bv.endpoint_checker("/v1/messages").fast_check(body) == 2 + 4 * 64  # text + the image's tokens


def test_an_empty_prompt_in_a_made_file_is_a_warning_with_its_line(tmp_path):
    """A CSV row with a blank cell gives a request with no prompt: create says so, and validate (SPEC 4:
    a warning for empty message content) names the line, exit 0; a filled one is not named."""
    data = write(tmp_path, "id,text\nr1,hello\nr2,\nr3,bye\n", "data.csv")
    out = tmp_path / "b.jsonl"
    made = subprocess.run(
        [sys.executable, str(SCRIPTS / "create_batch_file.py"), "--model", "Qwen/Qwen3.5-9B", "--csv", str(data),
         "--id-field", "id", "--field", "text", "-o", str(out)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    proc = run_cli(str(out))
    assert proc.returncode == 0, proc.stdout
    warnings = json.loads(proc.stdout)["files"][0]["warnings"]
    assert [(w["line"], w["custom_id"], w["code"]) for w in warnings] == [(2, "r2", "empty_content")]


@pytest.mark.parametrize(
    "first, says",
    [
        ({"id": "batch_req_1", "custom_id": "q-1", "response": {"status_code": 200, "body": {}}, "error": None},
         "an output or error file"),
        ({"custom_id": "q-1", "status": "completed", "content": "hi", "attempts": 1, "error": None},
         "a results file (results.jsonl"),
    ],
)  # fmt: skip
def test_an_answers_file_given_as_a_batch_file_is_named_once(tmp_path, first, says):
    """output.jsonl or results.jsonl validated (or submitted) by mistake gave three 'missing_field'
    errors per line; now one file-level error saying what the file is and what to pass."""
    path = write(tmp_path, "".join(json.dumps(first) + "\n" for _ in range(5)), "output.jsonl")
    proc = run_cli(str(path))
    assert proc.returncode == 4
    errors = json.loads(proc.stdout)["files"][0]["errors"]
    assert [(e["line"], e["code"]) for e in errors] == [(0, "answers_file")]
    assert says in errors[0]["message"] and "submit.py --resubmit" in errors[0]["message"]


@pytest.mark.parametrize(
    "name, text",
    [
        ("reviews.csv", 'id,review\nr1,"Great, thanks"\nr2,Broke at once\n'),
        ("questions.txt", "\nWhat is the capital of France?\nWhy is the sky blue?\n"),
    ],
)
def test_a_csv_or_prompts_file_given_as_a_batch_file_points_to_create_batch_file(tmp_path, h, name, text):
    """The audit's mistake: submit.py on the user's CSV (or prompts file) gave one invalid_json error per
    line ("one JSON object per line"); now one file-level error naming the command that builds the
    batch file, and submit sends nothing."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    proc = run_cli(str(path))
    assert proc.returncode == 4
    errors = json.loads(proc.stdout)["files"][0]["errors"]
    assert [(e["line"], e["code"]) for e in errors] == [(0, "not_jsonl")]
    assert "create_batch_file.py" in errors[0]["message"] and "--csv FILE" in errors[0]["message"]
    code, doc, err = h.run_script("submit", str(path), env=h.script_env("http://127.0.0.1:9/v1"))
    assert code == 4 and "not_jsonl" in doc["error"]["message"] and "create_batch_file.py" in err
