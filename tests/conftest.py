"""Shared fixtures: the emulator over HTTP, a script runner, request files and a canary API key."""

from __future__ import annotations

import compileall
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from emulator_server import EmulatorServer

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
# A key that must never show up in any output, manifest or results file.
CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f60a8e1"
CHAT_MODEL = "Qwen/Qwen3.5-9B"
EMBED_MODEL = "Qwen/Qwen3-Embedding-8B"


# The longest tests (5-15 s each in a parallel run, make test at 15:00 UTC on 2026-12-01), in that order.
# Under pytest-xdist (make test) they are handed out first, so that no worker is left running one of them
# alone at the end; the order of the others is kept. This only orders: a renamed test is simply not moved.
SLOW_FIRST = (
    "test_a_trickled_reply_through_a_socks_proxy_is_bounded_by_timeout",
    "test_poll_beside_fetch_follow_keeps_the_download_cursor",
    "test_demo_runs_end_to_end",
    "test_submit_killed_at_random_points",
    "test_ctrl_c_during_upload",
    "test_ctrl_c_during_parallel_uploads_stops_them_at_once",
    "test_memory_flat_with_request_count",
    "test_server_restart_mid_batch",
    "test_fetch_killed_at_random_points",
    "test_refetch_after_cancel_retry_and_second_finish",
    "test_a_killed_submit_resumed_while_lists_lag_adopts_what_it_sent",
    "test_documented_commands_run_against_the_emulator",
    "test_every_script_success_path",
    "test_poll_killed_at_random_points",
    "test_resubmit_window_is_the_new_rounds_and_an_ignored_window_is_a_warning",
    "test_rounds_until_every_input_has_an_answer",
    "test_a_job_answered_in_order_is_written_the_same_without_the_per_line_join",
    "test_a_damaged_create_reply_with_lagging_lists_makes_nothing_twice",
    "test_large_upload_is_streamed_not_held_in_memory",
    "test_two_resubmits_at_once_make_one_round",
    "test_creating_calls_faulted_still_exactly_once",
    "test_resubmit_killed_at_random_points_makes_one_round_sent_once",
    "test_flow_under_faults",
    "test_cli_round_trip_prompts_file",
    "test_killed_fetch_resumes_byte_identical",
    "test_final_results_hold_one_line_per_original_input_with_attempts",
    # near the end of the collection (test_submit_*): without this, a tail after the rest
    "test_submit_reads_each_shard_once_to_validate_and_hash_it_and_once_to_upload_it",
)


TEST_MODULE = re.compile(r"(^|[/\\])(test_\w*|conftest)\.py$")  # pytest keeps its own (rewritten) form


def pytest_configure(config: pytest.Config) -> None:
    """Bytecode caches for the run, although PYTHONDONTWRITEBYTECODE may be set (it is on CI's machine).

    The suite starts ~1,300 Python processes (the scripts, emulators); with that variable set none of
    them writes a cache, so each compiled the package from source (~1/3 of a script's start-up). Python
    still reads valid caches: they are written once here, before any test (gitignored, left out of the
    package; a source edited later is simply compiled again, its timestamp no longer matching). This
    process also keeps pytest's rewritten test modules (each worker rewrote all of them, ~3.5 s). The
    scripts and the emulator still run with the user's environment untouched."""
    sys.dont_write_bytecode = False
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # once, in the process that starts the workers
        for part in ("scripts", "emulator", "tests", "bench", "demo", "tools"):
            compileall.compile_dir(REPO / part, quiet=2, rx=TEST_MODULE)
    # A run started in the background by a shell without job control inherits SIGINT ignored, and so
    # would every script the Ctrl-C tests start (Python leaves an ignored SIGINT ignored): a handler
    # here makes the children start with the default (a handler, unlike "ignored", is not inherited).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects, and must order, alike
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(getattr(item, "originalname", item.name), len(rank)))
    # make test's second run (-n 2 --dist loadgroup): the time-bound tests, one at a time on one worker,
    # except those marked with a group of their own (they only wait on a stalled server: no CPU), which
    # run beside them instead of after them
    for item in items:
        if item.get_closest_marker("serial") and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group("one-at-a-time"))


