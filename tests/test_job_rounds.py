"""A job is done when every input has an answer: submit, poll, fetch and --resubmit rounds, end to end.

Everything runs as an agent would run it (scripts as subprocesses against the emulator with failing
requests) and is checked where a user would look: exit codes, stdout JSON, files on disk, and what the
server received (every uploaded file's content, read back from the server).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from emulator_server import EmulatorServer


def _server_inputs(emu: EmulatorServer) -> tuple[Counter[str], list[dict[str, Any]]]:
    """custom_id -> how many times the server was sent it (over every uploaded batch file); the batches."""
    get = lambda path, **params: requests.get(  # noqa: E731
        f"{emu.base_url}/{path}", headers=emu.headers, params=params, timeout=30
    )
    sent: Counter[str] = Counter()
    for file in get("files", limit=100).json()["data"]:
        if file.get("purpose") != "batch":
            continue
        for line in get(f"files/{file['id']}/content").text.splitlines():
            if line.strip():
                sent[json.loads(line)["custom_id"]] += 1
    return sent, get("batches", limit=100).json()["data"]


def _unanswered(results: Path) -> set[str]:
    """Inputs with no completed answer on any line (whether results.jsonl has a line per input or per request)."""
    records = [json.loads(line) for line in results.read_text().splitlines()]
    answered = {r["custom_id"] for r in records if r["status"] == "completed"}
    return {r["custom_id"] for r in records} - answered


def _refused(results: Path) -> dict[str, int]:
    """custom_id -> HTTP status of the inputs whose (best) line is a 400 or 422 refusal."""
    return {
        r["custom_id"]: r["error"]["status"]
        for r in map(json.loads, results.read_text().splitlines())
        if r["status"] == "failed" and (r.get("error") or {}).get("status") in (400, 422)
    }


def test_rounds_until_only_the_refused_inputs_are_left(tmp_path, h):
    """--fail-rate's 500s pass when resent; its 400/422 are the requests' own (a real server refuses the
    same request again), so the rounds end when only those are left, each refused the same way in every
    round, and the tool says resending them does not help."""
    with h.start_emulator("--fail-rate", "0.1", "--seed", "5") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(300), env)
        manifest = Path(job.manifest)
        assert manifest.is_absolute() and manifest == (tmp_path / "jobs.jsonl.manifest.json").resolve()
        expected: Counter[str] = Counter(line["custom_id"] for line in job.lines)

        rounds, refused = 1, None
        while True:
            code, poll, err = h.poll_wait("--manifest", str(manifest), env=env, code=None)
            code_f, fetch, err_f = h.run_script("fetch_results", "--manifest", str(manifest), env=env)
            results = Path(fetch["files"]["results"])
            assert results.is_absolute()
            missing = _unanswered(results)
            assert code == 6, poll  # finished, but requests of the job failed
            if refused is None:
                refused = _refused(results)
                assert refused and refused.keys() < missing, (refused, missing)  # some 500s beside them
            else:
                assert _refused(results) == refused  # refused again, with the same status
            if rounds > 1 and missing == refused.keys():
                break
            assert rounds < 6, "too many rounds"
            emu.configure(paused=True)  # the round stays running until the refusal below is checked
            code, res, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
            assert code == 0, err
            assert res["resubmitted"] == len(missing) and res["round"] == rounds + 1, res
            expected.update(missing)
            rounds += 1
            # a second --resubmit while the round runs is refused and sends nothing
            before = emu.stats()
            code, again, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
            assert code == 7 and again["error"]["type"] == "not_finished", again
            after = emu.stats()
            assert (after["files_created"], after["batches_created"]) == (
                before["files_created"],
                before["batches_created"],
            )
            emu.configure(paused=False)

        sent, batches = _server_inputs(emu)
        assert sent == expected  # the first round's requests plus each round's unanswered ones, once each
        data = json.loads(manifest.read_text())
        assert [r["number"] for r in data["rounds"]] == list(range(1, rounds + 1))
        job = {b["metadata"]["dwb_job"] for b in batches}
        assert job == {data["job_id"]}
        assert sorted(int(b["metadata"]["dwb_round"]) for b in batches) == list(range(1, rounds + 1))

        # what is left failed the same way in the last two rounds: fetch advises no new round
        groups = fetch["failure_groups"]
        assert {g["status"] for g in groups} <= {400, 422} and sum(g["count"] for g in groups) == len(refused)
        assert all(g["persistent"] == g["count"] and g["resubmit"] == "no" for g in groups), groups
        assert "next" not in fetch, fetch
        # and --skip-persistent leaves them out: nothing is sent
        before = emu.stats()
        code, done, err = h.run_script(
            "submit", "--resubmit", "--manifest", str(manifest), "--skip-persistent", env=env
        )
        assert code == 6 and done["resubmitted"] == 0 and done["complete"] is False, done
        assert done["error"]["type"] == "nothing_to_resubmit", done
        assert emu.stats()["batches_created"] == before["batches_created"]
        assert len(data["rounds"]) == len(json.loads(manifest.read_text())["rounds"])

        # an agent coming back later from another folder, with the variable pointing elsewhere
        other = tmp_path / "elsewhere"
        other.mkdir()
        elsewhere = h.script_env("http://127.0.0.1:9/v1")
        code, poll, err = h.run_script("poll", "--manifest", str(manifest), env=elsewhere, cwd=other)
        assert code == 6, err  # finished, the refused inputs without an answer
        assert "DOUBLEWORD_BASE_URL" in err and emu.base_url in err  # a warning, not a failure


def test_final_results_hold_one_line_per_original_input_with_attempts(tmp_path, h):
    with h.start_emulator("--fail-rate", "0.1", "--seed", "5") as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(200)
        manifest = h.submit_lines(tmp_path, lines, env).manifest
        refused = None
        for rounds in range(1, 7):
            h.poll_wait("--manifest", manifest, env=env, code=None)
            code, fetch, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
            assert code == 6 and fetch["complete"] is False, fetch
            results = Path(fetch["files"]["results"])
            if refused is None:
                refused = _refused(results)  # refused for themselves: never answered, however often sent
            if rounds > 1 and _unanswered(results) == refused.keys():
                break
            assert h.run_script("submit", "--resubmit", "--manifest", manifest, env=env).code == 0
        assert rounds > 1 and refused, (rounds, refused)
        # the final results: one line per original input, in input order, attempts counted
        final = [json.loads(line) for line in results.read_text().splitlines()]
        assert [r["custom_id"] for r in final] == [line["custom_id"] for line in lines]
        assert all(r["status"] == "completed" for r in final if r["custom_id"] not in refused)
        assert any(r.get("attempts", 1) > 1 for r in final if r["status"] == "completed")
        for r in final:
            if r["custom_id"] in refused:  # sent in every round, refused the same way each time
                assert r["status"] == "failed" and r["attempts"] == rounds, r
                assert r["error"]["status"] == refused[r["custom_id"]], r


def test_resubmit_dry_run_sends_nothing_and_a_round_can_be_narrowed_and_adjusted(tmp_path, h):
    """Cut-off answers resent alone with a larger budget: --only truncated --max-tokens."""
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(6)
        for line in lines[:2]:  # these two are cut off at 1 token
            line["body"]["max_tokens"] = 1
        manifest = h.submit_lines(tmp_path, lines, env).manifest
        h.poll_wait("--manifest", manifest, env=env)
        before = emu.stats()["batches_created"]
        code, plan, err = h.run_script("submit", "--resubmit", "--manifest", manifest, "--dry-run", env=env)
        assert code == 0 and plan["dry_run"] and plan["would_resubmit"] == 2, plan
        assert plan["by_status"] == {"truncated": 2}
        assert (
            emu.stats()["batches_created"] == before
            and len(json.loads(Path(manifest).read_text())["rounds"]) == 1
        )
        code, none, err = h.run_script(
            "submit", "--resubmit", "--manifest", manifest, "--only", "failed", env=env
        )
        assert code == 6 and none["resubmitted"] == 0 and none["error"]["type"] == "nothing_to_resubmit", none
        args = ("--resubmit", "--manifest", manifest, "--only", "truncated", "--max-tokens", "64")
        code, res, err = h.run_script("submit", *args, env=env)
        assert code == 0 and res["resubmitted"] == 2 and res["round"] == 2, res
        data = json.loads(Path(manifest).read_text())
        assert data["rounds"][1]["adjust"] == {"max_tokens": 64} and data["rounds"][1]["statuses"] == [
            "truncated"
        ]
        sent = [json.loads(x) for x in Path(data["rounds"][1]["source"]).read_text().splitlines()]
        assert [s["custom_id"] for s in sent] == [line["custom_id"] for line in lines[:2]]
        assert all(s["body"]["max_tokens"] == 64 for s in sent)
        h.poll_wait("--manifest", manifest, env=env)


def test_resubmit_sends_the_original_lines_even_when_the_input_file_is_gone(tmp_path, h):
    """The round is built from the engine's retry.jsonl (the server's copy of round 1), not the local file."""
    with h.start_emulator("--fail-rate", "0.3", "--seed", "3") as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(40)
        job = h.submit_lines(tmp_path, lines, env)
        manifest = job.manifest
        h.poll_wait("--manifest", manifest, env=env, code=6)  # finished, some requests failed
        job.src.unlink()
        code, res, err = h.run_script("submit", "--resubmit", "--manifest", manifest, env=env)
        assert code == 0 and res["resubmitted"] > 0, res
        data = json.loads(Path(manifest).read_text())
        sent = [json.loads(x) for x in Path(data["rounds"][1]["source"]).read_text().splitlines()]
        originals = {line["custom_id"]: line for line in lines}
        assert sent and all(s == originals[s["custom_id"]] for s in sent)


def test_a_rounds_changes_carry_into_later_rounds(tmp_path, h):
    """Round 2 raised max_tokens and added instructions; an input still without an answer is resent in
    round 3 as round 2 sent it (not as the original, whose limit cut it in round 1), and the same
    --system given again is not added twice."""

    def server_lines(emu: EmulatorServer, data: dict[str, Any], number: int) -> list[dict[str, Any]]:
        (shard,) = [s for s in data["shards"] if s["round"] == number]
        url = f"{emu.base_url}/files/{shard['file_id']}/content"
        text = requests.get(url, headers=emu.headers, timeout=30).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(4)
        for line in lines:
            line["body"]["max_tokens"] = 1  # cut off in every round below: each is resent
        manifest = h.submit_lines(tmp_path, lines, env).manifest
        text = "Answer in one word."
        rounds = [("--max-tokens", "2", "--system", text), (), ("--system", text)]
        for extra in rounds:
            h.poll_wait("--manifest", manifest, env=env)
            code, doc, err = h.run_script("submit", "--resubmit", "--manifest", manifest, *extra, env=env)
            assert code == 0 and doc["resubmitted"] == 4, (extra, doc, err)
        h.poll_wait("--manifest", manifest, env=env)
        data = json.loads(Path(manifest).read_text())
        for number in (2, 3, 4):
            sent = server_lines(emu, data, number)
            assert sorted(s["custom_id"] for s in sent) == sorted(line["custom_id"] for line in lines)
            for s in sent:
                assert s["body"]["max_tokens"] == 2, (number, s)
                assert s["body"]["messages"][0] == {"role": "system", "content": text}, (number, s)
                assert s["body"]["messages"][1:] == next(
                    line["body"]["messages"] for line in lines if line["custom_id"] == s["custom_id"]
                )
