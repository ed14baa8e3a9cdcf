"""Scale benchmarks (issue 15): how each command grows with the job, and the pipelining targets.

- growth table: 10,000 / 20,000 / 100,000 / 200,000 / 1,000,000 requests (not 1,000,000 with --quick) x
  create_batch_file.py, validate_batch_file.py, submit.py, fetch_results.py: wall time, peak memory
  (VmHWM of the command's own process) and the API calls the emulator logged for it. The emulator is
  paused while submit.py runs (so the two do not share the 2 cores) and its processing time is shown as
  a row of its own;
- the emulator told ``--rate 50000`` processes the 200,000-request job at >= 0.9x that rate, wall clock
  (from unpausing it, its batches started, to the last batch seen finished, looked at every 20 ms; its
  CPU time and the load average are shown too, since on a shared machine it may not get the cores);
- flat memory: create and fetch peak memory at 200,000 requests within 1.25x of 20,000 (at 1,000,000
  within 1.25x of 100,000 for every command, unless --quick);
- first batch: in a 4-shard submit the first batch is created before the last upload has finished
  (seen by the emulator: its counts of files and batches, sampled every 5 ms);
- poll --wait: four batches that finish at different times; each finished batch is read at most once
  more (the read that sees it finished), counted from the emulator's call log;
- next check: the next_check_seconds poll.py suggests at about 7.5% of a one-minute batch (shown).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from harness import (
    FULL,
    TERMINAL,
    EmulatorServer,
    batch_now,
    calls_summary,
    emulator,
    growth_row,
    probe,
    script_calls,
    write_prompts,
    write_requests,
)

SIZES = (10_000, 20_000, 100_000, 200_000, *((1_000_000,) if FULL else ()))
# BENCH_PROFILE=fetch,submit: run those phases of the largest size under cProfile (their figures are then
# not comparable), stats to BENCH_PROFILE_DIR (default .) as profile-PHASE-SIZE.prof.
PROFILE = {p for p in os.environ.get("BENCH_PROFILE", "").split(",") if p}
PROFILE_DIR = Path(os.environ.get("BENCH_PROFILE_DIR", ".")).resolve()
if os.environ.get("BENCH_SIZES"):  # e.g. BENCH_SIZES=10000,20000 for a quick look (pairs left out skip)
    SIZES = tuple(int(n) for n in os.environ["BENCH_SIZES"].split(","))
MEMORY_PAIRS = ((20_000, 200_000, ("create", "fetch")),) + (
    ((100_000, 1_000_000, ("create", "validate", "submit", "fetch")),) if FULL else ()
)
MEMORY_LIMIT = 1.25
EMULATOR_RATE = 50_000  # requests/s the emulator is told to process (issue 15: it must keep up)
BARE_LOOP_REQUESTS = 30_000  # the bare loop's size (median of 3)
EMULATOR_SHARE = 0.9  # of that rate, measured from unpausing it to the last batch finished
PROMPT_WORDS = 30  # about 250 bytes a request line
MODEL = "Qwen/Qwen3.5-9B"
SHARDS = 4
SHARD_LINES = 25_000
SHARD_WORDS = 150  # about 1 KB a line: 4 x 25 MB
POLL_SIZES = (500, 1_500, 3_000, 6_000)  # at POLL_RATE: done after about 0.2, 0.8, 2 and 4.4 s
POLL_RATE = 2_500
POLL_INTERVAL = 0.5
NEXT_CHECK_S = 60.0  # a batch expected to take a minute...
NEXT_CHECK_RATE = 100  # ...at 100 requests/s


# --------------------------------------------------------------------------- growth


def growth_rows(tmp: Path) -> tuple[list[dict[str, Any]], dict[tuple[int, str], dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    with emulator("--rate", str(EMULATOR_RATE), "--start-delay", "0") as emu:
        for size in SIZES:
            work = tmp / f"growth-{size}"
            work.mkdir()
            for phase, run in one_job(emu, work, size):
                runs[(size, phase)] = run
                rows.append(growth_line(size, phase, run))
            shutil.rmtree(work, ignore_errors=True)
    return rows, runs


def one_job(emu: EmulatorServer, work: Path, size: int) -> Any:
    """create, validate, submit (emulator paused), the emulator's processing, fetch: one job of ``size``."""
    prompts = work / "prompts.txt"
    write_prompts(prompts, size, PROMPT_WORDS)
    out = work / "batch.jsonl"
    args = ("--prompts", str(prompts), "--model", MODEL, "-o", str(out))
    run = probe(None, work, "create_batch_file.py", *args, profile=profile(size, "create"))
    yield "create", {**run, "calls": []}
    shards = [s["path"] for s in run["stdout"]["shards"]]
    prompts.unlink()
    run = probe(None, work, "validate_batch_file.py", "--quiet", *shards, profile=profile(size, "validate"))
    yield "validate", {**run, "calls": []}

    emu.configure(paused=True)
    mark = len(emu.requests_log())
    manifest = work / "job.manifest.json"
    run = probe(emu, work, "submit.py", *shards, "--manifest", str(manifest), profile=profile(size, "submit"))
    yield "submit", {**run, "calls": script_calls(emu, mark)}
    batch_ids = [b["batch_id"] for b in run["stdout"]["batches"]]
    wait_status(emu, batch_ids, ("in_progress",))  # started: their request rows made, none run
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), cpu_seconds(emu.pid)
    emu.configure(paused=False)
    wait_status(emu, batch_ids, TERMINAL)
    wall = time.perf_counter() - start
    used = cpu_seconds(emu.pid) - cpu
    yield "(emulator)", {"wall": wall, "cpu": used, "load": load, "peak_rss_kib": 0, "calls": []}

    mark = len(emu.requests_log())
    out_dir = str(work / "out")
    run = probe(
        emu,
        work,
        "fetch_results.py",
        "--manifest",
        str(manifest),
        "--out",
        out_dir,
        profile=profile(size, "fetch"),
    )
    yield "fetch", {**run, "calls": script_calls(emu, mark)}


