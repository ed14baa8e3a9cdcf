"""Issue 6, item 4: bad input to every script gets a clear message, the documented code, no traceback,
and nothing uploaded or overwritten.

Each row of ``CASES`` is one thing a user (or an agent) can get wrong: a malformed or oversized batch
file, a bad flag or flag value, an unknown or malformed batch id, a damaged or hand-edited manifest, an
unusable output path, a missing key or a bad base URL. Every row asserts what the user sees: the exit
code, one JSON document on stdout whose ``error.message`` names the problem (the flag, the file, the
line), no ``Traceback`` on stderr, no file under the test folder created, changed or touched, and no
upload or batch on the emulator (no request at all when the mistake is detectable locally).

``test_server_status`` runs the full list of error statuses from a server (the emulator where it can
produce them, a scripted stdlib server otherwise); the partial-download tests check that a damaged
download on disk is repaired and the results come out identical.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from emulator_server import EmulatorServer
from scripted_server import ScriptedServer, Seen, conftest_module, json_error

UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"


# --------------------------------------------------------------------------- shared state


@pytest.fixture(scope="module")
def emu() -> Any:
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=conftest_module().CANARY_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def finished(emu, tmp_path_factory) -> Path:
    """A folder with a 4-request job in 2 shards, submitted, finished and fetched (copied per case)."""
    t = conftest_module()
    CANARY_KEY, chat_lines, run_script, script_env, write_jsonl = (  # noqa: N806
        t.CANARY_KEY,
        t.chat_lines,
        t.run_script,
        t.script_env,
        t.write_jsonl,
    )
    root = tmp_path_factory.mktemp("finished")
    env = script_env(emu.base_url, CANARY_KEY)
    write_jsonl(root / "jobs.jsonl", chat_lines(4))
    assert run_script("submit", str(root / "jobs.jsonl"), "--max-requests", "2", env=env).code == 0
    manifest = str(root / "jobs.jsonl.manifest.json")
    assert run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.05", env=env).code == 0
    assert run_script("fetch_results", "--manifest", manifest, env=env).code == 0
    return root


def copy_job(src: Path, dst: Path) -> None:
    """Copy a job folder, rewriting the absolute paths recorded in its manifests."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for path in dst.rglob("*manifest.json"):
        path.write_text(path.read_text().replace(str(src), str(dst)))


@dataclass
class Ctx:
    tmp: Path
    emu: EmulatorServer
    env: dict[str, str]
    h: Any
    finished: Path
    vars: dict[str, str] = field(default_factory=dict)

    def job(self) -> Path:
        """The finished job, copied into this case's folder; sets {manifest} and {batch}."""
        copy_job(self.finished, self.tmp)
        manifest = self.tmp / "jobs.jsonl.manifest.json"
        self.vars["manifest"] = str(manifest)
        self.vars["batch"] = json.loads(manifest.read_text())["shards"][0]["batch_id"]
        return manifest

    def edit_manifest(self, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.job()
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def lines(self, name: str, n: int = 3) -> Path:
        return self.h.write_jsonl(self.tmp / name, self.h.chat_lines(n))


def good_line(cid: str = "a") -> str:
    return json.dumps(
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": "hi"}]},
        }
    )


# --------------------------------------------------------------------------- setups


def s_afile(c: Ctx) -> None:
    c.write("afile", "I am a file, not a folder\n")


def s_jobs(c: Ctx) -> None:
    c.lines("jobs.jsonl")


def s_dir(c: Ctx) -> None:
    (c.tmp / "adir").mkdir()
    c.lines("adir/inside.jsonl")


def s_empty(c: Ctx) -> None:
    c.write("empty.jsonl", "")


def s_malformed(c: Ctx) -> None:
    c.write(
        "bad.jsonl",
        good_line("a") + "\n" + '{"custom_id": "b", "method": "POST", broken\n' + good_line("c") + "\n",
    )


def s_dup_ids(c: Ctx) -> None:
    c.write("dup.jsonl", "".join(good_line(cid) + "\n" for cid in ("a", "b", "a")))


def s_long_id(c: Ctx) -> None:
    c.write("long.jsonl", good_line("a") + "\n" + good_line("x" * 65) + "\n")


def s_mixed_urls(c: Ctx) -> None:
    other = json.loads(good_line("b"))
    other["url"] = "/v1/embeddings"
    other["body"] = {"model": "Qwen/Qwen3-Embedding-8B", "input": "x"}
    c.write("mixed.jsonl", good_line("a") + "\n" + json.dumps(other) + "\n")


