"""Transfer benchmarks against the local emulator over real HTTP, with curl as the same-run baseline.

- upload: submit.py's upload phase (and the whole command) vs ``curl -F`` of the same ~150 MB file;
  peak RSS of submit.py (validation included) must stay under 100 MiB;
- download: fetch_results.py vs ``curl`` GET of the same output content (50,000 results), the download
  phase (everything but the join, interpreter start-up included) and the whole command; peak RSS flat
  between 1,000 and 50,000 results;
- latency: a 10,000-request batch, ``poll.py --wait`` then ``fetch_results.py``, and
  ``fetch_results.py --follow``: how long after completing each result reaches the disk;
- API economy: the calls each flow made, from the emulator's call log.

curl is run with ``-H 'Expect:'``: without it curl waits for a ``100 Continue`` before sending a large
body, a round trip (up to 1 s when the server does not answer it) that the scripts never pay.
Scripts run as subprocesses through bench/probe.py, which times their phases and reads their VmHWM.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(ROOT / "tests"))

from emulator_server import EmulatorServer  # noqa: E402

REPEAT = 3
KEY = "sk-bench"
MODEL = "Qwen/Qwen3.5-9B"
UPLOAD_LINES = 50_000
UPLOAD_WORDS = 600  # about 3 KB a line: 150 MB
DOWNLOAD_LINES = 50_000
SMALL_LINES = 1_000
LATENCY_LINES = 10_000
LATENCY_RATE = 2_000.0  # requests/s: the batch takes about 5 s
POLL_INTERVAL = 2.0
FOLLOW_INTERVAL = 1.0
SAMPLE_S = 0.05
WORDS_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    'they you were her she there been one all we their résumé naïve café 東京 données "quoted" tab\there'
)


# --------------------------------------------------------------------------- inputs


def write_requests(path: Path, count: int, words: int) -> None:
    """``count`` chat requests of about ``words`` words each (a pool of prompts, each id unique)."""
    rng = random.Random(11)
    words_list = WORDS_TEXT.split(" ")
    pool = [" ".join(rng.choice(words_list) for _ in range(words)) for _ in range(256)]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            line = {
                "custom_id": f"req-{i:05d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Ticket {i}: {pool[i % len(pool)]}"}],
                    "max_tokens": 256,
                },
            }
            handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- processes


def env_for(emu: EmulatorServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DOUBLEWORD_API_KEY": KEY, "DOUBLEWORD_BASE_URL": emu.base_url, "NO_PROXY": "*"})
    return env


def probe(emu: EmulatorServer, tmp: Path, script: str, *args: str) -> dict[str, Any]:
    """Run scripts/<script> through probe.py; its report plus stdout parsed as JSON."""
    report = tmp / "probe.json"
    cmd = [sys.executable, str(BENCH_DIR / "probe.py"), str(report), str(SCRIPTS / script), *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env_for(emu), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{script} exited {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads(report.read_text())
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


def wait_terminal(emu: EmulatorServer, batch_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = batch_now(emu, batch_id)
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.1)
    raise RuntimeError(f"batch {batch_id} did not finish within {timeout:g}s")


def batch_now(emu: EmulatorServer, batch_id: str) -> dict[str, Any]:
    # The bench's own look-ups go through /ai/v1 so the call log tells them apart from the scripts'.
    url = f"{emu.root_url}/ai/v1/batches/{batch_id}"
    response = requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    response.raise_for_status()
    return response.json()


def script_calls(emu: EmulatorServer, since: int) -> list[dict[str, Any]]:
    return [c for c in emu.requests_log()[since:] if c["path"].startswith("/v1/")]


# --------------------------------------------------------------------------- rows


def throughput_row(name: str, baseline: str, base_s: float, ours_s: float, mbytes: float) -> dict[str, Any]:
    ratio = base_s / ours_s  # throughput ratio: ours / curl's
    return {
        "benchmark": name,
        "baseline": f"{baseline} {base_s:.2f}s ({mbytes / base_s:.0f} MB/s)",
        "measured": f"{ours_s:.2f}s ({mbytes / ours_s:.0f} MB/s)",
        "ratio": round(ratio, 2),
        "target": ">= 0.8x",
        "ok": ratio >= 0.8,
    }


def info_row(name: str, baseline: str, base_s: float, ours_s: float, mbytes: float) -> dict[str, Any]:
    row = throughput_row(name, baseline, base_s, ours_s, mbytes)
    row.update(target="(info)", ok=True)
    return row


def skip_rows(reason: str) -> list[dict[str, Any]]:
    return [
        {"benchmark": f"transfer benchmarks skipped: {reason}", "ok": True},
    ]


def paired(*fns: Callable[[], float], repeat: int = REPEAT) -> list[float]:
    """Median of each measurement, the candidates run in alternation so load affects all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for index, fn in enumerate(fns):
            times[index].append(fn())
    return [statistics.median(t) for t in times]


