"""What every bench module shares: paired timing, running a command through probe.py, the emulator's
call log, curl as a baseline, generated inputs and the row shapes that bench/run.py prints.

Not a benchmark itself (bench/run.py only runs ``bench_*.py``). The emulator is always started through
the one ``EmulatorServer`` helper of the test suite (tests/emulator_server.py).
"""

from __future__ import annotations

import compileall
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SCRIPTS = ROOT / "scripts"
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from emulator_server import EmulatorServer  # noqa: E402

KEY = "sk-bench"
MODEL = "Qwen/Qwen3.5-9B"
TERMINAL = ("completed", "failed", "cancelled", "expired")
WORDS_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    'they you were her she there been one all we their résumé naïve café 東京 données "quoted" tab\there'
)
# The scripts' bytecode, cached as Python does on a command's first run: with PYTHONDONTWRITEBYTECODE set
# (as on this machine) every timed start-up would compile the whole package from source again (~50 ms of
# a fetch_results.py start), which Python's default (writing the cache) pays on a first run only. Python
# reads a valid cache even with that variable set; a source changed later is compiled in memory.
compileall.compile_dir(SCRIPTS, quiet=1)

# BENCH_QUICK=1 (or bench/run.py --quick) leaves out the slow rows (the 1,000,000-request growth row,
# about half of the run and 2 GB of temporary files).
FULL = os.environ.get("BENCH_QUICK", "") in ("", "0")


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a measurement: calling the result runs ``fn`` and returns its wall time in seconds."""

    def measure() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return measure


def paired(*measures: Callable[[], float], repeat: int = 3) -> list[float]:
    """Median of each measurement (a callable returning seconds), run in alternation ``repeat`` times
    so that load from other processes on the machine affects every candidate alike. Each round starts one
    place further along (the first measure of a round ran 0.75x against 0.82x in the second place, right
    after curl's 48 MB write), and the system's dirty pages are written out before each measurement, so
    that none pays for what the one before it wrote."""
    times: list[list[float]] = [[] for _ in measures]
    for round_number in range(repeat):
        for step in range(len(measures)):
            index = (round_number + step) % len(measures)
            os.sync()
            times[index].append(measures[index]())
    return [statistics.median(t) for t in times]


# --------------------------------------------------------------------------- inputs


def prompt_pool(words: int, size: int = 256, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    words_list = WORDS_TEXT.split(" ")
    return [" ".join(rng.choice(words_list) for _ in range(words)) for _ in range(size)]


def write_requests(path: Path, count: int, words: int, *, start: int = 0) -> None:
    """``count`` chat requests of about ``words`` words each (a pool of prompts, each id unique)."""
    pool = prompt_pool(words)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(start, start + count):
            line = {
                "custom_id": f"req-{i:07d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Ticket {i}: {pool[i % len(pool)]}"}],
                    "max_tokens": 256,
                },
            }
            handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_prompts(path: Path, count: int, words: int) -> None:
    """A --prompts file: one prompt a line (newlines and tabs kept out of the prompt text)."""
    pool = [p.replace("\t", " ") for p in prompt_pool(words)]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"Ticket {i}: {pool[i % len(pool)]}\n")


# --------------------------------------------------------------------------- processes


def env_for(emu: EmulatorServer | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DOUBLEWORD_API_KEY": KEY, "NO_PROXY": "*"})
    if emu is not None:
        env["DOUBLEWORD_BASE_URL"] = emu.base_url
    return env


def probe(
    emu: EmulatorServer | None,
    tmp: Path,
    script: str,
    *args: str,
    ok: tuple[int, ...] = (0,),
    profile: Path | None = None,
) -> dict:
    """Run scripts/<script> through probe.py as its own process: probe's report (seconds, phases,
    exit, peak_rss_kib = the child's VmHWM) plus ``wall`` (process start to exit) and parsed stdout.
    With ``profile`` the command runs under cProfile (slower) and its stats are written there."""
    report = tmp / "probe.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, str(BENCH_DIR / "probe.py"), str(report), str(SCRIPTS / script), *args]
    env = env_for(emu)
    if profile is not None:
        env["PROBE_PROFILE"] = str(profile)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in ok:
        raise RuntimeError(f"{script} exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    result["wall"] = wall
    result["stdout"] = json.loads(done.stdout) if done.stdout.strip() else {}
    return result


def curl(*args: str) -> float:
    """Wall time of one curl run (process start to exit, as for the scripts)."""
    cmd = [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--noproxy",
        "*",
        "-H",
        f"Authorization: Bearer {KEY}",
    ]
    start = time.perf_counter()
    subprocess.run([*cmd, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def emulator(*args: str) -> EmulatorServer:
    """A quiet emulator for the bench, accepting only the bench's key."""
    return EmulatorServer(*args, "--quiet", api_key=KEY)


# --------------------------------------------------------------------------- the emulator's view


def batch_now(emu: EmulatorServer, batch_id: str, session: Any = requests) -> dict[str, Any]:
    # The bench's own look-ups go through /ai/v1 so the call log tells them apart from the scripts'.
    url = f"{emu.root_url}/ai/v1/batches/{batch_id}"
    response = session.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def wait_terminal(emu: EmulatorServer, batch_ids: list[str], timeout: float = 600.0) -> list[dict]:
    """Wait until every batch is terminal; their last states."""
    deadline = time.monotonic() + timeout
    pending = list(batch_ids)
    done: dict[str, dict[str, Any]] = {}
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"batches {pending} did not finish within {timeout:g}s")
        batch = batch_now(emu, pending[0])
        if batch["status"] in TERMINAL:
            done[pending.pop(0)] = batch
        else:
            time.sleep(0.1)
    return [done[b] for b in batch_ids]


