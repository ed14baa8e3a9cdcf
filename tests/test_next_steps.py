"""What the scripts say to run next matches SKILL.md's workflow (create, submit, fetch --export; resubmit,
fetch): submit's and --resubmit's stdout `next` and their closing line on stderr name the fetch with the
export (SKILL.md step 4: the check), and a --resubmit refused while the job runs names the same command.
The command given is run as it is printed, from another folder."""

from __future__ import annotations

import csv
import json
import shlex
import sys


def _run_next(command: str, cwd, env):
    """Run a printed ``next`` command as given (with this test's Python for ``python3``)."""
    import subprocess

    argv = shlex.split(command)
    assert argv[0] == "python3", command
    return subprocess.run(
        [sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_submit_and_resubmit_say_to_check_with_fetch_and_its_export(tmp_path, h):
    with h.start_emulator("--fail-rate", "0.3", "--seed", "3") as emu:
        env = h.script_env(emu.base_url)
        emu.configure(paused=True)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(20))
        code, doc, err = h.run_script("submit", str(src), env=env)
        assert code == 0, err
        manifest = doc["manifest"]
        # the job's own export beside its manifest (absolute: the same file from any folder)
        export = tmp_path / "jobs.answers.csv"
        fetch = f"python3 {h.SCRIPTS / 'fetch_results.py'} --manifest {manifest} --export {export}"
        assert doc["next"] == fetch
        assert f"check later: {fetch}" in err and "poll.py" not in err

        # a resubmit while the round runs: exit 7, nothing sent, and the check it names is the same fetch
        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", manifest, env=env)
        assert code == 7, err
        assert fetch in doc["error"]["message"] and "poll.py" not in doc["error"]["message"]

        emu.configure(paused=False)
        h.poll_wait("--manifest", manifest, env=env, code=6)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        proc = _run_next(fetch, elsewhere, env)
        assert proc.returncode == 6, proc.stderr  # some requests failed: resubmit
        assert len(export.read_text(encoding="utf-8-sig").splitlines()) == 21
        assert not list(elsewhere.iterdir())

        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", manifest, env=env)
        assert code == 0 and doc["round"] == 2 and doc["resubmitted"] > 0, err
        assert doc["next"] == fetch
        assert f"check later: {fetch}" in err and "poll.py" not in err


def test_an_embeddings_job_is_told_to_export_to_jsonl(tmp_path, h):
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        src = h.write_jsonl(tmp_path / "emb.jsonl", h.embedding_lines(3))
        code, doc, err = h.run_script("submit", str(src), env=env)
        assert code == 0, err
        assert doc["next"].endswith(f"--manifest {doc['manifest']} --export {tmp_path / 'emb.answers.jsonl'}")


def test_two_jobs_in_one_folder_are_told_to_export_to_files_of_their_own(tmp_path, h):
    """The audit ran two jobs in one folder: both were told `--export answers.csv`, and the second's
    export replaced the first's. Each job's check now names its own file."""
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        nexts = []
        for name, n in (("reviews.jsonl", 4), ("questions.jsonl", 3)):
            job = h.submit_lines(tmp_path, h.chat_lines(n, prefix=name[0]), env, name=name)
            nexts.append(job.doc["next"])
        h.poll_wait("--manifest", job.manifest, env=env)
        for command in nexts:
            h.poll_wait("--manifest", shlex.split(command)[3], env=env)
            proc = _run_next(command, tmp_path, env)
            assert proc.returncode == 0, proc.stderr
    for name, n in (("reviews", 4), ("questions", 3)):
        rows = (tmp_path / f"{name}.answers.csv").read_text(encoding="utf-8-sig").splitlines()
        assert len(rows) == n + 1 and rows[1].split(",")[0] == f"{name[0]}-00000"


def test_a_dry_run_names_no_next_command(tmp_path, h):
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
        code, doc, err = h.run_script("submit", str(src), "--dry-run", env=env)
        assert code == 0 and "next" not in doc and "check later" not in err, err


def test_fetch_names_the_next_command_until_every_input_has_an_answer(tmp_path, h):
    """The audit's prompts job: a small max_tokens cuts the sloppy model's long answers. Each fetch's
    `next` is what to run, and following it (as printed, from another folder) gets every input an answer
    in five commands: create, submit, fetch, the resubmit fetch names (with a --max-tokens large enough
    at once), the fetch that names (the user's own export path, absolute)."""
    prompts = tmp_path / "questions.txt"
    prompts.write_text("".join(f"Explain in detail topic number {i}.\n" for i in range(60)), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with h.start_emulator("--sloppy-rate", "0.3", "--seed", "4") as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(
            "create_batch_file", "--model", h.CHAT_MODEL, "--prompts", str(prompts),
            "--reasoning-effort", "none", "--max-tokens", "24", "-o", str(tmp_path / "q.jsonl"), env=env,
        )  # fmt: skip
        assert code == 0, err
        emu.configure(paused=True)
        code, doc, err = h.run_script("submit", str(tmp_path / "q.jsonl"), env=env)
        assert code == 0, err
        manifest = doc["manifest"]

        # still running: next is the same check (the fetch as the user ran it, export made absolute)
        code, doc, err = h.run_script(
            "fetch_results", "--manifest", manifest, "--export", "out/labels.csv", env=env, cwd=tmp_path
        )
        export = tmp_path / "out" / "labels.csv"
        check = f"python3 {h.SCRIPTS / 'fetch_results.py'} --manifest {manifest} --export {export}"
        assert code == 7 and doc["next"] == check, doc
        assert err.rstrip().endswith(f"; next: {check} (exit 7)"), err

        emu.configure(paused=False)
        h.poll_wait("--manifest", manifest, env=env, code=0)
        proc = _run_next(check, elsewhere, env)
        assert proc.returncode == 6, proc.stderr
        doc = json.loads(proc.stdout)
        cut = doc["counts"]["truncated"]
        assert cut >= 5 and doc["counts"]["completed"] + cut == 60, doc["counts"]
        resubmit = f"python3 {h.SCRIPTS / 'submit.py'} --resubmit --manifest {manifest} --max-tokens 1024"
        assert doc["next"] == resubmit, doc
        assert f"; next: {resubmit} (exit 6)" in proc.stderr

        # its dry run ends with its own closing line (not the download's, which named this command)
        code, plan, err = h.run_script("submit", "--resubmit", "--manifest", manifest, "--dry-run", env=env)
        assert code == 0 and plan["by_status"] == {"truncated": cut}, plan
        last = err.splitlines()[-1]
        assert (
            last
            == f"submit.py: dry run: round 2 would resend {cut} request(s) ({cut} truncated); nothing sent (exit 0)"
        )

        proc = _run_next(resubmit, elsewhere, env)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["resubmitted"] == cut and doc["next"] == check, doc
        h.poll_wait("--manifest", manifest, env=env, code=0)
        proc = _run_next(check, elsewhere, env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] is True and "next" not in doc, doc
    assert "next:" not in proc.stderr
    rows = list(csv.DictReader(export.read_text(encoding="utf-8-sig").splitlines()))
    assert len(rows) == 60 and {r["status"] for r in rows} == {"completed"}
    assert not (elsewhere / "answers.csv").exists()


def test_fetch_names_no_resubmit_when_no_failure_is_worth_resending(tmp_path, h):
    """Requests the model refuses (HTTP 400): resending them as they are will not help, so fetch names no
    next command and its closing line says to fix them."""
    lines = h.chat_lines(6)
    for line in lines[:2]:
        line["body"]["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 5, "maximum": 2}},
        }
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, lines, env)
        h.poll_wait("--manifest", job.manifest, env=env, code=6)
        code, doc, err = h.run_script("fetch_results", "--manifest", job.manifest, env=env)
    assert code == 6 and doc["counts"]["failed"] == 2, doc
    assert [g["resubmit"] for g in doc["failure_groups"]] == ["no"]
    assert "next" not in doc
    assert "no failure is worth resending as it is: fix those requests" in err


def test_create_names_the_submit_of_every_file_it_wrote(tmp_path, h):
    """create's stdout `next` is step 3's submit of every file written (shards included), with absolute
    (quoted) paths: run as printed from another folder, it sends the whole job."""
    folder = tmp_path / "my data"
    folder.mkdir()
    prompts = folder / "questions.txt"
    prompts.write_text("".join(f"question {i}\n" for i in range(25)), encoding="utf-8")
    code, doc, err = h.run_script(
        "create_batch_file", "--model", h.CHAT_MODEL, "--prompts", str(prompts), "--max-requests", "10",
        "-o", str(folder / "q.jsonl"),
    )  # fmt: skip
    assert code == 0 and len(doc["outputs"]) == 3, err
    assert doc["next"] == shlex.join(["python3", str(h.SCRIPTS / "submit.py"), *doc["outputs"]])
    assert err.rstrip().endswith(f"; next: {doc['next']} (exit 0)"), err
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        proc = _run_next(doc["next"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    sent = json.loads(proc.stdout)
    assert sent["created"] == 3 and sum(b["requests"] for b in sent["batches"]) == 25, sent


def test_poll_names_the_fetch_once_every_batch_finished(tmp_path, h):
    """poll exit 6 sent agents straight to a resubmit, which resends requests the server refused and
    knows nothing of cut-off answers; once every batch finished, poll's `next` is the fetch (which judges
    the answers), and while they run there is none (check again after next_check_seconds)."""
    with h.start_emulator("--fail-rate", "0.3", "--seed", "3") as emu:
        env = h.script_env(emu.base_url)
        emu.configure(paused=True)
        job = h.submit_lines(tmp_path, h.chat_lines(20), env)
        code, doc, err = h.run_script("poll", "--manifest", job.manifest, env=env)
        assert code == 7 and "next" not in doc and "next:" not in err, doc
        emu.configure(paused=False)
        result = h.poll_wait("--manifest", job.manifest, env=env, code=6)
        assert result.doc["next"] == job.doc["next"], result.doc
        assert result.stderr.rstrip().endswith(f"; next: {job.doc['next']} (exit 6)"), result.stderr
        proc = _run_next(result.doc["next"], tmp_path, env)
    assert proc.returncode == 6 and json.loads(proc.stdout)["next"].startswith("python3 "), proc.stderr