# --------------------------------------------------------------------------- upload


def bench_upload(tmp: Path) -> list[dict[str, Any]]:
    source = tmp / "upload.jsonl"
    write_requests(source, UPLOAD_LINES, UPLOAD_WORDS)
    mbytes = source.stat().st_size / 1e6
    runs: list[dict[str, Any]] = []
    # paused: the created batches must not be processed while the next upload is measured
    with EmulatorServer("--rate", "0", "--start-delay", "0", "--quiet", api_key=KEY) as emu:
        emu.configure(paused=True)

        def with_curl() -> float:
            return curl(
                "-H", "Expect:", "-F", "purpose=batch", "-F", f"file=@{source}", emu.base_url + "/files"
            )

        def with_submit() -> float:
            manifest = tmp / f"upload-{len(runs)}.manifest.json"
            runs.append(probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest)))
            return float(runs[-1]["phases"]["upload"])

        base, upload = paired(with_curl, with_submit)
    whole = statistics.median(r["wall"] for r in runs)
    rss = max(r["peak_rss_kib"] for r in runs) / 1024
    return [
        throughput_row(f"upload {mbytes:.0f} MB: submit.py upload phase", "curl -F", base, upload, mbytes),
        info_row("upload: whole submit.py (validate+upload+create)", "curl -F", base, whole, mbytes),
        {
            "benchmark": "upload: peak RSS of submit.py (validating)",
            "baseline": "",
            "measured": f"{rss:.1f} MiB",
            "ratio": "",
            "target": "< 100 MiB",
            "ok": rss < 100,
        },
    ]


# --------------------------------------------------------------------------- download


def submit_and_finish(emu: EmulatorServer, tmp: Path, source: Path) -> tuple[Path, dict[str, Any]]:
    manifest = tmp / f"{source.stem}.manifest.json"
    result = probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest), "--no-validate")
    batch = wait_terminal(emu, result["stdout"]["batches"][0]["batch_id"])
    return manifest, batch


def fetch_fresh(emu: EmulatorServer, tmp: Path, manifest: Path, tag: str, *extra: str) -> dict[str, Any]:
    """fetch_results.py into an empty directory, from a copy of the manifest (a first download)."""
    copy = tmp / f"fetch-{tag}.manifest.json"
    shutil.copyfile(manifest, copy)
    out = tmp / f"fetch-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    result = probe(emu, tmp, "fetch_results.py", "--manifest", str(copy), "--out", str(out), *extra)
    shutil.rmtree(out, ignore_errors=True)
    return result


