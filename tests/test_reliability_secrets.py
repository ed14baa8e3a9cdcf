"""Issue 6, item 5: the API key never shows up anywhere, on success and on every failure path.

Every script runs with a canary key on its success path and on its failure paths: a 401 from an
emulator that expects another key, a closed port, a server that echoes the Authorization header (and
the key in a 500 text) back in its error bodies, an unexpected reply shown with ``--debug``, and Ctrl-C.
After each run the canary must be absent from stdout, stderr, every file under the work folder
(manifests, results, retry.jsonl, shards, temp files) and from ``$TMPDIR``. The key is also refused over
plain http to a non-loopback host without ``--allow-insecure`` (nothing is sent), and requests drops the
Authorization header when a redirect leads to another host.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from emulator_server import EmulatorServer
from scripted_server import ScriptedServer, Seen, non_loopback_ipv4

HERE = Path(__file__).resolve().parent
# a prelude (h.run_script): the same code path, shorter sleeps
FAST_BACKOFF = "import doubleword.client as c; c.BACKOFF_BASE, c.BACKOFF_CAP = 0.001, 0.005"


@pytest.fixture
def work(tmp_path) -> dict[str, Path]:
    """A work folder and a private $TMPDIR, both checked for the key afterwards."""
    (tmp_path / "work").mkdir()
    (tmp_path / "tmpdir").mkdir()
    return {"work": tmp_path / "work", "tmp": tmp_path / "tmpdir"}


def env_for(h, work, base_url: str, key: str | None = None, **extra: str) -> dict[str, str]:
    return h.script_env(base_url, key or h.CANARY_KEY, TMPDIR=str(work["tmp"]), **extra)


def assert_clean(h, work, *results: Any) -> None:
    for result in results:
        for stream in (result.stdout, result.stderr):
            assert h.CANARY_KEY not in stream
    h.assert_no_key_in_tree(work["work"])
    h.assert_no_key_in_tree(work["tmp"])


def check_error(result: Any, code: int) -> str:
    assert result.code == code, result
    assert result.doc["ok"] is False and result.doc["error"]["message"], result
    assert "Traceback" not in result.stderr, result.stderr
    return result.doc["error"]["message"]


# --------------------------------------------------------------------------- success paths


def test_every_script_success_path(tmp_path, work, h) -> None:
    with EmulatorServer(
        "--start-delay", "0", "--quiet", "--fail-rate", "0.5", "--seed", "3", api_key=h.CANARY_KEY
    ) as emu:
        env = env_for(h, work, emu.base_url)
        cwd = work["work"]
        runs = []
        prompts = cwd / "prompts.txt"
        prompts.write_text("".join(f"prompt {i}\n" for i in range(12)))
        jobs = cwd / "jobs.jsonl"
        runs.append(
            h.run_script(
                "create_batch_file",
                "--model",
                h.CHAT_MODEL,
                "--prompts",
                str(prompts),
                "-o",
                str(jobs),
                env=env,
            )
        )
        runs.append(h.run_script("validate_batch_file", str(jobs), env=env))
        runs.append(h.run_script("submit", str(jobs), "--max-requests", "2", "--dry-run", env=env))
        runs.append(h.run_script("submit", str(jobs), "--max-requests", "2", "--metadata", "p=x", env=env))
        manifest = runs[-1].doc["manifest"]
        runs.append(h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.05", env=env))
        runs.append(h.run_script("list_batches", "--all", env=env))
        runs.append(h.run_script("fetch_results", "--manifest", manifest, env=env))
        batch = runs[-1].doc["batches"][0]["batch_id"]
        runs.append(h.run_script("fetch_results", batch, "--out", str(cwd / "by-id"), env=env))
        runs.append(h.run_script("cancel_batch", batch, "--force", env=env))
        # every step succeeds; poll/fetch say 6 when a shard had only failing requests (the batch "failed")
        assert all(r.code in (0, 6) for r in runs) and [r.code for r in runs][:4] == [0] * 4, runs
        assert all("Traceback" not in r.stderr for r in runs)
        retry = cwd / "jobs.results" / "retry.jsonl"
        assert retry.stat().st_size > 0, "some requests failed, so retry.jsonl holds lines"
        assert list((cwd / "jobs.jsonl.shards").rglob("*.jsonl")), "the shards are on disk"
    assert_clean(h, work, *runs)


# --------------------------------------------------------------------------- failure paths


def test_refused_key_401(tmp_path, work, h) -> None:
    jobs = h.write_jsonl(work["work"] / "jobs.jsonl", h.chat_lines(3))
    with EmulatorServer("--start-delay", "0", "--quiet", api_key="sk-someone-elses-key") as emu:
        env = env_for(h, work, emu.base_url)
        runs = [
            h.run_script("submit", str(jobs), env=env),
            h.run_script("poll", "00000000-0000-4000-8000-000000000000", env=env),
            h.run_script("list_batches", env=env),
            h.run_script("cancel_batch", "00000000-0000-4000-8000-000000000000", env=env),
            h.run_script("fetch_results", "00000000-0000-4000-8000-000000000000", "--out", "r", env=env),
        ]
        assert emu.stats()["files_created"] == 0
    for result in runs:
        assert "401" in check_error(result, 3)
    assert_clean(h, work, *runs)


def run_fast(h, script: str, *args: str, env: dict[str, str], cwd: Path) -> Any:
    """Run a script with http_client's backoff shortened (for connection failures, which have no hint)."""
    return h.run_script(script, *args, env=env, cwd=cwd, prelude=FAST_BACKOFF)


