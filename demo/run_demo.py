#!/usr/bin/env python3
"""The whole workflow against a local emulator: build, validate, submit, wait, fetch, resubmit what
failed as the job's next round when fetch advises one, fetch again, show answers.

Starts the emulator on a free port, runs each script as a subprocess exactly as a user or an agent
would (DOUBLEWORD_BASE_URL / DOUBLEWORD_API_KEY pointing at the emulator), prints a short summary and
a few answers, and always stops the emulator. Output goes to demo/out/ (git-ignored).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRIPTS = REPO / "scripts"
OUT = HERE / "out"
MODEL = "Qwen/Qwen3.5-9B"
# Random-looking on purpose: output redaction hides any 8+ character fragment of the key, and a key made of
# words (say "-emulator") would also hide them in paths such as this worktree's.
DEMO_KEY = "sk-demo-Qx7vL2mZ9tRw"
# A slow, slightly faulty model, so the demo shows a batch in progress and a few failed requests (with
# seed 9: a 500, answered in round 2, and a 422, the request's own, refused again in round 2).
EMULATOR_FLAGS = ("--quiet", "--start-delay", "0.5", "--rate", "4", "--fail-rate", "0.1", "--seed", "9")

sys.path.insert(0, str(REPO))  # the emulator package beside demo/
from emulator.launcher import EmulatorServer  # noqa: E402


def start_emulator() -> EmulatorServer:
    try:
        return EmulatorServer(*EMULATOR_FLAGS, api_key=DEMO_KEY)
    except RuntimeError as exc:
        raise SystemExit(
            f"demo: the emulator did not start (is the virtual environment installed? make install): {exc}"
        )


def step(
    title: str, script: str, *args: str, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> dict[str, Any]:
    print(f"\n== {title}: scripts/{script} {' '.join(args)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], env=env, cwd=OUT, capture_output=True, text=True
    )
    sys.stdout.write("".join(f"   | {line}\n" for line in proc.stderr.splitlines()[-6:]))
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    print(f"   exit {proc.returncode} in {time.monotonic() - started:.1f}s", flush=True)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: {script} failed with exit {proc.returncode}: {json.dumps(doc)[:500]}")
    return doc


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with start_emulator() as emulator:
        env = emulator.env_for_scripts()
        print(f"emulator running at {emulator.base_url}")
        step(
            "build a batch file",
            "create_batch_file.py",
            "--prompts",
            str(HERE / "prompts.txt"),
            "--model",
            MODEL,
            "--max-tokens",
            "64",
            "-o",
            "demo.jsonl",
            env=env,
        )
        step("validate it locally", "validate_batch_file.py", "demo.jsonl", env=env)
        submitted = step("submit (upload + create the batch)", "submit.py", "demo.jsonl", env=env)
        manifest = submitted["manifest"]
        step("check once (non-blocking)", "poll.py", "--manifest", manifest, env=env, ok=(0, 6, 7))
        step(
            "wait until it finishes",
            "poll.py",
            "--manifest",
            manifest,
            "--wait",
            "--interval",
            "1",
            "--timeout",
            "45",
            env=env,
            ok=(0, 6),
        )
        fetched = step(
            "download results and errors", "fetch_results.py", "--manifest", manifest, env=env, ok=(0, 6)
        )
        rounds = 1
        # a next round only as fetch advises it: a refused request (400/422) fails again however often
        # it is resent, so fetch names no round when nothing left is worth resending
        while not fetched["complete"] and fetched.get("next") and rounds < 4:
            rounds += 1
            command = shlex.split(fetched["next"])  # python3 .../submit.py --resubmit --manifest M ...
            again = step(
                f"round {rounds}: resubmit as fetch advises",
                Path(command[1]).name,
                *command[2:],
                env=env,
            )
            print(f"   resent {again['resubmitted']} request(s) as round {again['round']}")
            wait = ("--wait", "--interval", "1", "--timeout", "45")
            step(f"wait for round {rounds}", "poll.py", "--manifest", manifest, *wait, env=env, ok=(0, 6))
            fetched = step(
                "download again (best answer per input)",
                "fetch_results.py",
                "--manifest",
                manifest,
                env=env,
                ok=(0, 6),
            )

    counts = fetched["counts"]
    print("\n== summary")
    print(
        f"   {counts['requests']} requests: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['pending']} pending, {counts['missing']} missing; "
        f"{fetched['usage']['total_tokens']} tokens"
    )
    if fetched["failures_by_type"]:
        print(f"   failures by type: {fetched['failures_by_type']}")
        with open(fetched["files"]["results"], encoding="utf-8") as handle:
            failed = next((r for r in map(json.loads, handle) if r["status"] == "failed"), None)
        if failed:
            print(f"   e.g. {failed['custom_id']}: {failed['error']['type']}: {failed['error']['message']}")
    print(f"   results: {fetched['files']['results']} (complete: {fetched['complete']}, {rounds} round(s))")
    for group in fetched["failure_groups"]:  # what fetch says about each kind of failure left
        print(
            f"   {group['count']} {group['result_status']} (HTTP {group['status']}): "
            f"resubmit {group['resubmit']}: {group['advice']}"
        )
    if fetched.get("next"):
        print(f"   next: {fetched['next']}")
    print("\n== a few answers")
    with open(fetched["files"]["results"], encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    answered = [r for r in records if r["status"] == "completed"]
    retried = [r for r in answered if (r.get("attempts") or 1) > 1][:1]  # one answered in a later round
    for record in answered[:3] + [r for r in retried if r not in answered[:3]]:
        tries = f" (after {record['attempts']} attempts)" if (record.get("attempts") or 1) > 1 else ""
        print(f"   {record['custom_id']}{tries}: {record['content'][:100]}")
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