def bench_download(tmp: Path) -> list[dict[str, Any]]:
    big, small = tmp / "results-big.jsonl", tmp / "results-small.jsonl"
    write_requests(big, DOWNLOAD_LINES, 100)
    write_requests(small, SMALL_LINES, 100)
    runs: list[dict[str, Any]] = []
    with EmulatorServer("--rate", "0", "--start-delay", "0", "--quiet", api_key=KEY) as emu:
        manifest, batch = submit_and_finish(emu, tmp, big)
        small_manifest, _ = submit_and_finish(emu, tmp, small)
        content = f"{emu.base_url}/files/{batch['output_file_id']}/content"
        fetched = tmp / "curl-output.jsonl"

        def with_curl() -> float:
            return curl("-o", str(fetched), content)

        def with_fetch() -> float:
            runs.append(fetch_fresh(emu, tmp, manifest, str(len(runs))))
            return float(runs[-1]["wall"])

        base, _ = paired(with_curl, with_fetch)
        mbytes = fetched.stat().st_size / 1e6
        small_runs = [fetch_fresh(emu, tmp, small_manifest, f"small-{i}") for i in range(REPEAT)]
    download = statistics.median(r["wall"] - r["phases"].get("join", 0.0) for r in runs)
    whole = statistics.median(r["wall"] for r in runs)
    join = statistics.median(r["phases"].get("join", 0.0) for r in runs)
    rss_small = statistics.median(r["peak_rss_kib"] for r in small_runs) / 1024
    rss_big = statistics.median(r["peak_rss_kib"] for r in runs) / 1024
    growth = rss_big / rss_small
    return [
        throughput_row(
            f"download {DOWNLOAD_LINES:,} results / {mbytes:.0f} MB: fetch_results.py (no join)",
            "curl GET content",
            base,
            download,
            mbytes,
        ),
        info_row(
            f"download: whole fetch_results.py (join {join:.2f}s)", "curl GET content", base, whole, mbytes
        ),
        {
            "benchmark": f"download: peak RSS {SMALL_LINES:,} vs {DOWNLOAD_LINES:,} results",
            "baseline": f"{rss_small:.1f} MiB",
            "measured": f"{rss_big:.1f} MiB",
            "ratio": round(growth, 2),
            "target": "<= 1.2x (flat)",
            "ok": growth <= 1.2,
        },
    ]


# --------------------------------------------------------------------------- latency and API economy