def s_not_utf8(c: Ctx) -> None:
    c.write("latin1.jsonl", good_line("a").replace("hi", "caf\xe9").encode("latin-1") + b"\n")


def s_big_line(c: Ctx) -> None:
    c.write("big.jsonl", good_line("a").replace("hi", "x" * 3000) + "\n" + good_line("b") + "\n")


def s_too_many(c: Ctx) -> None:
    line = '{"custom_id":"r%d","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"x"}}\n'
    c.write("many.jsonl", "".join(line % i for i in range(50_001)))


def s_changed_input(c: Ctx) -> None:
    c.job()
    with open(c.tmp / "jobs.jsonl", "a") as handle:
        handle.write(good_line("extra") + "\n")


def s_shard_gone(c: Ctx) -> None:
    """A submit refused by the server (401) left planned shards; then a shard file is deleted."""
    c.lines("jobs.jsonl", 4)
    env = c.h.script_env(c.emu.base_url, "sk-wrong-key-1234")
    assert c.h.run_script("submit", str(c.tmp / "jobs.jsonl"), "--max-requests", "2", env=env).code == 3
    shard = json.loads((c.tmp / "jobs.jsonl.manifest.json").read_text())["shards"][1]
    assert shard["upload_state"] == "pending"
    Path(shard["path"]).unlink()
    c.vars["shard"] = shard["path"]


def s_truncated_manifest(c: Ctx) -> None:
    path = c.job()
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def m_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Ctx], None]:
    return lambda c: c.edit_manifest(change)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return change


DELETE = object()


def s_job(c: Ctx) -> None:
    c.job()


def s_other_results(c: Ctx) -> None:
    """--out already holds the downloads of another batch."""
    c.job()
    c.vars["other"] = json.loads((c.tmp / "jobs.jsonl.manifest.json").read_text())["shards"][1]["batch_id"]
    env = c.env
    out = c.tmp / "by-id"
    assert c.h.run_script("fetch_results", c.vars["batch"], "--out", str(out), env=env).code == 0


def e_no_key(c: Ctx) -> dict[str, str]:
    env = dict(c.env)
    env.pop("DOUBLEWORD_API_KEY")
    return env


def e_base(url: str) -> Callable[[Ctx], dict[str, str]]:
    return lambda c: {**c.env, "DOUBLEWORD_BASE_URL": url}


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    script: str
    args: tuple[str, ...]
    code: int
    mentions: tuple[str, ...]  # each must appear in error.message (after {var} substitution)
    setup: Callable[[Ctx], None] | None = None
    env: Callable[[Ctx], dict[str, str]] | None = None
    network: str = "none"  # none: no request reaches the emulator; read: requests, but nothing created


def C(id, script, args, code, mentions, setup=None, env=None, network="none"):  # noqa: N802, A002
    return pytest.param(Case(id, script, tuple(args), code, tuple(mentions), setup, env, network), id=id)


