"""The shared core: error boundary, configuration checks, atomic files, redaction and the HTTP client.

The HTTP client is exercised against a scripted local server on a free loopback port.
"""

from __future__ import annotations

import email.utils
import gc
import html
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import quote, quote_plus

import pytest

from doubleword import cli, config, errors, files
from doubleword import client as http_client

# --------------------------------------------------------------------------- error boundary


def _run(main, argv=None):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.run(main, argv or [])
    return code, json.loads(out.getvalue()), err.getvalue()


def test_success_prints_one_json_document():
    cli.summary("did 3 things")
    code, doc, err = _run(lambda argv: ({"ok": True, "n": 3}, 0))
    assert (code, doc) == (0, {"ok": True, "n": 3})
    assert err.endswith(": success (exit 0)\n") and err.count("\n") == 1  # run() resets the summary
    code, doc, err = _run(lambda argv: (cli.summary("did   3\nthings") or {"ok": True}, 0))
    assert err.endswith(": did 3 things (exit 0)\n") and err.count("\n") == 1


def test_a_command_about_to_exit_freezes_its_objects_but_a_caller_in_process_keeps_collecting(monkeypatch):
    # the interpreter's collections at exit skip frozen objects (a fetch exits ~45 ms sooner); a test or
    # another program calling run() with its own argv goes on, so its garbage must stay collectable
    gc.unfreeze()
    _run(lambda argv: ({"ok": True}, 0), ["--quiet"])
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr("sys.argv", ["fetch_results.py", "--quiet"])
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert cli.run(lambda argv: ({"ok": True, "argv": argv}, 0)) == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    "exc, expected",
    [
        (errors.UsageError("bad flag"), 2),
        (errors.ConfigError("no key"), 3),
        (errors.InputError("bad line"), 4),
        (errors.ServiceError("down"), 5),
    ],
)
def test_expected_errors_map_to_documented_codes(exc, expected):
    def main(argv):
        raise exc

    code, doc, err = _run(main)
    assert code == expected
    assert doc["ok"] is False and doc["error"]["message"] == exc.message
    assert err.startswith("error: ") and "Traceback" not in err


def test_unexpected_error_has_traceback_only_with_debug():
    def main(argv):
        raise ZeroDivisionError("boom")

    code, doc, err = _run(main)
    assert code == 1 and "Traceback" not in err and "--debug" in err
    assert doc["error"]["type"] == "internal_error"
    code, _, err = _run(main, ["--debug"])
    assert code == 1 and "Traceback" in err


def test_ctrl_c_exits_130_with_json():
    def main(argv):
        raise KeyboardInterrupt

    code, doc, _ = _run(main)
    assert code == 130 and doc["error"]["type"] == "interrupted"


def test_argparse_errors_are_usage_errors_with_json():
    def main(argv):
        parser = cli.make_parser("x", "test", "  x --n 1")
        parser.add_argument("--n", type=int, required=True)
        parser.parse_args(argv)
        return {"ok": True}, 0

    code, doc, err = _run(main, ["--n", "notanumber"])
    assert code == 2 and "invalid int value" in doc["error"]["message"]


def test_help_lists_examples_and_exit_codes():
    parser = cli.make_parser("x", "Does a thing.", "  x --flag")
    text = parser.format_help()
    assert "examples:" in text and "x --flag" in text
    for code in range(8):
        assert f"\n  {code}  " in text


# --------------------------------------------------------------------------- configuration and secrets


def _args(**kw):
    return SimpleNamespace(base_url=kw.get("base_url"), allow_insecure=kw.get("allow_insecure", False))


def test_plain_http_to_remote_host_is_refused(monkeypatch):
    monkeypatch.delenv(config.BASE_URL_ENV, raising=False)
    with pytest.raises(errors.ConfigError, match="--allow-insecure"):
        config.base_url_from(_args(base_url="http://api.example.com/v1"))
    assert config.base_url_from(_args(base_url="http://api.example.com/v1", allow_insecure=True))
    assert config.base_url_from(_args(base_url="http://127.0.0.1:9/v1/")) == "http://127.0.0.1:9/v1"
    assert config.base_url_from(_args(base_url="http://localhost:9/v1"))


