"""`make demo` runs the whole workflow against a local emulator in well under a minute."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end():
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "demo" / "run_demo.py")], capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 60
    out = proc.stdout
    assert "== summary" in out and "10 requests:" in out and "== a few answers" in out
    assert "req-00001:" in out
    results = REPO / "demo" / "out" / "demo.results" / "results.jsonl"
    assert len(results.read_text().splitlines()) == 10
    # what is left without an answer is shown with fetch's advice for it (a refused request is not resent
    # as if it could pass)
    for line in results.read_text().splitlines():
        record = json.loads(line)
        if record["status"] != "completed":
            assert f"{record['status']} (HTTP {record['error']['status']}): resubmit " in out, out