M = "{manifest}"
CASES = [
    # create_batch_file
    C("create-no-args", "create_batch_file", [], 2, ["--model", "--output"]),
    C(
        "create-bad-temperature",
        "create_batch_file",
        ["--model", "m", "--prompt", "x", "--temperature", "hot", "-o", "{tmp}/o.jsonl"],
        2,
        ["--temperature", "hot"],
    ),
    C(
        "create-out-under-a-file",
        "create_batch_file",
        ["--model", "m", "--prompt", "x", "-o", "{tmp}/afile/o.jsonl"],
        4,
        ["afile"],
        s_afile,
    ),
    C(
        "create-prompts-missing",
        "create_batch_file",
        ["--model", "m", "--prompts", "{tmp}/nope.txt", "-o", "{tmp}/o.jsonl"],
        4,
        ["nope.txt"],
    ),
    C(
        "create-prompts-directory",
        "create_batch_file",
        ["--model", "m", "--prompts", "{tmp}/adir", "-o", "{tmp}/o.jsonl"],
        4,
        ["adir"],
        s_dir,
    ),
    # validate_batch_file
    C("validate-no-args", "validate_batch_file", [], 2, ["FILE"]),
    C("validate-missing-file", "validate_batch_file", ["{tmp}/nope.jsonl"], 4, ["nope.jsonl"]),
    C("validate-directory", "validate_batch_file", ["{tmp}/adir"], 4, ["adir", "directory"], s_dir),
    C("validate-empty-file", "validate_batch_file", ["{tmp}/empty.jsonl"], 4, ["empty"], s_empty),
    C(
        "validate-malformed-line",
        "validate_batch_file",
        ["{tmp}/bad.jsonl"],
        4,
        ["line 2", "JSON"],
        s_malformed,
    ),
    C("validate-not-utf8", "validate_batch_file", ["{tmp}/latin1.jsonl"], 4, ["line 1", "UTF-8"], s_not_utf8),
    C("validate-too-many-requests", "validate_batch_file", ["{tmp}/many.jsonl"], 4, ["50,000"], s_too_many),
    C(
        "validate-max-errors-negative",
        "validate_batch_file",
        ["x.jsonl", "--max-errors", "-1"],
        2,
        ["--max-errors"],
    ),
    # submit: flags
    C("submit-no-args", "submit", [], 2, ["FILE"]),
    C("submit-window-2h", "submit", ["{tmp}/jobs.jsonl", "--window", "2h"], 2, ["--window", "2h"], s_jobs),
    C(
        "submit-max-cost-abc",
        "submit",
        ["{tmp}/jobs.jsonl", "--max-cost", "abc"],
        2,
        ["--max-cost", "abc"],
        s_jobs,
    ),
    C(
        "submit-max-cost-negative",
        "submit",
        ["{tmp}/jobs.jsonl", "--max-cost", "-1"],
        2,
        ["--max-cost"],
        s_jobs,
    ),
    C(
        "submit-metadata-novalue",
        "submit",
        ["{tmp}/jobs.jsonl", "--metadata", "novalue"],
        2,
        ["--metadata", "novalue"],
        s_jobs,
    ),
    C("submit-unknown-flag", "submit", ["{tmp}/jobs.jsonl", "--bogus"], 2, ["--bogus"], s_jobs),
    C(
        "submit-max-requests-0",
        "submit",
        ["{tmp}/jobs.jsonl", "--max-requests", "0"],
        2,
        ["--max-requests"],
        s_jobs,
    ),
    # submit: input files
    C("submit-missing-input", "submit", ["{tmp}/nope.jsonl"], 4, ["nope.jsonl", "does not exist"]),
    C("submit-directory", "submit", ["{tmp}/adir"], 4, ["adir", "directory"], s_dir),
    C(
        "submit-empty-file",
        "submit",
        ["{tmp}/empty.jsonl"],
        4,
        ["empty.jsonl", "empty", "nothing was uploaded"],
        s_empty,
    ),
    C(
        "submit-malformed-line",
        "submit",
        ["{tmp}/bad.jsonl"],
        4,
        ["bad.jsonl", "line 2", "JSON"],
        s_malformed,
    ),
    C("submit-duplicate-ids", "submit", ["{tmp}/dup.jsonl"], 4, ["line 3", "duplicate"], s_dup_ids),
    C("submit-id-too-long", "submit", ["{tmp}/long.jsonl"], 4, ["line 2", "64"], s_long_id),
    C("submit-mixed-endpoints", "submit", ["{tmp}/mixed.jsonl"], 4, ["line 2", "url"], s_mixed_urls),
    C(
        "submit-line-bigger-than-shard",
        "submit",
        ["{tmp}/big.jsonl", "--max-bytes", "1024"],
        4,
        ["big.jsonl", "line 1", "1,024"],
        s_big_line,
    ),
    C(
        "submit-input-changed-since-manifest",
        "submit",
        ["{tmp}/jobs.jsonl"],
        4,
        ["changed", "--force"],
        s_changed_input,
    ),
    C(
        "submit-manifest-under-a-file",
        "submit",
        ["{tmp}/jobs.jsonl", "--manifest", "{tmp}/afile/m.json"],
        4,
        ["afile"],
        lambda c: (s_afile(c), s_jobs(c)),
    ),
    C(
        "submit-shard-file-missing",
        "submit",
        ["{tmp}/jobs.jsonl", "--max-requests", "2"],
        4,
        ["{shard}", "missing"],
        s_shard_gone,
        network="read",
    ),
    C(
        "submit-manifest-inputs-wrong-type",
        "submit",
        ["{tmp}/jobs.jsonl"],
        4,
        ["inputs"],
        m_edit(_set("inputs", "jobs.jsonl")),
    ),
    C("submit-manifest-no-shards", "submit", ["{tmp}/jobs.jsonl"], 4, ["shards"], m_edit(_set("shards", []))),
    C(
        "submit-manifest-shard-without-marker",
        "submit",
        ["{tmp}/jobs.jsonl"],
        4,
        ["shards[0].marker"],
        m_edit(lambda d: d["shards"][0].update(create_state="pending", batch_id=None, marker=None)),
    ),
    # configuration
    C("submit-no-api-key", "submit", ["{tmp}/jobs.jsonl"], 3, ["DOUBLEWORD_API_KEY"], s_jobs, e_no_key),
    C(
        "submit-plain-http-remote",
        "submit",
        ["{tmp}/jobs.jsonl", "--base-url", "http://example.invalid/v1"],
        3,
        ["example.invalid", "--allow-insecure"],
        s_jobs,
    ),
    C(
        "list-127-lookalike-host",
        "list_batches",
        ["--base-url", "http://127.0.0.1.nip.io/v1"],
        3,
        ["127.0.0.1.nip.io", "--allow-insecure"],
    ),
    C(
        "list-base-url-not-http",
        "list_batches",
        [],
        3,
        ["ftp://", "DOUBLEWORD_BASE_URL"],
        None,
        e_base("ftp://example.com/v1"),
    ),
    C(
        "list-base-url-unparsable",
        "list_batches",
        ["--base-url", "http://[::1/v1"],
        3,
        ["[::1", "--base-url"],
    ),
    C("list-base-url-bad-port", "list_batches", ["--base-url", "http://127.0.0.1:99999/v1"], 3, ["99999"]),
    # list_batches flags
    C("list-limit-0", "list_batches", ["--limit", "0"], 2, ["--limit"]),
    C("list-limit-abc", "list_batches", ["--limit", "abc"], 2, ["--limit", "abc"]),
    C("list-status-bogus", "list_batches", ["--status", "bogus"], 2, ["--status", "bogus"]),
    # poll
    C("poll-no-args", "poll", [], 2, ["batch id", "--manifest"]),
    C("poll-timeout-negative", "poll", [UNKNOWN_UUID, "--wait", "--timeout", "-1"], 2, ["--timeout", "-1"]),
    C("poll-timeout-nan", "poll", [UNKNOWN_UUID, "--wait", "--timeout", "nan"], 2, ["--timeout", "nan"]),
    C("poll-interval-zero", "poll", [UNKNOWN_UUID, "--wait", "--interval", "0"], 2, ["--interval"]),
    C("poll-ids-and-manifest", "poll", [UNKNOWN_UUID, "--manifest", "m.json"], 2, ["--manifest"]),
    C("poll-unknown-id-404", "poll", [UNKNOWN_UUID], 4, [UNKNOWN_UUID, "404", "not found"], network="read"),
    C("poll-malformed-id-400", "poll", ["not-a-batch-id"], 4, ["not-a-batch-id", "400"], network="read"),
    C("poll-manifest-missing", "poll", ["--manifest", "{tmp}/nope.json"], 4, ["nope.json", "does not exist"]),
    C("poll-manifest-truncated", "poll", ["--manifest", M], 4, ["{manifest}", "JSON"], s_truncated_manifest),
    C(
        "poll-manifest-wrong-version",
        "poll",
        ["--manifest", M],
        4,
        ["version", "99"],
        m_edit(_set("version", 99)),
    ),
    C(
        "poll-manifest-shards-missing",
        "poll",
        ["--manifest", M],
        4,
        ["shards"],
        m_edit(_set("shards", DELETE)),
    ),
    C(
        "poll-manifest-batch-id-number",
        "poll",
        ["--manifest", M],
        4,
        ["shards[0].batch_id"],
        m_edit(_set("shards.0.batch_id", 12345)),
    ),
    C(
        "poll-manifest-state-bogus",
        "poll",
        ["--manifest", M],
        4,
        ["shards[1].create_state", "finished"],
        m_edit(_set("shards.1.create_state", "finished")),
    ),
    C(
        "poll-manifest-times-list",
        "poll",
        ["--manifest", M],
        4,
        ["shards[0].times"],
        m_edit(_set("shards.0.times", [])),
    ),
    C(
        "poll-manifest-is-a-list",
        "poll",
        ["--manifest", M],
        4,
        ["not a JSON object"],
        lambda c: c.job().write_text("[]"),
    ),
    # cancel_batch
    C("cancel-no-args", "cancel_batch", [], 2, ["batch id"]),
    C("cancel-unknown-flag", "cancel_batch", [UNKNOWN_UUID, "--now"], 2, ["--now"]),
    C(
        "cancel-unknown-id-404",
        "cancel_batch",
        [UNKNOWN_UUID],
        4,
        [UNKNOWN_UUID, "not found"],
        network="read",
    ),
    C(
        "cancel-manifest-no-batches",
        "cancel_batch",
        ["--manifest", M],
        4,
        ["no batches", "submit.py"],
        m_edit(
            lambda d: d["shards"].__setitem__(
                slice(None), [{**s, "create_state": "pending", "batch_id": None} for s in d["shards"]]
            )
        ),
    ),
    C(
        "cancel-finished-batch",
        "cancel_batch",
        ["{batch}"],
        4,
        ["{batch}", "completed", "--force"],
        s_job,
        network="read",
    ),
    # fetch_results
    C("fetch-no-args", "fetch_results", [], 2, ["batch id"]),
    C("fetch-page-size-500", "fetch_results", [UNKNOWN_UUID, "--page-size", "500"], 2, ["--page-size"]),
    C("fetch-timeout-negative", "fetch_results", [UNKNOWN_UUID, "--timeout", "-1"], 2, ["--timeout"]),
    C("fetch-interval-inf", "fetch_results", [UNKNOWN_UUID, "--interval", "inf"], 2, ["--interval", "inf"]),
    C(
        "fetch-unknown-id-404",
        "fetch_results",
        [UNKNOWN_UUID, "--out", "{tmp}/res"],
        4,
        [UNKNOWN_UUID, "404"],
        network="read",
    ),
    C(
        "fetch-out-under-a-file",
        "fetch_results",
        ["--manifest", M, "--out", "{tmp}/afile/sub"],
        4,
        ["afile"],
        lambda c: (c.job(), s_afile(c)),
        network="read",
    ),
    C(
        "fetch-id-out-is-a-file",
        "fetch_results",
        ["{batch}", "--out", "{tmp}/afile"],
        4,
        ["afile"],
        lambda c: (c.job(), s_afile(c)),
        network="read",
    ),
    C(
        "fetch-out-holds-other-batch",
        "fetch_results",
        ["{other}", "--out", "{tmp}/by-id"],
        4,
        ["{batch}", "--out"],
        s_other_results,
    ),
    C(
        "fetch-manifest-cursor-string",
        "fetch_results",
        ["--manifest", M],
        4,
        ["downloads.output"],
        m_edit(_set("shards.0.downloads.output.skip", "ten")),
    ),
    C(
        "fetch-manifest-negative-bytes",
        "fetch_results",
        ["--manifest", M],
        4,
        ["fetch.files.output"],
        m_edit(_set("fetch.files.output.bytes", -5)),
    ),
    C(
        "fetch-manifest-out-dir-number",
        "fetch_results",
        ["--manifest", M],
        4,
        ["fetch.out_dir"],
        m_edit(_set("fetch.out_dir", 7)),
    ),
]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def check_failure(result: Any, code: int, mentions: list[str] | tuple[str, ...] = ()) -> str:
    """The documented code, one JSON document with a clear error.message naming the problem, no traceback."""
    assert result.code == code, result
    assert isinstance(result.doc, dict) and result.doc.get("ok") is False, result
    message = result.doc.get("error", {}).get("message")
    assert isinstance(message, str) and len(message) >= 15, result
    for word in mentions:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout
    assert "error" in result.stderr.lower(), "a human-readable error on stderr too"
    return message


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, emu, finished, tmp_path, h) -> None:
    ctx = Ctx(tmp_path, emu, h.script_env(emu.base_url), h, finished, {"tmp": str(tmp_path)})
    if case.setup is not None:
        case.setup(ctx)
    env = case.env(ctx) if case.env is not None else ctx.env
    args = [a.format(**ctx.vars) for a in case.args]
    before_files = snapshot(tmp_path)
    before_dirs = [p for p in tmp_path.rglob("*") if p.is_dir()]
    before_stats = emu.stats()
    before_calls = len(emu.requests_log())
    time.sleep(0.01)  # a rewrite within the same clock tick would keep the mtime

    result = h.run_script(case.script, *args, env=env, cwd=tmp_path)

    check_failure(result, case.code, [m.format(**ctx.vars) for m in case.mentions])
    after_files = snapshot(tmp_path)
    after_dirs = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert sorted(after_files) == sorted(before_files), "files were created or removed"
    assert sorted(after_dirs) == sorted(before_dirs), "folders were created or removed"
    changed = [name for name in before_files if after_files[name] != before_files[name]]
    assert not changed, f"files were rewritten: {changed}"
    stats = emu.stats()
    assert stats["files_created"] == before_stats["files_created"], "something was uploaded"
    assert stats["batches_created"] == before_stats["batches_created"], "a batch was created"
    if case.network == "none":
        assert len(emu.requests_log()) == before_calls, "a request was sent for a locally detectable mistake"