def test_base_url_precedence(monkeypatch):
    monkeypatch.setenv(config.BASE_URL_ENV, "https://env.example/v1")
    assert config.base_url_from(_args()) == "https://env.example/v1"
    assert config.base_url_from(_args(base_url="https://flag.example/v1")) == "https://flag.example/v1"
    monkeypatch.delenv(config.BASE_URL_ENV)
    assert config.base_url_from(_args()) == config.DEFAULT_BASE_URL


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv(config.API_KEY_ENV, raising=False)
    with pytest.raises(errors.ConfigError, match="DOUBLEWORD_API_KEY"):
        config.api_key_from_env()


def test_registered_key_is_redacted_everywhere(monkeypatch, tmp_path):
    canary = "sk-canary-core-0123456789"
    monkeypatch.setenv(config.API_KEY_ENV, canary)
    config.api_key_from_env()

    def main(argv):
        raise errors.ServiceError(f"server echoed {canary}")

    code, doc, err = _run(main)
    assert canary not in json.dumps(doc) and canary not in err and "<hidden>" in err
    files.atomic_write_json(tmp_path / "m.json", {"note": canary})
    assert canary not in (tmp_path / "m.json").read_text()


# --------------------------------------------------------------------------- atomic files


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path):
    target = tmp_path / "out.json"
    files.atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), files.atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_read_json_file_reports_damage(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(errors.InputError, match="not readable JSON"):
        files.read_json_file(bad, "manifest")
    with pytest.raises(errors.InputError, match="does not exist"):
        files.read_json_file(tmp_path / "nope.json", "manifest")


# --------------------------------------------------------------------------- HTTP client


class Script:
    """Replies the scripted server gives, in order; records what it received."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.received: list[dict] = []


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.received.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )
            status, headers, payload = script.replies.pop(0) if script.replies else (200, {}, b"{}")
            if status == 0:  # drop the connection without a reply
                self.close_connection = True
                self.connection.close()
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _reply

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(base_url: str, sleeps: list[float]) -> http_client.ApiClient:
    return http_client.ApiClient(base_url, "sk-test", retries=3, sleep=sleeps.append, on_retry=lambda m: None)


def test_retry_after_header_seconds_and_date_and_body(server):
    base, script = server
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    script.replies = [
        (503, {"Retry-After": "7"}, b'{"error":"service_unavailable","message":"busy"}'),
        (429, {"Retry-After": date}, b"{}"),
        (429, {}, b'{"message":"slow down","retry_after_seconds":3}'),
        (200, {}, b'{"object": "list", "data": []}'),
    ]
    sleeps: list[float] = []
    assert _client(base, sleeps).get_json("batches") == {"object": "list", "data": []}
    assert sleeps[0] == 7 and 25 <= sleeps[1] <= 31 and sleeps[2] == 3
    assert len(script.received) == 4


def test_gives_up_after_retries_with_service_error(server):
    base, script = server
    script.replies = [(500, {}, b"Internal server error")] * 5
    sleeps: list[float] = []
    with pytest.raises(errors.ServiceError, match="gave up after 4 attempts") as info:
        _client(base, sleeps).get_json("batches")
    assert info.value.code == errors.ExitCode.SERVICE and len(sleeps) == 3


@pytest.mark.parametrize(
    "status, body, code, message",
    [
        (401, b"Authentication required", 3, "Authentication required"),
        (402, b"Account balance too low. Please add credits to continue.", 3, "balance too low"),
        (404, b"Batch with ID x not found", 4, "Batch with ID x not found"),
        (400, b'{"error":{"message":"bad thing","type":"invalid_request_error"}}', 4, "bad thing"),
        (409, b'{"message":"conflict here"}', 4, "conflict here"),
    ],
)
def test_error_statuses_map_to_exit_codes_and_show_the_server_message(server, status, body, code, message):
    base, script = server
    script.replies = [(status, {}, body)]
    with pytest.raises(http_client.ApiError) as info:
        _client(base, []).get_json("batches/x")
    assert info.value.code == code and info.value.status == status and message in info.value.message
    assert len(script.received) == 1  # client errors are never retried


def test_create_call_is_not_replayed_after_an_ambiguous_failure(server):
    base, script = server
    script.replies = [(500, {}, b"Internal server error")]
    with pytest.raises(http_client.AmbiguousRequest):
        _client(base, []).post_json("batches", {"x": 1}, creates=True)
    script.replies = [(0, {}, b"")]  # dropped connection: the server may have acted
    with pytest.raises(http_client.AmbiguousRequest):
        _client(base, []).post_json("batches", {"x": 1}, creates=True)
    assert len(script.received) == 2


def test_create_call_is_retried_after_a_refusal(server):
    base, script = server
    script.replies = [(429, {"Retry-After": "1"}, b"{}"), (201, {}, b'{"id": "b1"}')]
    sleeps: list[float] = []
    assert _client(base, sleeps).post_json("batches", {}, creates=True) == {"id": "b1"}
    assert sleeps == [1.0]


def test_connection_refused_is_retried_even_for_creates():
    sleeps: list[float] = []
    client = _client("http://127.0.0.1:9/v1", sleeps)  # port 9 (discard) is closed on loopback
    with pytest.raises(errors.ServiceError, match="gave up"):
        client.post_json("batches", {}, creates=True)
    assert len(sleeps) == 3


def test_key_is_sent_as_bearer_and_upload_streams_a_multipart_body(server, tmp_path):
    base, script = server
    payload = b'{"custom_id":"a"}\n' * 100_000  # ~1.8 MB: several read() chunks
    source = tmp_path / "in.jsonl"
    source.write_bytes(payload)
    script.replies = [(201, {}, b'{"id": "f1"}')]
    result = _client(base, []).upload_file(source, 'my "file".jsonl', {"purpose": "batch"})
    assert result == {"id": "f1"}
    got = script.received[0]
    assert got["headers"]["Authorization"] == "Bearer sk-test"
    assert int(got["headers"]["Content-Length"]) == len(got["body"])
    ctype = got["headers"]["Content-Type"]
    boundary = ctype.split("boundary=")[1].encode()
    parts = got["body"].split(b"--" + boundary)
    assert b'name="purpose"\r\n\r\nbatch\r\n' in parts[1]
    head, _, content = parts[2].partition(b"\r\n\r\n")
    assert b'filename="my _file_.jsonl"' in head
    assert content[:-2] == payload  # the part ends with CRLF before the closing boundary
    assert parts[3] == b"--\r\n"


# --------------------------------------------------------------------------- issue 16: keys, routes, redaction


def test_redaction_covers_every_encoding_of_a_key():
    from doubleword import redaction

    key = 'sk-red"act\\ion/+key-0123456789abcdef'
    redaction.register_secret(key)
    from urllib.parse import quote, quote_plus

    texts = [
        key,
        json.dumps({"k": key}),
        quote(key, safe=""),
        quote_plus(key),
        key.replace('"', "&quot;"),
        key[:25],  # cut off in an excerpt
        key[:14] + "\n    " + key[14:],  # wrapped across lines
        json.dumps(key[:14] + "\n" + key[14:]),  # wrapped, then JSON-escaped
        "Authorization: Bearer " + key[::-1],  # a bearer token we never registered
    ]
    for text in texts:
        out = redaction.redact(text)
        assert key[3:11] not in out and key[-10:] not in out and key[::-1] not in out, (text, out)


CANARY = "sk-canary-7f3a9c1e5b2d4f60a8e1"  # 30 characters


@pytest.fixture
def only_secrets() -> Iterator[None]:
    """No secret registered by an earlier test changes what these see."""
    from doubleword import redaction

    redaction.forget_secrets()
    yield
    redaction.forget_secrets()


@pytest.mark.parametrize(
    "text",
    [
        CANARY,
        json.dumps({"echo": CANARY}),
        quote(CANARY, safe=""),
        quote_plus(CANARY),
        html.escape(CANARY),
        f"Authorization: Bearer {CANARY}",
        f"token {CANARY[:12]}",  # cut off at the end of an excerpt
        f"token {CANARY[:10]}...",  # cut off, with an ellipsis
        f"{CANARY[-9:]} was the end of it",  # the start cut off
        f"middle {CANARY[6:22]} of it",  # half of the key from its middle
        CANARY[:13] + "\n" + CANARY[13:],
        CANARY[:13] + "\r\n    " + CANARY[13:],
        json.dumps(CANARY[:13] + "\n" + CANARY[13:]),
        CANARY[:13] + "\n> " + CANARY[13:],  # quoted in a mail reply
        CANARY[:13] + "=\n" + CANARY[13:],  # quoted-printable soft line break
    ],
    ids=["raw", "json", "url", "url-plus", "html", "bearer", "cut-end", "cut-ellipsis", "cut-start",
         "half-middle", "wrap-lf", "wrap-crlf-indent", "wrap-json", "wrap-mail-quote", "wrap-qp"],
)  # fmt: skip
def test_every_real_leak_of_the_canary_is_hidden(only_secrets: None, text: str) -> None:
    from doubleword import redaction

    redaction.register_secret(CANARY)
    out = redaction.redact(text)
    assert "<hidden>" in out, (text, out)
    for piece in (CANARY[:8], CANARY[-8:], CANARY[10:18]):
        assert piece not in out.replace("\n", "").replace(" ", ""), (text, out)


@pytest.mark.parametrize(
    "text",
    [
        "/work/run-7f3a9c1e5b/out.jsonl",  # 11 characters from the key's middle, in a path
        "build sk-canary-7f3ab passed",  # starts like the key but is another word
        "digest x4f60a8e1",  # ends like the key, inside a longer word
        "canary-7f3a9c1",  # a middle piece, shorter than half of the key
    ],
)
def test_text_that_merely_shares_characters_with_the_canary_is_left_alone(
    only_secrets: None, text: str
) -> None:
    from doubleword import redaction

    redaction.register_secret(CANARY)
    assert redaction.redact(text) == text


def test_a_path_sharing_the_end_of_a_made_up_key_is_left_alone(only_secrets: None) -> None:
    from doubleword import redaction

    redaction.register_secret("sk-demo-local-emulator")  # the demo's old key, made of words
    path = "/work/wt-emulator/jobs/jobs.jsonl.manifest.json"
    assert redaction.redact(path) == path
    assert redaction.redact("key sk-demo-local-emulator") == "key <hidden>"


def test_redacted_data_stays_valid_json():
    from doubleword import redaction

    key = 'sk-json"esc\\aped-0123456789'
    redaction.register_secret(key)
    doc = {"error": {"message": f"echo: {json.dumps(key)} and {key}"}, key: [key]}
    text = json.dumps(redaction.redact_data(doc))
    assert json.loads(text) and key not in text and json.dumps(key)[1:-1] not in text


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://vm\\@127.0.0.1:8080/v1", "backslash"),
        ("http://u:p@127.0.0.1:8080/v1", "user name"),
        ("http://127.0.0.1:8080/v1?x=1", "query"),
        ("http://127.0.0.1:99999/v1", "cannot be used"),
        ("ftp://127.0.0.1/v1", "http"),
        ("http://%31%32%37.0.0.1/v1", "cannot be used"),
    ],
)
def test_urls_two_parsers_could_read_differently_are_refused(monkeypatch, url, problem):
    monkeypatch.delenv(config.BASE_URL_ENV, raising=False)
    with pytest.raises(errors.ConfigError, match=problem):
        config.base_url_from(_args(base_url=url))


@pytest.mark.parametrize(
    "env, url, allowed",
    [
        ({"HTTP_PROXY": "http://proxy.example:3128"}, "http://127.0.0.1:9/v1", False),
        ({"http_proxy": "http://proxy.example:3128"}, "http://127.0.0.1:9/v1", False),
        ({"ALL_PROXY": "socks5://proxy.example:1080"}, "http://127.0.0.1:9/v1", False),
        ({"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:9/v1", True),
        ({"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": "*"}, "http://127.0.0.1:9/v1", True),
        ({"HTTP_PROXY": "http://127.0.0.1:3128"}, "http://127.0.0.1:9/v1", True),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "https://api.example/v1", True),  # CONNECT: inside TLS
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "http://127.0.0.1:9/v1", True),  # not for http URLs
        ({"ALL_PROXY": "socks5h://proxy.example:1080"}, "https://api.example/v1", True),  # TLS inside SOCKS
        ({"HTTPS_PROXY": "socks5://proxy.example:1080"}, "https://api.example/v1", True),
        ({"HTTP_PROXY": "socks4a://proxy.example:1080"}, "http://127.0.0.1:9/v1", False),
    ],
)
def test_the_route_through_a_proxy_is_checked_as_requests_would_take_it(monkeypatch, env, url, allowed):
    monkeypatch.setattr(config, "_have_pysocks", lambda: True)  # the same answers with or without PySocks
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if allowed:
        assert config.base_url_from(_args(base_url=url)) == url
    else:
        with pytest.raises(errors.ConfigError, match="proxy"):
            config.base_url_from(_args(base_url=url))
        assert config.base_url_from(_args(base_url=url, allow_insecure=True)) == url


@pytest.mark.parametrize("url", ["https://api.example/v1", "http://127.0.0.1:9/v1"])
def test_a_socks_proxy_without_pysocks_is_refused_naming_the_variable(monkeypatch, url):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("ALL_PROXY", "socks5h://user:secret@proxy.example:1080")
    monkeypatch.setattr(config, "_have_pysocks", lambda: False)
    with pytest.raises(errors.ConfigError) as caught:
        config.base_url_from(_args(base_url=url, allow_insecure=True))
    message = str(caught.value)
    assert "ALL_PROXY" in message and "requests[socks]" in message and "NO_PROXY" in message, message
    assert "secret" not in message


@pytest.mark.parametrize(
    "value, problem",
    [("sk-a\nsk-b-0123", "line break"), ("sk-\u00e9t\u00e9-0123", "non-ASCII"), ("sk a-0123", "space")],
)
def test_a_key_that_cannot_be_sent_names_the_problem_not_the_key(monkeypatch, value, problem):
    monkeypatch.setenv(config.API_KEY_ENV, value)
    with pytest.raises(errors.ConfigError, match=problem) as caught:
        config.api_key_from_env()
    assert caught.value.code == 3
    for piece in value.split():
        assert piece not in caught.value.message


def test_a_create_reply_without_an_id_is_ambiguous(server):
    url, script = server
    script.replies.append(
        (201, {"Content-Type": "application/json"}, b'{"object": "batch", "status": "validating"}')
    )
    client = http_client.ApiClient(url, "sk-test", sleep=lambda s: None)
    with pytest.raises(errors.AmbiguousRequest, match="no object id"):
        client.post_json("batches", {"input_file_id": "f"}, creates=True)


def test_a_large_upload_shows_byte_progress_with_rate(server, tmp_path, capsys):
    data = tmp_path / "big.jsonl"
    data.write_bytes(b'{"custom_id": "x"}\n' * 120_000)  # 2.3 MB
    url, script = server
    script.replies.append((201, {"Content-Type": "application/json"}, b'{"id": "f1", "object": "file"}'))
    client = http_client.ApiClient(url, "sk-test", sleep=lambda s: None)
    client.upload_file(data, "big.jsonl", {"purpose": "batch"})
    err = capsys.readouterr().err
    # a rate in whatever unit it came to (a fast loopback reaches GB/s)
    assert "uploading big.jsonl:" in err and re.search(r"[0-9.]+ [kMG]?B/s", err) and "\x1b" not in err


def test_a_base_url_without_v1_is_named_on_a_404_of_a_route(emulator, tmp_path, h):
    """DOUBLEWORD_BASE_URL=https://host (no /v1) 404s on every route: the error says to check the base URL
    and that Doubleword's ends in /v1, not "check the id" (there is none); an unknown id keeps that hint."""
    bare = emulator.base_url.removesuffix("/v1")
    jobs = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    for script, args in (("list_batches", ()), ("list_models", ()), ("submit", (str(jobs),))):
        result = h.run_script(script, *args, env=h.script_env(bare))
        message = result.doc["error"]["message"]
        assert result.code == 4 and "no such route" in message and "ends in /v1" in message, (script, message)
    result = h.run_script("poll", "0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90", env=h.script_env(emulator.base_url))
    assert result.code == 4 and "check the id" in result.doc["error"]["message"]
