"""Malformed multipart uploads (issue 16): the server answers them as the real one does (400, plain text
`Invalid multipart request: ...` for a body it cannot read as multipart, `Failed to read multipart upload:
...` for a stream that breaks after the first part, `No file field found ...` when no part is the file),
never 500 or a traceback, creates no file, and serves the next request. In the OpenAI flavour the same
errors come as OpenAI JSON error bodies. Bodies are sent raw (http.client / a socket), as no well-behaved
client would write them."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from conftest import chat_line
from emulator_server import EmulatorServer

LINE = (json.dumps(chat_line(1)) + "\n").encode()
FILE = b'Content-Disposition: form-data; name="file"; filename="x.jsonl"'
PURPOSE = b'Content-Disposition: form-data; name="purpose"'


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZ", close: bool = True) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n" for head, body in parts)
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


FORM = "multipart/form-data; boundary=XyZ"
INVALID = "Invalid multipart request: "
BROKEN = "Failed to read multipart upload: "
NO_FILE = "No file field found in multipart upload"
# name: (Content-Type, body, how the 400 text starts)
CASES = {
    "no Content-Disposition": (FORM, multipart([(b"Content-Type: text/plain", LINE)]), NO_FILE),
    "no name": (FORM, multipart([(b'Content-Disposition: form-data; filename="x.jsonl"', LINE)]), NO_FILE),
    "unclosed name quote": (
        FORM,
        multipart([(b'Content-Disposition: form-data; name="file', LINE)]),
        NO_FILE,
    ),
    "unterminated part headers": (FORM, b"--XyZ\r\n" + FILE + b"\r\nContent-Type: text/plain", BROKEN),
    "no boundary parameter": ("multipart/form-data", multipart([(FILE, LINE)]), INVALID),
    "wrong boundary": ("multipart/form-data; boundary=Other", multipart([(FILE, LINE)]), INVALID),
    "empty body": (FORM, b"", INVALID),
    "garbage, no boundary line": (FORM, b"garbage\r\n" * 3, INVALID),
    "no closing boundary": (FORM, multipart([(FILE, LINE)], close=False), BROKEN),
    "truncated inside the file": (
        FORM,
        multipart([(FILE, LINE)], close=False)[:-10],
        "Invalid JSON on line 1",
    ),
    "header line without a colon": (FORM, multipart([(FILE + b"\r\nGarbage header line", LINE)]), INVALID),
    "part header over 8 KB": (FORM, multipart([(FILE + b"\r\nX-Big: " + b"a" * 200_000, LINE)]), INVALID),
    "too many part headers": (
        FORM,
        multipart([(FILE + b"".join(b"\r\nX-%d: a" % i for i in range(5000)), LINE)]),
        INVALID,
    ),
    "unknown charset on purpose": (
        FORM,
        multipart([(PURPOSE + b"\r\nContent-Type: text/plain; charset=nonsense", b"batch"), (FILE, LINE)]),
        BROKEN + "unknown encoding: nonsense",
    ),
    "purpose not UTF-8": (FORM, multipart([(PURPOSE, b"\xff\xfe"), (FILE, LINE)]), BROKEN),
    "nested multipart file part": (
        FORM,
        multipart([(FILE + b"\r\nContent-Type: multipart/mixed; boundary=in", b"--in\r\n\r\nx\r\n--in--")]),
        "Invalid JSON on line 1",  # read as bytes, as the server's parser does
    ),
}


def post(emu: EmulatorServer, content_type: str, body: bytes) -> tuple[int, str, str]:
    host, port = emu.base_url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/files",
            body=body,
            headers={"Authorization": "Bearer sk-test", "Content-Type": content_type},
        )
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read().decode("utf-8")
    finally:
        conn.close()


def files_listed(emu: EmulatorServer) -> int:
    host, port = emu.base_url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v1/files?limit=100", headers={"Authorization": "Bearer sk-test"})
    r = conn.getresponse()
    assert r.status == 200
    return len(json.loads(r.read())["data"])


@pytest.fixture(scope="module")
def plain_emu():
    with EmulatorServer("--start-delay", "0") as server:
        yield server


@pytest.fixture(scope="module")
def openai_emu():
    with EmulatorServer("--start-delay", "0", "--flavor", "openai") as server:
        yield server


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_multipart_is_a_plain_text_400_and_the_server_carries_on(plain_emu, case):
    content_type, body, start = CASES[case]
    before = files_listed(plain_emu)
    status, ctype, text = post(plain_emu, content_type, body)
    assert (status, text[: len(start)]) == (400, start), text
    assert ctype.startswith("text/plain")
    assert len(text) < 400  # a reason quoting a huge header is cut
    assert files_listed(plain_emu) == before  # nothing stored, and the server answers the next call
    status, _, text = post(plain_emu, FORM, multipart([(PURPOSE, b"batch"), (FILE, LINE)]))
    assert status == 201, text
    assert "Traceback" not in "\n".join(plain_emu.output)


@pytest.mark.parametrize(
    "case", ["no boundary parameter", "unterminated part headers", "too many part headers"]
)
def test_openai_flavour_answers_malformed_multipart_with_an_openai_error(openai_emu, case):
    content_type, body, start = CASES[case]
    status, ctype, text = post(openai_emu, content_type, body)
    assert status == 400 and ctype.startswith("application/json")
    error = json.loads(text)["error"]
    assert error["message"].startswith(start) and error["type"] == "invalid_request_error"


def test_a_body_shorter_than_its_content_length_does_not_hang_the_server(plain_emu):
    """The client declares more than it sends and stops (half-closes): the server gives up on that
    upload and keeps serving."""
    host, port = plain_emu.base_url.split("//")[1].split("/")[0].split(":")
    body = multipart([(FILE, LINE)])
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {len(body) + 1000}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        start = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        assert time.monotonic() - start < 10
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    before = files_listed(plain_emu)
    assert post(plain_emu, FORM, multipart([(FILE, LINE)]))[0] == 201
    assert files_listed(plain_emu) == before + 1


@pytest.mark.parametrize("seconds", [b"9" * 40, b"-" + b"9" * 40, b"9223372036854775807"])
def test_expires_after_beyond_an_i64_deadline_is_ignored_like_any_non_integer(plain_emu, seconds):
    """12.30: a value the server cannot parse as an integer deadline is ignored (30-day default); one that
    does not fit (it answered 500: SQLite INTEGER overflow) is no different."""
    field = b'Content-Disposition: form-data; name="expires_after[seconds]"'
    status, _, text = post(plain_emu, FORM, multipart([(PURPOSE, b"batch"), (field, seconds), (FILE, LINE)]))
    assert status == 201, text
    f = json.loads(text)
    assert f["expires_at"] - f["created_at"] == 30 * 24 * 3600