def test_closed_port(work, h) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jobs = h.write_jsonl(work["work"] / "jobs.jsonl", h.chat_lines(3))
    env = env_for(h, work, f"http://127.0.0.1:{port}/v1")
    cwd = work["work"]
    runs = [
        run_fast(h, "submit", str(jobs), env=env, cwd=cwd),
        run_fast(h, "poll", "b1", env=env, cwd=cwd),
        run_fast(h, "list_batches", env=env, cwd=cwd),
        run_fast(h, "cancel_batch", "b1", env=env, cwd=cwd),
        run_fast(h, "fetch_results", "b1", env=env, cwd=cwd),
    ]
    for result in runs:
        message = check_error(result, 5)
        assert "connection" in message.lower() and "gave up" in message, message
    assert_clean(h, work, *runs)


def echo_server(h) -> ScriptedServer:
    """Answers each call with an error that echoes what it received, key included."""

    def reply(seen: Seen) -> tuple[int, dict[str, str], str]:
        auth = seen.headers.get("Authorization", "")
        if seen.method == "POST" and seen.path == "/v1/files":
            body = {"error": {"message": f"bad upload; headers were Authorization: {auth}"}}
            return 400, {"Content-Type": "application/json"}, json.dumps(body)
        if seen.path.startswith("/v1/batches/") and seen.method == "GET":
            return 404, {}, f"no such batch (you sent {auth})"
        return 500, {"Retry-After": "0"}, f"Internal Server Error: key {h.CANARY_KEY} rejected; {auth}"

    return ScriptedServer(reply)


def test_server_echoes_the_key(work, h) -> None:
    jobs = h.write_jsonl(work["work"] / "jobs.jsonl", h.chat_lines(3))
    with echo_server(h) as server:
        env = env_for(h, work, server.base_url)
        cwd = work["work"]
        runs = [
            h.run_script("submit", str(jobs), env=env, cwd=cwd),
            h.run_script("poll", "b1", env=env, cwd=cwd),
            h.run_script("list_batches", env=env, cwd=cwd),
            h.run_script("cancel_batch", "b1", env=env, cwd=cwd),
            h.run_script("fetch_results", "b1", env=env, cwd=cwd),
        ]
        assert all(s.headers.get("Authorization") == f"Bearer {h.CANARY_KEY}" for s in server.seen)
    codes = [r.code for r in runs]
    assert codes == [4, 4, 5, 4, 4], runs
    for result in runs:
        assert "<hidden>" in check_error(result, result.code), "the server's message is shown, key hidden"
    assert_clean(h, work, *runs)


def test_debug_traceback_hides_the_key(work, h) -> None:
    """A reply of the wrong shape holding the key: a service error naming the field, the key hidden;
    an unexpected error with --debug prints a traceback, the key hidden there too."""

    def reply(seen: Seen) -> tuple[int, dict[str, str], str]:
        batch = {"id": "b1", "status": "in_progress", "request_counts": {"total": h.CANARY_KEY}}
        return 200, {"Content-Type": "application/json"}, json.dumps(batch)

    with ScriptedServer(reply) as server:
        env = env_for(h, work, server.base_url)
        result = h.run_script("poll", "b1", "--debug", env=env, cwd=work["work"])
    assert result.code == 5 and "request_counts.total" in result.doc["error"]["message"], result
    assert "<hidden>" in result.doc["error"]["message"] and "<hidden>" in result.stderr
    h.assert_no_key_in_tree(work["work"])

    import io
    from contextlib import redirect_stderr, redirect_stdout

    from doubleword import cli, config

    config.register_secret(h.CANARY_KEY)

    def crash(argv: list[str]) -> tuple[dict[str, Any], int]:
        raise RuntimeError(f"boom near {h.CANARY_KEY}")

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.run(crash, ["--debug"])
    assert code == 1 and "Traceback" in err.getvalue() and "<hidden>" in err.getvalue()
    assert h.CANARY_KEY not in out.getvalue() + err.getvalue()
    h.assert_no_key_in_tree(work["tmp"])


