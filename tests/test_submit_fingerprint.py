"""Content fingerprints in submit: each shard is read once to validate and hash it and once to upload it,
and a remembered "valid" verdict does not outlive a change of the validation rules (the validation code,
the endpoint table, a request schema)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs a script as __main__ (its folder on sys.path, as when started directly) and reports on stderr how
# many bytes the process read through read(2) (Linux /proc/self/io), whatever the script exits with.
_READ_BYTES = (
    "import os, runpy, sys\n"
    "script = sys.argv[1]; sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(script))\n"
    "code = 0\n"
    "try:\n    runpy.run_path(script, run_name='__main__')\n"
    "except SystemExit as exc:\n    code = exc.code\n"
    "rchar = [l for l in open('/proc/self/io') if l.startswith('rchar:')][0].split()[1]\n"
    "sys.stderr.write(f'READ_BYTES {rchar}\\n'); sys.exit(code)\n"
)


def _read_bytes(script: str, *args: str, env: dict[str, str], key: str) -> tuple[int, dict, int]:
    """(exit code, stdout JSON, bytes read) of one run of scripts/<script>."""
    proc = subprocess.run(
        [sys.executable, "-c", _READ_BYTES, str(REPO / "scripts" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert key not in proc.stdout + proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("READ_BYTES ")][-1]
    return proc.returncode, json.loads(proc.stdout), int(line.split()[1])


def _big_file(path: Path, h, megabytes: int) -> Path:
    filler = "lorem ipsum dolor sit amet " * 40  # about 1 KB a request
    lines = h.chat_lines(megabytes * 1000, prefix=f"fp-{uuid.uuid4().hex[:8]}")
    for line in lines:
        line["body"]["messages"][0]["content"] += filler
    return h.write_jsonl(path, lines)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_submit_reads_each_shard_once_to_validate_and_hash_it_and_once_to_upload_it(
    emulator, env, tmp_path, h
):
    env = {**env, "TMPDIR": str(tmp_path)}  # a validation memory of its own
    tiny = h.write_jsonl(tmp_path / "tiny.jsonl", h.chat_lines(1, prefix=f"t-{uuid.uuid4().hex[:8]}"))
    code, doc, base = _read_bytes(
        "submit.py", str(tiny), env=env, key=h.CANARY_KEY
    )  # what any run reads (modules, ...)
    assert code == 0, doc
    src = _big_file(tmp_path / "jobs.jsonl", h, 8)
    size = src.stat().st_size
    code, doc, read = _read_bytes("submit.py", str(src), "--max-requests", "3000", env=env, key=h.CANARY_KEY)
    assert code == 0 and len(doc["batches"]) == 3, doc
    # the input is read to validate and hash it, then to split it; each shard only for its upload
    # (before: hash, validate, split the input; hash and upload each shard = 5 x the size)
    assert read - base < 3.3 * size, (read - base) / size
    assert emulator.stats()["batches_created"] == 4

    second = _big_file(tmp_path / "second.jsonl", h, 8)
    code, doc, read = _read_bytes("validate_batch_file.py", "--quiet", str(second), env=env, key=h.CANARY_KEY)
    assert code == 0 and doc["ok"]
    assert read < 1.3 * size, read / size  # validated and hashed in one pass (was 2)
    code, doc, read = _read_bytes("submit.py", str(second), env=env, key=h.CANARY_KEY)
    assert code == 0 and len(doc["batches"]) == 1, doc
    assert read - base < 2.3 * size, (read - base) / size  # hashed (not validated again), uploaded
    assert emulator.stats()["batches_created"] == 5


def _copy_of_the_skill(where: Path) -> Path:
    for part in ("scripts", "references"):
        shutil.copytree(REPO / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "SKILL.md", where / "SKILL.md")
    return where / "scripts"


def test_a_change_of_the_endpoint_table_or_a_schema_invalidates_a_remembered_verdict(tmp_path, h):
    scripts = _copy_of_the_skill(tmp_path / "skill")
    env = h.script_env(None, TMPDIR=str(tmp_path))
    src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(5, prefix=f"st-{uuid.uuid4().hex[:8]}"))

    def submit_validates() -> bool:
        code, doc, err = h.run_script(str(scripts / "submit.py"), str(src), "--dry-run", env=env)
        assert code == 0 and doc["dry_run"], doc
        return "passed validation before" not in err

    assert h.run_script(str(scripts / "validate_batch_file.py"), str(src), env=env).code == 0
    assert not submit_validates()  # remembered
    endpoints = scripts / "doubleword" / "endpoints.py"
    endpoints.write_text(endpoints.read_text() + "\n# a changed endpoint table\n")
    assert submit_validates()  # the table changed: validated again (and remembered again)
    assert not submit_validates()
    schema = tmp_path / "skill" / "references" / "schemas" / "chat_completions.body.schema.json"
    schema.write_text(json.dumps(json.loads(schema.read_text()), indent=1))
    assert submit_validates()
    assert not submit_validates()
    src.write_text(src.read_text())  # same content, a new mtime: no hint, so validated in the one pass
    assert submit_validates()
