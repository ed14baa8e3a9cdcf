"""Everyday CLI behaviour every command shares (--version, per-command exit codes, metavars, summaries,
progress) and the published package (stands alone, reproducible, passes the skills validator)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from scripted_server import ScriptedServer

REPO = Path(__file__).resolve().parent.parent
COMMANDS = sorted(p.name for p in (REPO / "scripts").glob("*.py"))


def _skill_version() -> str:
    front = (REPO / "SKILL.md").read_text(encoding="utf-8").split("\n---", 1)[0]
    match = re.search(r"^  version:\s*\"?([^\"\s]+)", front, re.M)
    assert match, "SKILL.md has no metadata.version"
    return match.group(1)


def _run(*cmd: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_version_with_the_skill_version(command: str) -> None:
    proc = _run(sys.executable, str(REPO / "scripts" / command), "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{command} {_skill_version()}"


def _help_codes(command: str) -> set[int]:
    proc = _run(sys.executable, str(REPO / "scripts" / command), "--help")
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("exit codes:\n", 1)[1]
    return {int(m) for m in re.findall(r"^  (\d+) ", section, re.M)}


def test_help_lists_only_the_exit_codes_the_command_can_return() -> None:
    local = {0, 1, 2, 4, 130}
    assert _help_codes("validate_batch_file.py") == local
    assert _help_codes("create_batch_file.py") == local
    assert _help_codes("list_models.py") == {0, 1, 2, 3, 4, 5, 130}
    assert _help_codes("list_batches.py") == {0, 1, 2, 3, 4, 5, 130}
    assert {6, 7} <= _help_codes("submit.py")  # --resubmit: answers still missing / a round running
    assert {0, 6, 7} <= _help_codes("poll.py") and {0, 6, 7} <= _help_codes("fetch_results.py")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_examples_are_whole_commands_one_per_line(command: str) -> None:
    """Each example in --help starts with the command, or continues the line before (ending in a
    backslash); none runs two lines into one (a lone backslash in the source joins them)."""
    proc = _run(sys.executable, str(REPO / "scripts" / command), "--help")
    examples = proc.stdout.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples, proc.stdout
    previous = ""
    for line in examples:
        if previous.endswith("\\"):
            assert line.startswith("      ") and not line.startswith("       "), line
        else:
            assert line.startswith("  ") and f"python3 scripts/{command}" in line, line  # (or piped into it)
        assert "   " not in line.strip(), f"two example lines run together: {line!r}"
        previous = line


def test_create_and_validate_say_an_interrupted_run_starts_over(tmp_path: Path) -> None:
    """create and validate keep no state: their --help and an interrupted run say a re-run starts over
    (not "state saved, re-run to resume"), and create leaves no file behind."""
    for command in ("create_batch_file.py", "validate_batch_file.py"):
        codes = _run(sys.executable, str(REPO / "scripts" / command), "--help").stdout.split("exit codes:")[1]
        row = next(line for line in codes.splitlines() if line.startswith("  130 "))
        assert "starts over" in row and "resume" not in row, row
        assert "server" not in codes, codes  # no server is involved in a local command's exit 4
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(300_000)), encoding="utf-8")
    argv = [sys.executable, str(REPO / "scripts" / "create_batch_file.py"), "--model", "Qwen/Qwen3.5-9B"]
    proc = subprocess.Popen(
        [*argv, "--prompts", str(prompts), "-o", str(tmp_path / "big.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    message = json.loads(out)["error"]["message"]
    assert "starts over" in message and "resume" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


@pytest.mark.parametrize("command", ["poll.py", "fetch_results.py", "list_batches.py"])
def test_shared_metavars(command: str) -> None:
    usage = _run(sys.executable, str(REPO / "scripts" / command), "--help").stdout.split("\n\n", 1)[0]
    assert "--base-url URL" in usage
    for bad in ("TIMEOUT", "INTERVAL", "MANIFEST", "LIMIT", "BASE_URL"):
        assert f" {bad}]" not in usage, usage
    if "--timeout" in usage:
        assert "--timeout SECONDS" in usage
    if "--manifest" in usage:
        assert "--manifest PATH" in usage


def test_every_command_file_is_executable_or_has_no_shebang() -> None:
    for path in (REPO / "scripts").rglob("*.py"):
        if path.read_bytes().startswith(b"#!"):
            assert os.access(path, os.X_OK), f"{path} has a shebang but is not executable"
    tracked = _run("git", "-C", str(REPO), "ls-files", "-s", "scripts").stdout
    for line in tracked.splitlines():
        mode, _, _, name = line.split(maxsplit=3)
        if (REPO / name).read_bytes().startswith(b"#!"):
            assert mode == "100755", f"{name} is committed without its executable bit"


def test_make_help_expands_the_port() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = _run("make", "-s", "-C", str(REPO), "help", "PORT=9911").stdout
    assert "127.0.0.1:9911" in out and "$(PORT)" not in out


# -- summaries and progress


def test_a_failing_command_ends_with_a_one_line_summary_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    proc = _run(sys.executable, str(REPO / "scripts" / "validate_batch_file.py"), str(bad))
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["ok"] in (False, True)
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("validate_batch_file.py: ") and "exit 4" in last


def test_list_models_summary_and_a_usage_error_summary(h, emulator) -> None:  # type: ignore[no-untyped-def]
    result = h.run_script("list_models", env=h.script_env(emulator.base_url))
    assert result.stderr.rstrip("\n").splitlines()[-1].startswith("list_models.py: ")
    result = h.run_script("list_models", "--bogus", env=h.script_env(emulator.base_url))
    assert result.code == 2 and result.doc["error"]["type"] == "usage_error"
    assert result.stderr.rstrip("\n").splitlines()[-1].startswith("list_models.py: failed (exit 2")


def test_progress_without_a_terminal_or_with_term_dumb_writes_no_escapes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from doubleword import cli

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    for term, stream in (("xterm", io.StringIO()), ("dumb", FakeTTY())):
        monkeypatch.setenv("TERM", term)
        progress = cli.Progress(stream=stream, plain_every=0)
        meter = cli.Transfer("uploading x.jsonl", 2_000_000, progress=progress)
        for _ in range(4):
            meter.add(500_000)
        meter.finish()
        text = stream.getvalue()
        assert "\x1b" not in text and "\r" not in text
        assert "uploading x.jsonl: 2.0 MB / 2.0 MB (100%)" in text and "/s" in text


def test_progress_on_a_terminal_updates_one_line_and_leaves_no_stale_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from doubleword import cli

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    stream = FakeTTY()
    progress = cli.Progress(stream=stream)
    progress.update("3/10 batches terminal")
    progress.update("9/10 batches terminal")
    progress.done()
    text = stream.getvalue()
    assert text.count("\n") == 0 and text.endswith("\r\x1b[K")


# -- list_models.py


def test_list_models_lists_the_emulators_models(h, emulator) -> None:  # type: ignore[no-untyped-def]
    result = h.run_script("list_models", env=h.script_env(emulator.base_url))
    assert result.code == 0, result
    ids = [m["id"] for m in result.doc["models"]]
    assert h.CHAT_MODEL in ids and h.EMBED_MODEL in ids and ids == sorted(ids)
    assert result.doc["count"] == len(ids)
    # the server says "owned_by": "None" (a string) for every model: listed as no owner, null
    assert {m["owned_by"] for m in result.doc["models"]} == {None}


def test_list_models_reports_reasoning_efforts_where_the_server_lists_them(h) -> None:  # type: ignore[no-untyped-def]
    body = {
        "object": "list",
        "data": [
            {"id": "openai/gpt-oss-20b", "object": "model", "supported_reasoning_efforts": ["low", "high"]},
            {"id": "Qwen/Qwen3.5-9B", "object": "model", "owned_by": "qwen"},
        ],
    }
    with ScriptedServer(lambda seen: (200, {"Content-Type": "application/json"}, json.dumps(body))) as server:
        result = h.run_script("list_models", env=h.script_env(server.base_url))
        assert server.seen[0].path == "/v1/models"
        assert "include_reasoning_capabilities=true" in server.seen[0].query
        assert server.seen[0].headers["Authorization"] == f"Bearer {h.CANARY_KEY}"
    assert result.code == 0, result
    efforts = {m["id"]: m["reasoning_efforts"] for m in result.doc["models"]}
    assert efforts == {"Qwen/Qwen3.5-9B": None, "openai/gpt-oss-20b": ["low", "high"]}
    assert [m["owned_by"] for m in result.doc["models"]] == ["qwen", None]  # a real owner is kept
    assert result.stderr.splitlines()[-1] == (
        "list_models.py: 2 models available, 1 of them take a reasoning effort "
        "(1 the server says nothing about) (exit 0)"
    )


def test_list_models_summary_counts_only_models_that_take_an_effort(h, emulator) -> None:  # type: ignore[no-untyped-def]
    """The emulator lists [] for the embedding and VL models: they are not counted as taking one."""
    result = h.run_script("list_models", env=h.script_env(emulator.base_url))
    takes = [m["id"] for m in result.doc["models"] if m["reasoning_efforts"]]
    assert 0 < len(takes) < result.doc["count"]
    assert result.stderr.splitlines()[-1] == (
        f"list_models.py: {result.doc['count']} models available, {len(takes)} of them take a reasoning "
        "effort (exit 0)"
    )


@pytest.mark.parametrize(("status", "code"), [(401, 3), (403, 3), (404, 4)])
def test_list_models_maps_http_errors_to_exit_codes(h, status: int, code: int) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(lambda seen: (status, {}, "Authentication required")) as server:
        result = h.run_script("list_models", env=h.script_env(server.base_url))
    assert result.code == code and result.doc["ok"] is False


def test_list_models_rejects_a_reply_without_a_model_list(h) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(lambda seen: (200, {"Content-Type": "text/html"}, "<html>proxy</html>")) as server:
        result = h.run_script("list_models", env=h.script_env(server.base_url))
    assert result.code == 5 and "not JSON" in result.doc["error"]["message"]


# -- the package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "doubleword-batches.zip"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"}
    # Standard library only: the system python with -I -S (no site-packages at all), no venv.
    proc = _run(sys.executable, "-I", "-S", str(REPO / "tools" / "package.py"), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    return out


def test_package_is_reproducible(package: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    proc = _run(sys.executable, "-I", "-S", str(REPO / "tools" / "package.py"), "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(package.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    with zipfile.ZipFile(package) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_package_readme_is_for_skill_users_and_nothing_mentions_what_is_left_out(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        readme = archive.read("doubleword-batches/README.md").decode()
        texts = {n: archive.read(n).decode("utf-8", "replace") for n in names if n.endswith((".md", ".py"))}
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in archive.infolist()}
    assert not any("/tests/" in n or "/emulator/" in n or n.endswith(("Makefile", "/.git")) for n in names)
    assert "pip install -r requirements.txt" in readme and "SKILL.md" in readme
    for name, text in texts.items():
        for word in ("make demo", "make test", "emulator", "pytest"):
            assert word not in text.lower(), f"{name} mentions {word!r}"
    assert modes["doubleword-batches/scripts/submit.py"] == 0o755
    assert modes["doubleword-batches/SKILL.md"] == 0o644


def test_package_refuses_text_that_refers_to_missing_files() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import package as packager  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    files = {
        "SKILL.md": b"# Skill\n## Exit codes\nRun scripts/gone.py; see [x](README.md#nope), `make demo`.\n",
        "README.md": b"# Readme\n[ok](SKILL.md#exit-codes)\n",
    }
    problems = packager.dangling_references(files)
    assert any("scripts/gone.py" in p for p in problems)
    assert any("README.md#nope" in p for p in problems)
    assert any("make demo" in p for p in problems)
    assert not any(p.startswith("README.md") for p in problems)


def test_unpacked_package_passes_skills_ref_validate(package: Path, tmp_path: Path) -> None:
    validator = shutil.which("agentskills") or str(Path(sys.executable).with_name("agentskills"))
    if not Path(validator).exists():
        pytest.skip("skills-ref is not installed (pip install -r requirements-dev.txt)")
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    proc = _run(validator, "validate", str(tmp_path / "doubleword-batches"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["list_models.py", "poll.py", "validate_batch_file.py"])
def test_a_missing_runtime_dependency_ends_as_json_with_exit_3(command: str, tmp_path: Path) -> None:
    """Without requests (imported before main runs) a command died with a bare traceback and no JSON;
    without jsonschema (imported when validating) it was exit 1 'unexpected ModuleNotFoundError'. Now:
    one JSON document naming the package and the pip command, exit 3. (-S: no site-packages.)"""
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    args = {"poll.py": ["0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90"], "validate_batch_file.py": [str(batch)]}
    proc = _run(sys.executable, "-S", str(REPO / "scripts" / command), *args.get(command, []))
    assert proc.returncode == 3, proc.stderr
    error = json.loads(proc.stdout)["error"]
    package = "jsonschema" if command == "validate_batch_file.py" else "requests"
    assert error["type"] == "missing_dependency" and f"'{package}' is not installed" in error["message"]
    assert "-m pip install requests jsonschema" in error["message"] and "Traceback" not in proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1].startswith(f"{command}: failed (exit 3")


@pytest.mark.parametrize(
    ("command", "module"),
    # fetch loads requests only in main (after its first request is out: headstart), its manifest code first
    [("fetch_results.py", "doubleword.manifest"), ("submit.py", "requests"), ("poll.py", "requests")],
)
def test_a_ctrl_c_while_the_modules_load_ends_as_an_interrupt_not_a_traceback(
    tmp_path: Path, command: str, module: str
) -> None:
    """A Ctrl-C in the first ~0.1-0.3 s (the imports, before main installs its handlers) gave a traceback
    and death by SIGINT; now the JSON error of an interrupt, exit 130, nothing written."""
    prelude = (
        "import builtins; real = builtins.__import__\n"
        "def load(name, *a, **k):\n"
        f"    if name == {module!r}: raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = load"
    )
    script = str(REPO / "scripts" / command)
    wrapper = (  # the script run as __main__ after the prelude, its folder first on sys.path (as run directly)
        "import os, runpy, sys; sys.path.insert(0, os.path.dirname(sys.argv[2])); exec(sys.argv[1]); "
        "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    proc = _run(sys.executable, "-c", wrapper, prelude, script, "--help", cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "interrupted" and "before anything was done" in error["message"]
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def _old_python() -> str | None:
    """A Python 3.8 or 3.9 on PATH, or installed beside this one (pyenv's versions/ folder)."""
    beside = sorted(Path(sys.base_prefix).parent.glob("3.[89].*/bin/python"))
    for found in [shutil.which("python3.9"), shutil.which("python3.8"), *map(str, beside)]:
        if found and subprocess.run([found, "-c", "1"], capture_output=True).returncode == 0:
            return found
    return None


def test_a_python_older_than_3_10_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Under Python 3.9 a command died with 'ImportError: cannot import name TypeAlias' (3.8: functools
    has no cache): now the JSON error says which Python it found and that 3.10 is needed, exit 3."""
    old = _old_python()
    if old is None:
        pytest.skip("no Python 3.8 or 3.9 on this machine")
    proc = _run(old, str(REPO / "scripts" / "create_batch_file.py"), "--model", "m", "--prompt", "x",
                "-o", str(tmp_path / "b.jsonl"))  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "unsupported_python" and "need Python 3.10 or newer" in error["message"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "b.jsonl").exists()


def test_a_skill_folder_without_its_references_says_so_not_that_the_input_is_unreadable(
    tmp_path: Path,
    h,  # type: ignore[no-untyped-def]
) -> None:
    """scripts/ copied alone (references/ left behind): the validator cannot load its schemas. That is the
    skill's folder at fault, not the user's file, and the error says which part is missing."""
    shutil.copytree(h.SCRIPTS, tmp_path / "skill" / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    jobs = tmp_path / "jobs.jsonl"
    h.write_jsonl(jobs, h.chat_lines(2))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "skill" / "scripts" / "validate_batch_file.py"), str(jobs)],
        capture_output=True,
        text=True,
        env=h.script_env(None),
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["error"]["type"] == "internal_error", proc.stdout
    message = doc["error"]["message"]
    assert "the skill is incomplete" in message and "references" in message and str(jobs) not in message