@pytest.mark.parametrize("script", ["poll", "fetch_results", "submit"])
def test_ctrl_c(script, work, h) -> None:
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = env_for(h, work, emu.base_url)
        cwd = work["work"]
        jobs = h.write_jsonl(cwd / "jobs.jsonl", h.chat_lines(5))
        if script == "submit":
            emu.configure(batch_create_error="capacity")  # submit sits in its Retry-After wait
            args = [str(jobs)]
        else:
            emu.configure(paused=True)
            assert h.run_script("submit", str(jobs), env=env).code == 0
            manifest = str(cwd / "jobs.jsonl.manifest.json")
            args = ["--manifest", manifest, "--wait" if script == "poll" else "--follow", "--interval", "0.1"]
        proc = subprocess.Popen(
            [sys.executable, str(h.SCRIPTS / f"{script}.py"), *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        calls = 2 if script == "submit" else 3  # submit: upload, then the refused batch creation
        while len(emu.requests_log()) < calls and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, (out, err)
    assert json.loads(out)["error"]["type"] == "interrupted"
    assert "Traceback" not in err and h.CANARY_KEY not in out + err
    h.assert_no_key_in_tree(work["work"])
    h.assert_no_key_in_tree(work["tmp"])


# --------------------------------------------------------------------------- plain http and redirects


def test_plain_http_to_a_remote_host_is_refused(work, h) -> None:
    env = env_for(h, work, "http://example.invalid/v1")
    for script, args in [("list_batches", []), ("poll", ["b1"]), ("cancel_batch", ["b1"])]:
        result = h.run_script(script, *args, env=env, cwd=work["work"], timeout=10)
        message = check_error(result, 3)
        assert "example.invalid" in message and "--allow-insecure" in message
    # with --allow-insecure it is allowed (the name then fails to resolve: a network error, not a refusal)
    allowed = run_fast(h, "list_batches", "--allow-insecure", env=env, cwd=work["work"])
    assert allowed.code == 5 and "example.invalid" in allowed.doc["error"]["message"]
    assert_clean(h, work, allowed)


def test_the_key_given_as_the_base_url_is_refused_without_showing_it(work, h) -> None:
    """The key pasted where the URL goes (the two variables mixed up, or the key in a query): exit 3
    with a message saying so, the key itself in no output."""
    jobs = h.write_jsonl(work["work"] / "jobs.jsonl", h.chat_lines(2))
    runs = [
        h.run_script("list_models", env=env_for(h, work, h.CANARY_KEY), cwd=work["work"], timeout=10),
        h.run_script(
            "poll",
            "b1",
            "--base-url",
            f"https://api.example/v1?key={h.CANARY_KEY}",
            env=env_for(h, work, None),
            cwd=work["work"],
            timeout=10,
        ),
        h.run_script(
            "submit",
            str(jobs),
            env=env_for(h, work, f"http://{h.CANARY_KEY}/v1"),
            cwd=work["work"],
            timeout=10,
        ),
    ]
    for result in runs:
        message = check_error(result, 3)
        assert "holds the API key" in message and "DOUBLEWORD_BASE_URL" in message, message
    assert_clean(h, work, *runs)


def test_plain_http_to_a_local_non_loopback_address(work, h) -> None:
    """A real listener on this machine's LAN address: nothing reaches it unless --allow-insecure."""
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address")

    def reply(seen: Seen) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json"}, '{"object": "list", "data": [], "has_more": false}'

    with ScriptedServer(reply, host=ip) as server:
        env = env_for(h, work, server.base_url)
        refused = h.run_script("list_batches", env=env, cwd=work["work"])
        assert "--allow-insecure" in check_error(refused, 3)
        assert server.connections == 0 and server.seen == []
        allowed = h.run_script("list_batches", "--allow-insecure", env=env, cwd=work["work"])
        assert allowed.code == 0 and allowed.doc["count"] == 0
        assert [s.headers.get("Authorization") for s in server.seen] == [f"Bearer {h.CANARY_KEY}"]
    assert_clean(h, work, refused, allowed)


def test_redirect_to_another_host_is_not_followed(work, h) -> None:
    """127.0.0.1 redirects to localhost (another host name): nothing is sent there, the key least of all."""

    def target(seen: Seen) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json"}, '{"object": "list", "data": [], "has_more": false}'

    with ScriptedServer(target) as other:
        where = f"http://localhost:{other.port}/v1/batches"

        def redirect(seen: Seen) -> tuple[int, dict[str, str], str]:
            return 302, {"Location": where}, ""

        with ScriptedServer(redirect) as first:
            env = env_for(h, work, first.base_url)
            result = h.run_script("list_batches", env=env, cwd=work["work"])
        assert first.seen[0].headers.get("Authorization") == f"Bearer {h.CANARY_KEY}"
        assert len(first.seen) == 1, "a refused redirect is not retried"
        assert not other.seen, "the redirect was followed"
    assert result.code == 5
    assert f"localhost:{other.port}" in result.doc["error"]["message"]
    assert_clean(h, work, result)
