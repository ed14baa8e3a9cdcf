"""Issue 6, item 6: a 50,000-request batch and a ~200 MB upload with flat memory.

The scripts run as subprocesses; each one's peak RSS comes from ``wait4`` (Linux ``ru_maxrss``), the
emulator's from ``/proc/<pid>/status`` (VmHWM). The default suite runs smaller sizes of the same cases;
the full sizes are ``@pytest.mark.soak`` (``make soak``).

Budgets: a script's memory may grow with the number of requests only by per-request bookkeeping (the
custom_id -> position index of the join, the line ids for de-duplication: well under 1 KB a request,
so under 40 MB at 50,000), never with the bytes of the requests or the answers; an upload is streamed
from disk, so submit stays far below 100 MB whatever the file size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from emulator_server import EmulatorServer

MB = 1024 * 1024
FILE_LIMIT = 200 * MB

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via wait4 and /proc")


# Runs a script as its own __main__ and, at exit, writes the process's VmHWM (peak RSS of this very
# program; ru_maxrss would include the forking pytest process's size) to the file named in argv[1].
LAUNCHER = """
import atexit, runpy, sys
report, script = sys.argv[1], sys.argv[2]
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(report, "w").write(line.split()[1])
atexit.register(peak)
sys.argv = sys.argv[2:]
sys.path.insert(0, script.rsplit("/", 1)[0])
runpy.run_path(script, run_name="__main__")
"""


def run_measured(h, name: str, *args: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str, float]:
    """Run a script; (exit code, stdout JSON, stderr, peak RSS in MB) of that very process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak"
        script = str(h.SCRIPTS / f"{name}.py")
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(report), script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        peak_kb = int(report.read_text())
    assert h.CANARY_KEY not in proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr, peak_kb / 1024


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a running process (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def full_flow(tmp_path: Path, h, emu: EmulatorServer, n: int) -> dict[str, float]:
    """create -> submit -> poll --wait -> fetch for ``n`` prompts; the peak RSS of each script."""
    env = h.script_env(emu.base_url)
    work = tmp_path / f"n{n}"
    work.mkdir()
    prompts = work / "prompts.txt"
    prompts.write_text("".join(f"Question number {i}: say something short.\n" for i in range(n)))
    jobs = work / "jobs.jsonl"
    rss: dict[str, float] = {}
    code, doc, err, rss["create"] = run_measured(
        h,
        "create_batch_file",
        "--prompts",
        str(prompts),
        "--model",
        h.CHAT_MODEL,
        "--max-tokens",
        "32",
        "-o",
        str(jobs),
        env=env,
    )
    assert code == 0, err
    code, doc, err, rss["submit"] = run_measured(h, "submit", str(jobs), env=env)
    assert code == 0 and doc["created"] == 1, err
    manifest = doc["manifest"]
    code, doc, err, rss["poll"] = run_measured(
        h, "poll", "--manifest", manifest, "--wait", "--interval", "0.5", env=env
    )
    assert code == 0, err
    code, doc, err, rss["fetch"] = run_measured(h, "fetch_results", "--manifest", manifest, env=env)
    assert code == 0 and doc["complete"], err
    assert doc["counts"] == {
        "requests": n, "completed": n, "failed": 0, "truncated": 0, "invalid": 0, "pending": 0, "missing": 0
    }  # fmt: skip
    # every answer, in input order, once
    with open(work / "jobs.results" / "results.jsonl", encoding="utf-8") as handle, open(jobs) as inputs:
        count = 0
        for i, (raw, request) in enumerate(zip(handle, inputs, strict=True)):
            result = json.loads(raw)
            assert result["custom_id"] == json.loads(request)["custom_id"]
            assert f"Question number {i}:" in result["content"]
            count += 1
    assert count == n
    with open(work / "jobs.results" / "output.jsonl", "rb") as handle:
        ids = {json.loads(raw)["id"] for raw in handle}
    assert len(ids) == n
    return rss


def check_flat(small: dict[str, float], large: dict[str, float], n_small: int, n_large: int) -> None:
    budget = 40.0 * (n_large - n_small) / 45_000  # MB: < 1 KB of bookkeeping per extra request
    for name in ("create", "submit", "fetch", "poll"):
        growth = large[name] - small[name]
        assert growth < max(8.0, budget), (
            f"{name}: {small[name]:.0f} MB at {n_small}, {large[name]:.0f} MB at {n_large}"
        )
        assert large[name] < 2 * small[name], (name, small[name], large[name])


def run_scaling(tmp_path: Path, h, n_small: int, n_large: int) -> tuple[dict[str, float], dict[str, float]]:
    with EmulatorServer("--start-delay", "0", "--rate", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        small = full_flow(tmp_path, h, emu, n_small)
        large = full_flow(tmp_path, h, emu, n_large)
        stats = emu.stats()
    assert stats["files_created"] == 2 and stats["batches_created"] == 2
    print(f"peak RSS MB at {n_small}: {small}; at {n_large}: {large}")
    check_flat(small, large, n_small, n_large)
    return small, large


def test_memory_flat_with_request_count(tmp_path, h):
    run_scaling(tmp_path, h, 1000, 10_000)


@pytest.mark.soak
def test_memory_flat_50k_requests(tmp_path, h):
    run_scaling(tmp_path, h, 5000, 50_000)


# --------------------------------------------------------------------------- big uploads


def big_file(path: Path, size: int, h) -> int:
    """A valid chat batch file of about ``size`` bytes in few, large lines (~100 KB each)."""
    filler = "lorem ipsum dolor sit amet " * 3800  # ~100 KB a line: 2,000 lines make 200 MB
    written = lines = 0
    with open(path, "w", encoding="utf-8") as handle:
        while True:
            line = json.dumps(
                {
                    "custom_id": f"big-{lines:05d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": h.CHAT_MODEL,
                        "messages": [{"role": "user", "content": f"{lines} {filler}"}],
                        "max_tokens": 8,
                    },
                }
            )
            if written + len(line) + 1 > size:
                return lines
            handle.write(line + "\n")
            written += len(line) + 1
            lines += 1


def run_uploads(tmp_path: Path, h, small_size: int, large_size: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        emu.configure(paused=True)  # the upload is what is measured, not the model
        env = h.script_env(emu.base_url)
        for label, size in (("small", small_size), ("large", large_size)):
            src = tmp_path / f"{label}.jsonl"
            count = big_file(src, size, h)
            code, doc, err, rss = run_measured(h, "submit", str(src), env=env)
            assert code == 0 and doc["created"] == 1, err
            assert doc["batches"][0]["requests"] == count and len(doc["batches"]) == 1  # not sharded
            figures[f"submit_{label}_mb"] = rss
            figures[f"emulator_{label}_mb"] = vm_hwm_mb(emu.pid)
            figures[f"{label}_file_mb"] = src.stat().st_size / MB
            src.unlink()
        stats = emu.stats()
    assert stats["files_created"] == 2 and stats["batches_created"] == 2
    print(f"uploads: {figures}")
    assert figures["submit_large_mb"] < 80, figures  # well under 100 MB with a ~200 MB file
    assert figures["submit_large_mb"] - figures["submit_small_mb"] < 10, figures
    # the emulator streams the upload to its SQLite file and populates the batch from a cursor: its peak
    # memory does not follow the file size (measured: +0.3 MB from 5 MB to 40 MB)
    grown = figures["emulator_large_mb"] - figures["emulator_small_mb"]
    assert grown < 10, figures
    return figures


def test_big_upload_flat_memory(tmp_path, h):
    run_uploads(tmp_path, h, 5 * MB, 40 * MB)


@pytest.mark.soak
def test_200mb_upload_flat_memory(tmp_path, h):
    run_uploads(tmp_path, h, 20 * MB, FILE_LIMIT - 64 * 1024)
