"""fetch's failure_groups advice is right for each kind of failure, over the rounds of a real job against
the emulator (whose sloppy model gives answers that run long: a length limit, whole with a larger
max_tokens, as a real model's would be):

- truncated: resubmit with a --max-tokens of four times the output tokens the cut answers used (at least
  1,024; `suggested_max_tokens`, in the advice too); cut again in two
  rounds (the agent resent without raising it): "maybe", only with a larger limit (it said "no", "fix the
  requests"); resubmitted with a larger --max-tokens, every cut answer comes whole;
- refused by the model (HTTP 400): "no", and "no" again when it fails the same way twice;
- never answered (the batch cancelled), twice in a row: still "yes" (it said "no", "fix the requests").
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

SEED = "3"  # the emulator's: which requests of round 2 fail, and how (a passing 500 among them)

UNSATISFIABLE = {
    "type": "json_schema",
    "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 5, "maximum": 2}},
}


def _lines(h):
    lines = h.chat_lines(40)
    for line in lines:
        line["body"]["max_tokens"] = 256
    lines.append(dict(lines[0], custom_id="tiny", body=dict(lines[0]["body"], max_tokens=2)))
    lines.append(
        dict(lines[1], custom_id="refused", body=dict(lines[1]["body"], response_format=UNSATISFIABLE))
    )
    return lines


def _fetch(h, manifest, env):
    h.poll_wait("--manifest", manifest, env=env, code=None)
    result = h.run_script("fetch_results", "--manifest", manifest, env=env)
    groups = {g["result_status"]: g for g in result.doc["failure_groups"]}
    return result, groups


def test_the_advice_for_cut_off_and_refused_answers_over_three_rounds(tmp_path, h):
    with h.start_emulator("--sloppy-rate", "0.3") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, _lines(h), env)
        result, groups = _fetch(h, job.manifest, env)
        assert result.code == 6, result
        cut = result.doc["counts"]["truncated"]
        assert cut >= 4 and set(groups) == {"truncated", "failed"}, result  # sloppy long answers + tiny
        assert groups["truncated"]["resubmit"] == "yes"
        assert "--max-tokens 1024 " in groups["truncated"]["advice"]
        assert (
            groups["truncated"]["suggested_max_tokens"] == 1024
            and "suggested_max_tokens" not in groups["failed"]
        )
        assert groups["failed"]["status"] == 400 and groups["failed"]["resubmit"] == "no"

        # resent as they were (no larger limit): cut the same way again
        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", job.manifest, env=env)
        assert code == 0 and doc["resubmitted"] == cut + 1, err
        result, groups = _fetch(h, job.manifest, env)
        assert result.code == 6 and result.doc["counts"]["truncated"] == cut, result
        truncated = groups["truncated"]
        assert truncated["persistent"] == truncated["count"] == cut
        assert truncated["resubmit"] == "maybe" and "only with --max-tokens 1024;" in truncated["advice"]
        assert groups["failed"]["resubmit"] == "no" and "same way" in groups["failed"]["advice"]

        # with a larger limit every cut answer comes whole; only the refused request is left
        code, doc, err = h.run_script(
            "submit", "--resubmit", "--manifest", job.manifest, "--max-tokens", "1024", env=env
        )
        assert code == 0 and doc["resubmitted"] == cut + 1, err
        result, groups = _fetch(h, job.manifest, env)
    assert result.code == 6, result
    counts = result.doc["counts"]
    assert (counts["completed"], counts["truncated"], counts["failed"]) == (41, 0, 1), counts
    assert set(groups) == {"failed"}
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    redone = [r for r in results if r["attempts"] == 3 and r["status"] == "completed"]
    assert len(redone) == cut and all(r["finish_reason"] == "stop" for r in redone)
    assert max(r["usage"]["completion_tokens"] for r in redone) > 256  # long answers, now whole


def test_the_named_round_leaves_out_a_refused_request_from_the_first_round_on(tmp_path, h):
    """Cut-off answers beside a request the server refuses (HTTP 400, resubmit "no"): fetch's `next` is
    the round of the cut-off answers with the larger limit, --skip-refused. Run as printed, it resends
    every cut answer and not the refused request, which would only be refused again."""
    with h.start_emulator("--sloppy-rate", "0.3") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, _lines(h), env)
        result, groups = _fetch(h, job.manifest, env)
        cut = result.doc["counts"]["truncated"]
        assert cut > 0 and groups["failed"]["resubmit"] == "no", result
        command = result.doc["next"]
        assert command.endswith("--max-tokens 1024 --skip-refused"), command
        proc = subprocess.run(
            [sys.executable, *shlex.split(command)[1:]], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        sent = [
            line["custom_id"] for line in h.read_jsonl(tmp_path / "jobs.jsonl.rounds" / "round-002.jsonl")
        ]
        assert len(sent) == cut and "refused" not in sent and "tiny" in sent
        result, groups = _fetch(h, job.manifest, env)
    assert set(groups) == {"failed"} and result.doc["counts"]["truncated"] == 0, result.doc
    assert "next" not in result.doc  # only the refused request is left: no round is worth it


def test_requests_never_answered_twice_are_still_worth_resubmitting(tmp_path, h):
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        emu.configure(paused=True)
        job = h.submit_lines(tmp_path, h.chat_lines(5), env)
        for round_ in (1, 2):
            code, _, err = h.run_script("cancel_batch", "--manifest", job.manifest, env=env)
            assert code == 0, err
            result, groups = _fetch(h, job.manifest, env)
            assert result.code == 6 and result.doc["counts"]["missing"] == 5, result
            missing = groups["missing"]
            assert missing["persistent"] == (5 if round_ == 2 else 0)
            assert missing["resubmit"] == "yes", missing
            if round_ == 1:
                code, _, err = h.run_script("submit", "--resubmit", "--manifest", job.manifest, env=env)
                assert code == 0, err


def labelling_lines(h, n: int) -> list[dict]:
    """n chat requests asking for a JSON object with a label (structured output, room to answer)."""
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    lines = h.chat_lines(n)
    for line in lines:
        line["body"]["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema},
        }
        line["body"]["max_tokens"] = 4000
    return lines


def test_answers_invalid_twice_are_resent_with_added_instructions(tmp_path, h):
    """The audit's reviews job: answers that broke the JSON schema twice (the same prompt gets the same
    answer) got 'fix the requests' and nothing to do it with. Their advice names --system, and
    `--resubmit --only invalid --system TEXT` resends just those, with the text after their own system
    prompt; the new answers are judged like any other."""
    lines = labelling_lines(h, 60)
    lines[0]["body"]["messages"].insert(0, {"role": "system", "content": "You label texts."})
    with h.start_emulator("--sloppy-rate", "0.3") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, lines, env)
        _fetch(h, job.manifest, env)
        assert h.run_script("submit", "--resubmit", "--manifest", job.manifest, env=env).code == 0
        result, groups = _fetch(h, job.manifest, env)
        invalid = groups["invalid"]
        assert result.code == 6 and invalid["persistent"] == invalid["count"] >= 3, result
        assert invalid["resubmit"] == "no" and "--only invalid --system" in invalid["advice"]
        assert "next" not in result.doc  # resent as they are, they would fail again

        text = "Reply with the JSON object only."
        code, doc, err = h.run_script(
            "submit", "--resubmit", "--manifest", job.manifest, "--only", "invalid", "--system", text, env=env
        )
        assert code == 0 and doc["resubmitted"] == invalid["count"], doc
        result, groups = _fetch(h, job.manifest, env)
    sent = h.read_jsonl(tmp_path / "jobs.jsonl.rounds" / "round-003.jsonl")
    assert len(sent) == invalid["count"]
    for line in sent:
        first = line["body"]["messages"][0]
        assert first["role"] == "system" and first["content"].endswith(text)
        if line["custom_id"] == "req-00000":
            assert first["content"] == f"You label texts.\n\n{text}"
    assert result.doc["counts"]["invalid"] < invalid["count"], result.doc["counts"]
    results = {r["custom_id"]: r for r in h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")}
    redone = [results[line["custom_id"]] for line in sent]
    assert all(r["attempts"] == 3 for r in redone)
    assert any(r["status"] == "completed" and r["parsed"] for r in redone)


def test_system_goes_with_resubmit_only(tmp_path, h):
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(2))
    code, doc, err = h.run_script(
        "submit", str(src), "--system", "x", env=h.script_env("http://127.0.0.1:9/v1")
    )
    assert code == 2 and "--system" in doc["error"]["message"]


def test_the_named_round_leaves_out_what_failed_the_same_way_twice(tmp_path, h):
    """Following fetch's `next` in the audit resent the same invalid answers in four more rounds (each
    round had one passing failure beside them). When every failure seen twice is in a group not worth
    resending, the named command adds --skip-persistent: run as printed, it resends only the others."""
    lines = labelling_lines(h, 60)
    with h.start_emulator("--sloppy-rate", "0.3", "--seed", SEED) as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, lines, env)
        first, _ = _fetch(h, job.manifest, env)
        invalid = {r["custom_id"] for r in h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
                   if r["status"] == "invalid"}  # fmt: skip
        emu.configure(fail_rate=0.5)  # round 2: some of them fail (500s among them), the rest invalid again
        assert h.run_script("submit", "--resubmit", "--manifest", job.manifest, env=env).code == 0
        result, groups = _fetch(h, job.manifest, env)
        assert result.code == 6 and groups["invalid"]["persistent"] == groups["invalid"]["count"] > 0, result
        assert any(g["resubmit"] == "yes" for g in result.doc["failure_groups"]), result.doc["failure_groups"]
        refused = {r["custom_id"] for r in h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
                   if r["status"] == "failed" and r["error"]["status"] in (400, 422)}  # fmt: skip
        command = result.doc["next"]
        # (the 400s among round 2's failures are left out too: refused, they would be refused again)
        assert command.endswith(f"--manifest {job.manifest} --skip-persistent --skip-refused"), command
        emu.configure(fail_rate=0)  # round 3 without injected failures (round 2 refused some once)
        proc = subprocess.run(
            [sys.executable, *shlex.split(command)[1:]], env=env, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 0, proc.stderr
    again = {r["custom_id"] for r in h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
             if r["status"] == "invalid"}  # fmt: skip
    sent = {line["custom_id"] for line in h.read_jsonl(tmp_path / "jobs.jsonl.rounds" / "round-003.jsonl")}
    assert refused and sent and not sent & (again | refused), (sent, again, refused)
    assert sent | again | refused == invalid, (sent, again, refused, invalid)
    assert json.loads(proc.stdout)["resubmitted"] == len(invalid) - groups["invalid"]["count"] - len(refused)


def test_the_named_round_resends_server_errors_and_not_refusals_of_the_same_status(tmp_path, h):
    """Round 1 ends with 500s (worth a new round) and 400/422 refusals (not), all `failed`: --only cannot
    tell them apart. fetch's `next` adds --skip-refused; run as printed, round 2 is the 500s alone."""
    with h.start_emulator("--fail-rate", "0.3", "--seed", "11", "--retry-base", "0.01") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(60), env)
        result, groups = _fetch(h, job.manifest, env)
        by_status = {g["status"]: g for g in result.doc["failure_groups"]}
        assert {400, 422, 500} <= set(by_status), by_status
        assert [by_status[s]["resubmit"] for s in (400, 422, 500)] == ["no", "no", "yes"]
        command = result.doc["next"]
        assert command.endswith("--skip-refused"), command
        proc = subprocess.run(
            [sys.executable, *shlex.split(command)[1:]], env=env, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 0, proc.stderr
    results = h.read_jsonl(tmp_path / "jobs.results" / "results.jsonl")
    server_errors = {r["custom_id"] for r in results if (r["error"] or {}).get("status") == 500}
    sent = {line["custom_id"] for line in h.read_jsonl(tmp_path / "jobs.jsonl.rounds" / "round-002.jsonl")}
    assert sent == server_errors and json.loads(proc.stdout)["resubmitted"] == by_status[500]["count"]