class Watcher:
    """Samples, every SAMPLE_S, the batch's finished count (via /ai/v1) and the lines in output.jsonl."""

    def __init__(self, emu: EmulatorServer, batch_id: str, output: Path) -> None:
        self.emu, self.batch_id, self.output = emu, batch_id, output
        self.done: list[tuple[float, int]] = []
        self.disk: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._server, daemon=True)]
        self.threads.append(threading.Thread(target=self._disk, daemon=True))
        for thread in self.threads:
            thread.start()

    def _server(self) -> None:
        session = requests.Session()
        url = f"{self.emu.root_url}/ai/v1/batches/{self.batch_id}"
        while not self.stop.is_set():
            batch = session.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
            counts = batch.get("request_counts") or {}
            self.done.append(
                (time.monotonic(), int(counts.get("completed", 0)) + int(counts.get("failed", 0)))
            )
            time.sleep(SAMPLE_S)

    def _disk(self) -> None:
        lines, offset = 0, 0
        while not self.stop.is_set():
            if self.output.exists():
                with open(self.output, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
                # count whole lines only
                whole = data.rfind(b"\n") + 1
                lines += data.count(b"\n", 0, whole)
                offset += whole
            self.disk.append((time.monotonic(), lines))
            time.sleep(SAMPLE_S)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def last_completion(self, total: int) -> float:
        return next(t for t, n in self.done if n >= total)

    def worst_lag(self) -> float:
        """The longest wait between a result completing and its line being on disk (completion order)."""
        worst, previous = 0.0, 0
        for t_disk, lines in self.disk:
            if lines > previous:
                k = previous + 1  # the earliest-completed line of those that just arrived
                t_done = next(t for t, n in self.done if n >= k)
                worst = max(worst, t_disk - t_done)
                previous = lines
        return worst


def calls_summary(calls: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    kinds: dict[str, int] = {}
    for call in calls:
        path = call["path"]
        if call["method"] == "POST" and path.endswith("/files"):
            kind = "upload"
        elif call["method"] == "POST" and path.endswith("/batches"):
            kind = "create"
        elif path.endswith("/content"):
            kind = "content"
        elif "/batches/" in path:
            kind = "status"
        else:
            kind = f"{call['method']} {path}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds, ", ".join(f"{v} {k}" for k, v in kinds.items())


def bench_latency(tmp: Path) -> list[dict[str, Any]]:
    source = tmp / "latency.jsonl"
    write_requests(source, LATENCY_LINES, 60)
    rows: list[dict[str, Any]] = []
    rate = str(LATENCY_RATE)
    with EmulatorServer("--rate", rate, "--start-delay", "0.5", "--quiet", api_key=KEY) as emu:
        # 1. submit, poll --wait, fetch: results.jsonl on disk after the last completion
        mark = len(emu.requests_log())
        manifest = tmp / "latency-poll.manifest.json"
        submitted = probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest))
        batch_id = submitted["stdout"]["batches"][0]["batch_id"]
        out = tmp / "latency-poll"
        watcher = Watcher(emu, batch_id, out / "output.jsonl")
        try:
            probe(
                emu, tmp, "poll.py", "--manifest", str(manifest), "--wait", "--interval", str(POLL_INTERVAL)
            )
            probe(emu, tmp, "fetch_results.py", "--manifest", str(manifest), "--out", str(out))
            on_disk = time.monotonic()
        finally:
            watcher.close()
        lag = on_disk - watcher.last_completion(LATENCY_LINES)
        limit = POLL_INTERVAL + 2.0
        rows.append(
            {
                "benchmark": f"latency: {LATENCY_LINES:,} requests, poll --wait --interval {POLL_INTERVAL:g} + fetch",
                "baseline": "last completion",
                "measured": f"results.jsonl +{lag:.2f}s",
                "ratio": "",
                "target": f"<= {limit:g}s",
                "ok": lag <= limit,
            }
        )
        duration = watcher.last_completion(LATENCY_LINES) - watcher.done[0][0]
        kinds, text = calls_summary(script_calls(emu, mark))
        # poll looks once per interval until terminal, plus its first look; fetch looks once.
        status_budget = math.ceil((duration + 1.0) / POLL_INTERVAL) + 2
        economical = kinds.get("content", 0) <= 1 and kinds.get("status", 0) <= status_budget
        rows.append(
            {
                "benchmark": "API calls: submit + poll --wait + fetch, 1 batch",
                "baseline": f"{status_budget} status max",
                "measured": f"{sum(kinds.values())} ({text})",
                "ratio": "",
                "target": "no redundant calls",
                "ok": economical,
            }
        )

        # 2. fetch --follow while the batch runs: each line on disk within one interval of completing
        mark = len(emu.requests_log())
        manifest = tmp / "latency-follow.manifest.json"
        submitted = probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest))
        batch_id = submitted["stdout"]["batches"][0]["batch_id"]
        out = tmp / "latency-follow"
        watcher = Watcher(emu, batch_id, out / "output.jsonl")
        try:
            args = ["--manifest", str(manifest), "--out", str(out), "--follow", "--interval"]
            probe(emu, tmp, "fetch_results.py", *args, str(FOLLOW_INTERVAL))
        finally:
            watcher.close()
        worst = watcher.worst_lag()
        rows.append(
            {
                "benchmark": f"latency: fetch --follow --interval {FOLLOW_INTERVAL:g}, worst line",
                "baseline": "its completion",
                "measured": f"+{worst:.2f}s",
                "ratio": "",
                "target": f"<= {FOLLOW_INTERVAL:g}s (+{2 * SAMPLE_S:g}s sampling)",
                "ok": worst <= FOLLOW_INTERVAL + 2 * SAMPLE_S,
            }
        )
        kinds, text = calls_summary(script_calls(emu, mark))
        checks = kinds.get("status", 0)
        rows.append(
            {
                "benchmark": "API calls: submit + fetch --follow, 1 batch",
                "baseline": f"{checks} checks",
                "measured": f"{sum(kinds.values())} ({text})",
                "ratio": "",
                "target": "<= 1 content per check",
                "ok": kinds.get("content", 0) <= checks,
            }
        )
    return rows


def run() -> list[dict[str, Any]]:
    if shutil.which("curl") is None:
        return skip_rows("curl is not installed (the baseline)")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        rows += bench_upload(Path(tmp))
        rows += bench_download(Path(tmp))
        rows += bench_latency(Path(tmp))
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR))
    from run import print_table

    print_table(run())