def test_case_count() -> None:
    scripts = {p.values[0].script for p in CASES}
    assert len(CASES) >= 30 and len(scripts) == 7


# --------------------------------------------------------------------------- server error statuses


def _statuses_router(
    status: int, body_kind: str, on: str
) -> Callable[[Seen], tuple[int, dict[str, str], Any]]:
    """Answer ``on`` (a method+path prefix) with ``status``; everything else like a healthy server."""
    message = f"scripted failure {status}"

    def reply(seen: Seen) -> tuple[int, dict[str, str], Any]:
        if f"{seen.method} {seen.path}".startswith(on):
            headers = {"Retry-After": "0"} if status in (429, 500, 502, 503, 504) else {}
            if body_kind == "json":
                code, extra, body = json_error(status, message)
                return code, {**extra, **headers}, body
            return status, headers, message
        if seen.path == "/v1/files" and seen.method == "POST":
            upload = {"id": "file-1", "object": "file", "filename": "x.jsonl", "purpose": "batch"}
            return 200, {"Content-Type": "application/json"}, json.dumps(upload)
        if seen.path.startswith("/v1/files") and seen.method == "GET":
            return (
                200,
                {"Content-Type": "application/json"},
                '{"object": "list", "data": [], "has_more": false}',
            )
        if seen.path.startswith("/v1/batches/") and seen.method == "GET":
            batch = {"id": seen.path.rsplit("/", 1)[1], "status": "in_progress", "request_counts": {}}
            return 200, {"Content-Type": "application/json"}, json.dumps(batch)
        return 200, {"Content-Type": "application/json"}, '{"object": "list", "data": [], "has_more": false}'

    return reply