class ScriptResult:
    """Exit code, parsed stdout document and stderr of one script run."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        try:
            self.doc: dict[str, Any] = json.loads(stdout)
        except ValueError:
            raise AssertionError(f"stdout is not one JSON document:\n{stdout}\nstderr:\n{stderr}")

    def __iter__(self) -> Iterator[Any]:  # code, doc, stderr = run_script(...)
        return iter((self.code, self.doc, self.stderr))

    def __repr__(self) -> str:
        return f"ScriptResult(code={self.code}, doc={self.doc!r}, stderr={self.stderr[-2000:]!r})"


def script_env(base_url: str | None, key: str = CANARY_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_")}
    env["DOUBLEWORD_API_KEY"] = key
    if base_url:
        env["DOUBLEWORD_BASE_URL"] = base_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# Runs a script as __main__ after a few statements of the test's (``prelude``), as when it is run directly
# (its folder first on sys.path); ``os`` and ``sys`` are imported for the prelude, and the package too.
_PRELUDE_WRAPPER = (
    "import os, runpy, sys; sys.path.insert(0, os.path.dirname(sys.argv[2])); exec(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_script(
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    prelude: str = "",
) -> ScriptResult:
    """Run ``scripts/<name>`` as a subprocess; returns (code, parsed stdout JSON, stderr).

    ``prelude``: Python statements run first in that process, e.g. shorter waits (``"import
    doubleword.client as c; c.BACKOFF_BASE = 0.01"``: the same code path, shorter sleeps)."""
    script = SCRIPTS / (name if name.endswith(".py") else f"{name}.py")
    command = [sys.executable, str(script), *args]
    if prelude:
        command[1:2] = ["-c", _PRELUDE_WRAPPER, prelude, str(script)]
    proc = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = ScriptResult(proc.returncode, proc.stdout, proc.stderr)
    assert CANARY_KEY not in proc.stdout and CANARY_KEY not in proc.stderr, "the API key leaked"
    return result


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator on a free port that only accepts the canary key."""
    with EmulatorServer("--start-delay", "0.05", "--quiet", api_key=CANARY_KEY) as server:
        yield server


@pytest.fixture
def env(emulator: EmulatorServer) -> dict[str, str]:
    return script_env(emulator.base_url)


def chat_lines(n: int, prefix: str = "req", model: str = CHAT_MODEL) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i:05d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Question number {i}: say something short."}],
                "max_tokens": 32,
            },
        }
        for i in range(n)
    ]


def embedding_lines(n: int, prefix: str = "emb") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i:05d}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": f"text to embed {i}"},
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@contextmanager
def start_emulator(*flags: str) -> Iterator[EmulatorServer]:
    """An emulator of one test's own, set up from the start (``"--fail-rate", "0.1", "--seed", "5"``...):
    no start delay, quiet, only the canary key."""
    with EmulatorServer("--start-delay", "0", "--quiet", *flags, api_key=CANARY_KEY) as server:
        yield server


class Submitted:
    """A job file written and submitted (exit 0 checked): its lines, its path and submit's stdout.

    (Not a dataclass: scripted_server.conftest_module() loads this file outside sys.modules.)"""

    def __init__(self, lines: list[dict[str, Any]], src: Path, doc: dict[str, Any]) -> None:
        self.lines, self.src, self.doc = lines, src, doc

    @property
    def manifest(self) -> str:
        return self.doc["manifest"]

    @property
    def batch_id(self) -> str:
        """The job's first (often only) batch."""
        return self.doc["batches"][0]["batch_id"]


def submit_lines(
    folder: Path, lines: list[dict[str, Any]], env: dict[str, str], *args: str, name: str = "jobs.jsonl"
) -> Submitted:
    """Write ``lines`` to ``folder/name`` and submit it (extra ``args`` to submit.py); exit 0 asserted."""
    src = write_jsonl(folder / name, lines)
    result = run_script("submit", str(src), *args, env=env)
    assert result.code == 0, result
    return Submitted(lines, src, result.doc)


def poll_wait(*args: str, env: dict[str, str], code: int | None = 0) -> ScriptResult:
    """``poll ARGS --wait`` at 0.1 s (ARGS: batch ids, or ``"--manifest", PATH``, and any other flag); its
    exit code asserted (0: every request answered; 6: finished with failures) unless ``code`` is None."""
    result = run_script("poll", *args, "--wait", "--interval", "0.1", env=env)
    assert code is None or result.code == code, result
    return result


def wait_until(condition: Callable[[], object], timeout: float = 60, what: str = "the condition") -> None:
    """Poll ``condition`` every 20 ms until it is true: a test waits for a state, never for a fixed time
    (the suite runs in parallel on a shared machine, where any fixed sleep is sometimes too short)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def server_counts(emulator: EmulatorServer, batch_id: str) -> dict[str, int]:
    """The emulator's request_counts of one batch, read directly (no script, no retries)."""
    url = f"{emulator.base_url}/batches/{batch_id}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=emulator.headers), timeout=30) as resp:
        return json.loads(resp.read())["request_counts"]


def assert_no_key_in_tree(root: Path) -> None:
    """The canary key appears in no file under ``root``."""
    for path in root.rglob("*"):
        if path.is_file():
            assert CANARY_KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"


# A prelude for runs against a server that faults on purpose: the same retries and look-ups, shorter
# sleeps (backoff 1 s doubling to 30 s -> 0.02 s to 0.5 s; the 8 s a list may lag behind a create -> 1 s:
# the emulator's lists never lag).
SHORT_WAITS = (
    "import doubleword.client as c, doubleword.submission as sub; "
    "c.BACKOFF_BASE, c.BACKOFF_CAP = 0.02, 0.5; sub.LIST_LAG_S = 1.0"
)


class Helpers:
    """Test helpers handed out as a fixture (test modules never import conftest directly)."""

    CANARY_KEY = CANARY_KEY
    SHORT_WAITS = SHORT_WAITS
    PRELUDE_WRAPPER = (
        _PRELUDE_WRAPPER  # [sys.executable, "-c", it, PRELUDE, script, *args]: a spawned prelude
    )
    CHAT_MODEL = CHAT_MODEL
    EMBED_MODEL = EMBED_MODEL
    chat_lines = staticmethod(chat_lines)
    embedding_lines = staticmethod(embedding_lines)
    write_jsonl = staticmethod(write_jsonl)
    read_jsonl = staticmethod(read_jsonl)
    assert_no_key_in_tree = staticmethod(assert_no_key_in_tree)
    wait_until = staticmethod(wait_until)
    server_counts = staticmethod(server_counts)
    script_env = staticmethod(script_env)
    run_script = staticmethod(run_script)
    start_emulator = staticmethod(start_emulator)
    submit_lines = staticmethod(submit_lines)
    poll_wait = staticmethod(poll_wait)
    SCRIPTS = SCRIPTS


@pytest.fixture(scope="session")  # a namespace, no state: module-scoped fixtures can use it too
def h() -> type[Helpers]:
    return Helpers
