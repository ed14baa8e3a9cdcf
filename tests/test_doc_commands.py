"""Run every command block of SKILL.md and README.md, in order, against the emulator.

A flag or file name that drifts from the code breaks this test. Placeholders such as `BATCH_ID` are
filled from the JSON the previous commands printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from emulator_server import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
CANARY_KEY = "sk-canary-docs-7f3a9c2e"

# Exit codes a documented command may end with when everything works as the docs describe.
ALLOWED_CODES = {
    "poll.py": {0, 6, 7},  # a single check may find the batch still running; 6: some requests failed
    "fetch_results.py": {0, 6, 7},  # 6: finished, some requests failed (the docs' server fails 25%)
    "cancel_batch.py": {0, 4},  # 4: refused because the batch already finished (documented)
    # 7: refused, nothing sent, while a batch of the job still runs (documented); the refusal is checked below
    "submit.py --resubmit": {0, 7},
}

PROMPTS = "\n".join(f"Question {i}: name a colour that rhymes with {i}" for i in range(1, 13)) + "\n"
CSV = 'id,review\nr1,Great product\nr2,Terrible service\nr3,"Fine, I guess"\n'
JSONL = "".join(json.dumps({"text": t}) + "\n" for t in ("alpha", "beta", "gamma"))
PNG = bytes.fromhex(  # a 1x1 image, for the images recipe
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
    "63606060f80f0001040100c12d8e500000000049454e44ae426082"
)
SCHEMA = json.dumps(
    {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}, indent=2
)


def documented_commands(doc: Path) -> list[str]:
    """Shell commands from the doc's ```sh blocks that run one of our scripts."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("python3 scripts/"):
                commands.append(line)
    return commands


def _placeholders(command: str, seen: dict[str, str]) -> str:
    for name, value in seen.items():
        command = re.sub(rf"\b{name}\b", value, command)
    return command


def _remember(doc: dict, seen: dict[str, str]) -> None:
    for batch in doc.get("batches", []):
        if isinstance(batch, dict) and batch.get("batch_id"):
            seen["BATCH_ID"] = seen["ID"] = batch["batch_id"]


@pytest.mark.parametrize("doc_name", ["SKILL.md", "README.md", "tools/skill_README.md"])
def test_documented_commands_run_against_the_emulator(doc_name, tmp_path):
    commands = documented_commands(ROOT / doc_name)
    assert len(commands) >= (4 if doc_name.startswith("tools/") else 5), f"{doc_name} shows too few commands"
    work = tmp_path / "work"
    work.mkdir()
    (work / "prompts.txt").write_text(PROMPTS)
    (work / "data.csv").write_text(CSV)
    (work / "data.jsonl").write_text(JSONL)
    (work / "schema.json").write_text(SCHEMA)
    (work / "scans").mkdir()
    (work / "scans" / "page-1.png").write_bytes(PNG)

    with EmulatorServer("--fail-rate", "0.25", "--seed", "3", api_key=CANARY_KEY) as emu:
        env = dict(os.environ, DOUBLEWORD_API_KEY=CANARY_KEY, DOUBLEWORD_BASE_URL=emu.base_url)
        env.pop("PYTHONPATH", None)
        seen: dict[str, str] = {}
        for command in commands:
            argv = shlex.split(_placeholders(command, seen))
            script = Path(argv[1]).name + (" --resubmit" if "--resubmit" in argv else "")
            argv = [sys.executable, str(ROOT / argv[1]), *argv[2:]]
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
            where = f"{doc_name}: `{command}` exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
            assert done.returncode in ALLOWED_CODES.get(script, {0}), where
            result = json.loads(done.stdout)
            if done.returncode == 0:
                assert result.get("ok", True) is not False, where
            if script == "submit.py --resubmit" and done.returncode == 7:
                assert (
                    result["error"]["type"] == "not_finished"
                    and "nothing was sent" in result["error"]["message"]
                )
            assert CANARY_KEY not in done.stdout + done.stderr
            _remember(result, seen)

    for path in work.rglob("*"):
        if path.is_file():
            assert CANARY_KEY not in path.read_text(encoding="utf-8", errors="replace"), path