# (status, script, args, the calls answered with it, body kind, exit code, how many such calls are made)
STATUS_CASES = [
    (400, "list_batches", [], "GET /v1/batches", "text", 4, 1),
    (401, "poll", [UNKNOWN_UUID], "GET /v1/batches", "json", 3, 1),
    (402, "submit", ["{jobs}"], "POST /v1/files", "text", 3, 1),
    (403, "cancel_batch", [UNKNOWN_UUID], "GET /v1/batches", "json", 3, 1),
    (404, "fetch_results", [UNKNOWN_UUID, "--out", "{tmp}/res"], "GET /v1/batches", "text", 4, 1),
    (409, "cancel_batch", [UNKNOWN_UUID], "POST /v1/batches", "json", 4, 1),
    (413, "submit", ["{jobs}"], "POST /v1/files", "text", 4, 1),
    (415, "submit", ["{jobs}"], "POST /v1/files", "json", 4, 1),
    (422, "submit", ["{jobs}"], "POST /v1/batches", "json", 4, 1),
    (429, "list_batches", [], "GET /v1/batches", "json", 5, 7),
    (500, "poll", [UNKNOWN_UUID], "GET /v1/batches", "text", 5, 7),
    (502, "list_batches", ["--all"], "GET /v1/batches", "text", 5, 7),
    (503, "fetch_results", [UNKNOWN_UUID, "--out", "{tmp}/res"], "GET /v1/batches", "json", 5, 7),
    (504, "cancel_batch", [UNKNOWN_UUID], "GET /v1/batches", "text", 5, 7),
]


