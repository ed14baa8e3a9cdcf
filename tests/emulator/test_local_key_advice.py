"""A user pointed at a local emulator without a key is told how to go on locally, not sent to the
Doubleword website to create an account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_without_key(base_url: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DOUBLEWORD_API_KEY", "DOUBLEWORD_BASE_URL")}
    if base_url:
        env["DOUBLEWORD_BASE_URL"] = base_url
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "list_batches.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_key_against_the_emulator_gives_local_advice(emu):
    done = run_without_key(emu.base_url)
    assert done.returncode == 3
    assert "app.doubleword.ai" not in done.stderr
    assert (
        f"The local server at {emu.base_url}" in done.stderr
        and "export DOUBLEWORD_API_KEY=sk-local" in done.stderr
    )


def test_missing_key_for_the_real_service_still_says_where_to_create_one():
    done = run_without_key(None)
    assert done.returncode == 3 and "https://app.doubleword.ai" in done.stderr
