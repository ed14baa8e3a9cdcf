"""What the scripts say to run next matches SKILL.md's workflow (create, submit, fetch --export; resubmit,
fetch): submit's and --resubmit's stdout `next` and their closing line on stderr name the fetch with the
export (SKILL.md step 4: the check), and a --resubmit refused while the job runs names the same command.
The command given is run as it is printed, from another folder."""

from __future__ import annotations

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
        fetch = f"python3 {h.SCRIPTS / 'fetch_results.py'} --manifest {manifest} --export answers.csv"
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
        assert len((elsewhere / "answers.csv").read_text(encoding="utf-8-sig").splitlines()) == 21

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
        assert doc["next"].endswith(f"--manifest {doc['manifest']} --export answers.jsonl")


def test_a_dry_run_names_no_next_command(tmp_path, h):
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(3))
        code, doc, err = h.run_script("submit", str(src), "--dry-run", env=env)
        assert code == 0 and "next" not in doc and "check later" not in err, err
