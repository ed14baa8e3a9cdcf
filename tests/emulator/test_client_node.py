"""The OpenAI Node SDK (npm `openai`) runs its own batch workflow against the emulator, unchanged.

The script is clients/openai_node_flow.mjs. The package is installed at test time into
clients/node_modules (gitignored) with `npm install --no-save`; an existing install is reused. The test is
skipped, with the reason, only when node/npm are missing or the package cannot be installed;
EMULATOR_SKIP_NODE=1 skips it on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parent / "clients"
INSTALL_TIMEOUT_S = 120


def node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        return int(out.lstrip("v").split(".")[0])
    except ValueError:
        return 0


@pytest.fixture(scope="module")
def node_client() -> str:
    if os.environ.get("EMULATOR_SKIP_NODE") == "1":
        pytest.skip("EMULATOR_SKIP_NODE=1")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: the OpenAI Node SDK check needs Node 18+")
    if node_major(node) < 18:
        pytest.skip("the OpenAI Node SDK needs Node 18+ (global fetch, File)")
    if not (CLIENTS / "node_modules" / "openai" / "package.json").exists():
        try:
            p = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--no-package-lock",
                    "--loglevel=error",
                ],
                cwd=CLIENTS,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install openai took over {INSTALL_TIMEOUT_S} s (registry unreachable?)")
        if p.returncode != 0:
            pytest.skip(f"npm install openai failed (registry unreachable?): {p.stderr.strip()[-500:]}")
    return node


def test_openai_node_sdk_workflow(emu, node_client, tmp_path):
    p = subprocess.run(
        [node_client, str(CLIENTS / "openai_node_flow.mjs"), emu.base_url, str(tmp_path)],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["listed_batches"] >= 4