def script_calls(emu: EmulatorServer, since: int = 0) -> list[dict[str, Any]]:
    """The scripts' API calls (under /v1) logged by the emulator from index ``since``."""
    return [c for c in emu.requests_log()[since:] if c["path"].startswith("/v1/")]


def call_kind(call: dict[str, Any]) -> str:
    path, method = call["path"], call["method"]
    if method == "POST" and path.endswith("/files"):
        return "upload"
    if method == "POST" and path.endswith("/batches"):
        return "create"
    if path.endswith("/content"):
        return "content"
    if "/batches/" in path:
        return "status"
    if method == "GET" and path.endswith("/batches"):
        return "list"
    if method == "GET" and "/files" in path:
        return "file"
    return f"{method} {path}"


def calls_summary(calls: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    kinds: dict[str, int] = {}
    for call in calls:
        kind = call_kind(call)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds, ", ".join(f"{v} {k}" for k, v in kinds.items())


# --------------------------------------------------------------------------- rows


def ratio_row(name: str, baseline: str, base: float, ours: float, limit: float) -> dict[str, Any]:
    """Time ratio ours/baseline, lower is better."""
    ratio = ours / base
    return {
        "benchmark": name,
        "baseline": f"{baseline} {base:.3f}s",
        "measured": f"{ours:.3f}s",
        "ratio": round(ratio, 2),
        "target": f"<= {limit}x",
        "ok": ratio <= limit,
    }


def throughput_row(name: str, baseline: str, base_s: float, ours_s: float, mbytes: float) -> dict[str, Any]:
    """Throughput ratio ours/baseline (= baseline time / our time), higher is better; target 0.8x."""
    ratio = base_s / ours_s
    return {
        "benchmark": name,
        "baseline": f"{baseline} {base_s:.2f}s ({mbytes / base_s:.0f} MB/s)",
        "measured": f"{ours_s:.2f}s ({mbytes / ours_s:.0f} MB/s)",
        "ratio": round(ratio, 2),
        "target": ">= 0.8x",
        "ok": ratio >= 0.8,
    }


def info(row: dict[str, Any]) -> dict[str, Any]:
    """The same row, shown for information only (no target)."""
    return {**row, "target": "(info)", "ok": True}


def growth_row(name: str, small_mib: float, big_mib: float, limit: float) -> dict[str, Any]:
    """Peak memory of a bigger run against a smaller one of the same command, same run."""
    ratio = big_mib / small_mib
    return {
        "benchmark": name,
        "baseline": f"{small_mib:.1f} MiB",
        "measured": f"{big_mib:.1f} MiB",
        "ratio": round(ratio, 2),
        "target": f"<= {limit}x",
        "ok": ratio <= limit,
    }