@pytest.mark.parametrize(
    "status,script,args,on,body_kind,code,calls", STATUS_CASES, ids=[f"{c[0]}-{c[1]}" for c in STATUS_CASES]
)
def test_server_status(status, script, args, on, body_kind, code, calls, tmp_path, h) -> None:
    jobs = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    with ScriptedServer(_statuses_router(status, body_kind, on)) as server:
        env = h.script_env(server.base_url)
        argv = [a.format(tmp=tmp_path, jobs=jobs) for a in args]
        result = h.run_script(script, *argv, env=env, cwd=tmp_path)
    message = check_failure(result, code, [str(status), f"scripted failure {status}"])
    if code == 5:
        assert "gave up" in message or "attempts" in message, message
    hits = [s for s in server.seen if f"{s.method} {s.path}".startswith(on)]
    assert len(hits) == calls, [f"{s.method} {s.path}" for s in server.seen]  # retried only when transient
    creates = [s for s in server.seen if s.method == "POST" and s.path in ("/v1/files", "/v1/batches")]
    assert len(creates) <= 1 + (on == "POST /v1/batches"), "a refused create was not sent again"
    assert not (tmp_path / "res").exists(), "nothing is written for a batch the server refused"
    if script == "submit":  # the manifest says nothing was created, so a re-run starts cleanly
        shard = json.loads((tmp_path / "jobs.jsonl.manifest.json").read_text())["shards"][0]
        assert shard["create_state"] == "pending" and shard["batch_id"] is None
        if on == "POST /v1/files":
            assert shard["upload_state"] == "pending" and shard["file_id"] is None