def profile(size: int, phase: str) -> Path | None:
    return PROFILE_DIR / f"profile-{phase}-{size}.prof" if phase in PROFILE and size == max(SIZES) else None


def growth_line(size: int, phase: str, run: dict[str, Any]) -> dict[str, Any]:
    kinds, text = calls_summary(run["calls"])
    return {
        "requests": f"{size:,}",
        "phase": phase,
        "seconds": f"{run['wall']:.2f}",
        "requests/s": f"{size / run['wall']:,.0f}",
        "peak MiB": f"{run['peak_rss_kib'] / 1024:.1f}" if run["peak_rss_kib"] else "",
        "API calls": f"{sum(kinds.values())} ({text})" if kinds else "0",
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_status(
    emu: EmulatorServer, batch_ids: list[str], statuses: tuple[str, ...], timeout: float = 600.0
) -> None:
    """Wait until every batch is in one of `statuses`, looking every 20 ms (harness.wait_terminal's 0.1 s
    would add up to 0.1 s of waiting to a processing time of a few seconds)."""
    deadline = time.monotonic() + timeout
    session = requests.Session()
    for batch_id in batch_ids:
        while batch_now(emu, batch_id, session)["status"] not in statuses:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {batch_id} was not {' or '.join(statuses)} within {timeout:g}s")
            time.sleep(0.02)


def emulator_row(runs: dict[tuple[int, str], dict[str, Any]]) -> dict[str, Any]:
    """Wall-clock requests/s from unpausing the emulator to its last batch finished, against the rate it
    was told in the same run; its CPU time beside it, since on a shared machine it may not get the core
    it could use, and the load average when it started."""
    size = 200_000 if 200_000 in SIZES else max(SIZES)
    run = runs[(size, "(emulator)")]
    rate, per_cpu = size / run["wall"], size / max(run["cpu"], 1e-3)
    return {
        "benchmark": f"emulator --rate {EMULATOR_RATE:,}: {size:,} requests processed (wall clock)",
        "baseline": f"{EMULATOR_RATE:,}/s asked",
        "measured": (
            f"{rate:,.0f}/s in {run['wall']:.2f}s (CPU {run['cpu']:.2f}s = {per_cpu:,.0f}/s of its core;"
            f" load average {run['load']:.1f})"
        ),
        "ratio": round(rate / EMULATOR_RATE, 2),
        "target": f">= {EMULATOR_SHARE}x",
        "ok": rate >= EMULATOR_SHARE * EMULATOR_RATE,
    }


def emulator_vs_bare_row(runs: dict[tuple[int, str], dict[str, Any]]) -> dict[str, Any]:
    """The emulator's CPU per request against this machine's own speed: beside a bare loop's
    (tests/bare_loop.py: select, parse, answer and store each request in one process, what an emulator
    that answers requests as they run must do), so a slower machine and a slower emulator can be told
    apart."""
    from bare_loop import bare_loop_seconds  # tests/ is on sys.path once harness is imported

    size = 200_000 if 200_000 in SIZES else max(SIZES)
    per_request = runs[(size, "(emulator)")]["cpu"] / size
    n = min(size, BARE_LOOP_REQUESTS)
    bare = statistics.median(bare_loop_seconds(n) for _ in range(3)) / n
    return {
        "benchmark": f"emulator: CPU per request ({size:,} requests) vs a bare loop",
        "baseline": f"bare loop {bare * 1e6:.1f} us ({1 / bare:,.0f}/s on one core)",
        "measured": f"{per_request * 1e6:.1f} us",
        "ratio": round(per_request / bare, 2),
        "target": "(info)",
        "ok": True,
    }


def memory_rows(runs: dict[tuple[int, str], dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for small, big, phases in MEMORY_PAIRS:
        for phase in phases if small in SIZES and big in SIZES else ():
            small_mib = runs[(small, phase)]["peak_rss_kib"] / 1024
            big_mib = runs[(big, phase)]["peak_rss_kib"] / 1024
            name = f"{phase}: peak memory {big:,} vs {small:,} requests"
            rows.append(growth_row(name, small_mib, big_mib, MEMORY_LIMIT))
    return rows


# --------------------------------------------------------------------------- first batch


class Counts:
    """Samples the emulator's files/batches counts every 5 ms: when each count was first reached."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.url = emu.root_url + "/_emulator/stats"
        base = emu.stats()
        self.base = (base["files_created"], base["batches_created"])
        self.files: list[float] = []  # time each new file was first seen
        self.batches: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            stats = session.get(self.url, timeout=10).json()
            now = time.perf_counter()
            files, batches = stats["files_created"] - self.base[0], stats["batches_created"] - self.base[1]
            self.files += [now] * (files - len(self.files))
            self.batches += [now] * (batches - len(self.batches))
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def first_batch_rows(tmp: Path) -> list[dict[str, Any]]:
    shards = []
    for i in range(SHARDS):
        shard = tmp / f"shard-{i + 1:03d}.jsonl"
        write_requests(shard, SHARD_LINES, SHARD_WORDS, start=i * SHARD_LINES)
        shards.append(str(shard))
    mbytes = sum(Path(s).stat().st_size for s in shards) / 1e6
    with emulator("--rate", "0", "--start-delay", "0") as emu:
        emu.configure(paused=True)  # the batches wait: only the submit runs
        counts = Counts(emu)
        start = time.perf_counter()
        try:
            run = probe(emu, tmp, "submit.py", *shards, "--manifest", str(tmp / "shards.manifest.json"))
        finally:
            end = time.perf_counter()
            counts.close()
    if len(counts.files) < SHARDS or not counts.batches:
        raise RuntimeError(f"submit made {len(counts.files)} files and {len(counts.batches)} batches")
    first_batch, last_upload = counts.batches[0] - start, counts.files[SHARDS - 1] - start
    label = f"{SHARDS}-shard submit ({SHARDS} x {SHARD_LINES:,} requests, {mbytes:.0f} MB)"
    return [
        {
            "benchmark": f"{label}: first batch created",
            "baseline": f"last upload done {last_upload:.2f}s",
            "measured": f"{first_batch:.2f}s",
            "ratio": round(first_batch / last_upload, 2),
            "target": "before the last upload",
            "ok": first_batch < last_upload,
        },
        {
            "benchmark": f"{label}: whole submit.py",
            "baseline": f"first upload done {counts.files[0] - start:.2f}s",
            "measured": f"{end - start:.2f}s",
            "ratio": "",
            "target": "(info)",
            "ok": run["exit"] == 0,
        },
    ]


# --------------------------------------------------------------------------- poll --wait


class Finishes:
    """Samples each batch's status (via /ai/v1, not the scripts' /v1) every 20 ms; for each batch, the
    length of the emulator's call log just before the read that first saw it terminal: a script read
    logged at or after that index came after the batch had finished (strict: at most one read's time
    early)."""

    def __init__(self, emu: EmulatorServer, batch_ids: list[str]) -> None:
        self.emu, self.batch_ids = emu, batch_ids
        self.index: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        session = requests.Session()
        root, headers = self.emu.root_url, self.emu.headers
        while not self.stop.is_set() and len(self.index) < len(self.batch_ids):
            for batch_id in self.batch_ids:
                if batch_id in self.index:
                    continue
                before = len(session.get(root + "/_emulator/requests", timeout=10).json()["requests"])
                batch = session.get(f"{root}/ai/v1/batches/{batch_id}", headers=headers, timeout=10).json()
                if batch["status"] in TERMINAL:
                    self.index[batch_id] = before
            time.sleep(0.02)

    def close(self) -> None:
        """Let it see the batches that have just finished, then stop it."""
        self.thread.join(5.0)
        self.stop.set()
        self.thread.join()


def poll_rows(tmp: Path) -> list[dict[str, Any]]:
    shards = []
    start = 0
    for i, size in enumerate(POLL_SIZES):
        shard = tmp / f"poll-{i + 1:03d}.jsonl"
        write_requests(shard, size, 20, start=start)
        start += size
        shards.append(str(shard))
    manifest = tmp / "poll.manifest.json"
    with emulator("--rate", str(POLL_RATE), "--start-delay", "0") as emu:
        emu.configure(paused=True)
        submitted = probe(emu, tmp, "submit.py", *shards, "--manifest", str(manifest))
        batch_ids = [b["batch_id"] for b in submitted["stdout"]["batches"]]
        finishes = Finishes(emu, batch_ids)
        mark = len(emu.requests_log())
        emu.configure(paused=False)
        try:
            args = (
                "--manifest",
                str(manifest),
                "--wait",
                "--interval",
                str(POLL_INTERVAL),
                "--timeout",
                "120",
            )
            probe(emu, tmp, "poll.py", *args)
        finally:
            finishes.close()
        log = emu.requests_log()
    if len(finishes.index) < len(batch_ids):
        raise RuntimeError(
            f"poll.py exited before batches finished: {sorted(set(batch_ids) - set(finishes.index))}"
        )
    after = reads_after_finish(log, mark, finishes.index)
    total_reads = sum(1 for c in log[mark:] if c["path"].startswith("/v1/batches"))
    worst = max(after.values())
    return [
        {
            "benchmark": f"poll --wait --interval {POLL_INTERVAL:g}, {len(POLL_SIZES)} batches ending apart",
            "baseline": f"{total_reads} batch reads in all",
            "measured": "reads after finishing: " + ", ".join(str(after[b]) for b in batch_ids),
            "ratio": "",
            "target": "<= 1 per batch",
            "ok": worst <= 1,
        }
    ]


def reads_after_finish(log: list[dict[str, Any]], mark: int, finished_at: dict[str, int]) -> dict[str, int]:
    """Per batch: the scripts' reads of it (GET /v1/batches/ID, or a GET /v1/batches list, which reads
    them all) logged after it had finished."""
    after = dict.fromkeys(finished_at, 0)
    for index, call in enumerate(log[mark:], start=mark):
        if call["method"] != "GET" or not call["path"].startswith("/v1/batches"):
            continue
        tail = call["path"][len("/v1/batches") :].strip("/")
        for batch_id, finished in finished_at.items():
            if index >= finished and tail in ("", batch_id):
                after[batch_id] += 1
    return after


def next_check_row(tmp: Path) -> dict[str, Any]:
    """poll.py once at about 7.5% of a batch expected to take NEXT_CHECK_S: the next_check_seconds it
    suggests, against the expected remaining time (issue 15 item 4; shown, no target)."""
    total = int(NEXT_CHECK_RATE * NEXT_CHECK_S)
    source = tmp / "next-check.jsonl"
    write_requests(source, total, 10)
    manifest = tmp / "next-check.manifest.json"
    with emulator("--rate", str(NEXT_CHECK_RATE), "--start-delay", "0") as emu:
        submitted = probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest), "--no-validate")
        batch_id = submitted["stdout"]["batches"][0]["batch_id"]
        deadline = time.monotonic() + NEXT_CHECK_S
        while time.monotonic() < deadline:
            counts = batch_now(emu, batch_id).get("request_counts") or {}
            if int(counts.get("completed", 0)) >= 0.075 * total:
                break
            time.sleep(0.05)
        polled = probe(emu, tmp, "poll.py", "--manifest", str(manifest), ok=(0, 7))["stdout"]
    (batch,) = polled["batches"]
    done = int(batch.get("request_counts", {}).get("completed", 0))
    remaining = (total - done) / NEXT_CHECK_RATE
    told = polled.get("next_check_seconds")
    return {
        "benchmark": f"poll once at {100 * done / total:.1f}% of a {NEXT_CHECK_S:g}-s batch: next_check_seconds",
        "baseline": f"about {remaining:.0f}s remaining",
        "measured": f"{told}s" + (f" (1/{remaining / told:.0f} of the time left)" if told else ""),
        "ratio": "",
        "target": "(info)",
        "ok": True,
    }


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dw-bench-scale-") as tmp:
        growth, runs = growth_rows(Path(tmp))
        rows += growth
        rows += memory_rows(runs)
        rows.append(emulator_row(runs))
        rows.append(emulator_vs_bare_row(runs))
        rows += first_batch_rows(Path(tmp))
        rows += poll_rows(Path(tmp))
        rows.append(next_check_row(Path(tmp)))
    return rows


if __name__ == "__main__":
    from run import print_tables  # bench/ is sys.path[0] when this file runs

    print_tables(run())