def test_emulator_statuses(emu, tmp_path, h) -> None:
    """The statuses the emulator produces itself: 401 (a key it refuses), 402 (balance), 404, 400."""
    jobs = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
    refused = h.run_script("list_batches", env=h.script_env(emu.base_url, "sk-not-the-right-key"))
    check_failure(refused, 3, ["401", "DOUBLEWORD_API_KEY"])

    before = emu.stats()
    emu.configure(batch_create_error="balance")
    try:
        result = h.run_script("submit", str(jobs), env=h.script_env(emu.base_url), cwd=tmp_path)
    finally:
        emu.configure(batch_create_error=None)
    check_failure(result, 3, ["402", "balance"])
    assert emu.stats()["batches_created"] == before["batches_created"]
    shard = json.loads((tmp_path / "jobs.jsonl.manifest.json").read_text())["shards"][0]
    assert shard["upload_state"] == "done" and shard["create_state"] == "pending"
    # once the balance is topped up, the same command creates the batch, reusing the upload
    again = h.run_script("submit", str(jobs), env=h.script_env(emu.base_url), cwd=tmp_path)
    assert again.code == 0 and again.doc["created"] == 1
    after = emu.stats()
    assert after["files_created"] == before["files_created"] + 1
    assert after["batches_created"] == before["batches_created"] + 1


# --------------------------------------------------------------------------- damaged downloads on disk


def _fetch(h, env, manifest: Path) -> Any:
    return h.run_script("fetch_results", "--manifest", str(manifest), env=env)


@pytest.mark.parametrize("damage", ["cut-mid-line", "longer-than-cursor", "garbage-tail", "deleted"])
def test_damaged_download_is_repaired(damage, emu, finished, tmp_path, h) -> None:
    copy_job(finished, tmp_path)
    manifest = tmp_path / "jobs.jsonl.manifest.json"
    out = tmp_path / "jobs.results"
    expected = {name: (out / name).read_bytes() for name in ("output.jsonl", "results.jsonl", "retry.jsonl")}
    output = out / "output.jsonl"
    data = output.read_bytes()
    if damage == "cut-mid-line":  # the file lost its end (half a line left)
        output.write_bytes(data[: len(data) // 2 + 7])
    elif damage == "longer-than-cursor":  # a killed run appended a line its cursor never recorded
        first = data.split(b"\n", 1)[0]
        output.write_bytes(data + first + b"\n" + first[:40])
    elif damage == "garbage-tail":
        output.write_bytes(data + b'{"id": "batch_req_half", "custom_id": "req-0')
    else:
        output.unlink()
    result = _fetch(h, h.script_env(emu.base_url), manifest)
    assert result.code == 0, result
    assert result.doc["complete"] is True and result.doc["counts"]["completed"] == 4
    assert "Traceback" not in result.stderr
    for name, content in expected.items():
        if name == "output.jsonl":  # raw lines as served: two batches download at once, so they interleave
            assert sorted((out / name).read_bytes().splitlines()) == sorted(content.splitlines()), name
        else:
            assert (out / name).read_bytes() == content, name
