"""Transfer benchmarks against the local emulator over real HTTP, with curl as the same-run baseline.

- upload: submit.py's upload phase (and the whole command) vs ``curl -F`` of the same ~150 MB file;
  peak RSS of submit.py (validation included) must stay under 100 MiB;
- download: the whole fetch_results.py (download + results.jsonl, interpreter start-up included) of a
  job poll.py has seen finish vs ``curl`` GET of the same output content (50,000 results), target >= 0.8x
  curl's throughput (and, for information, the same straight after submit.py); peak RSS flat between
  1,000 and 50,000 results;
- latency: a 10,000-request batch, ``poll.py --wait`` then ``fetch_results.py``, and
  ``fetch_results.py --follow``: how long after completing each result reaches the disk;
- API economy: the calls each flow made, from the emulator's call log.

curl is run with ``-H 'Expect:'``: without it curl waits for a ``100 Continue`` before sending a large
body, a round trip (up to 1 s when the server does not answer it) that the scripts never pay.
Scripts run as subprocesses through bench/probe.py, which times their phases and reads their VmHWM.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from harness import (
    KEY,
    EmulatorServer,
    calls_summary,
    curl,
    emulator,
    growth_row,
    info,
    paired,
    probe,
    script_calls,
    throughput_row,
    wait_terminal,
    write_requests,
)

REPEAT = 3
DOWNLOAD_REPEAT = (
    5  # the fetch target's pairs: a wall-clock ratio on a shared machine needs the median of more
)
UPLOAD_LINES = 50_000
UPLOAD_WORDS = 600  # about 3 KB a line: 150 MB
DOWNLOAD_LINES = 50_000
SMALL_LINES = 1_000
LATENCY_LINES = 10_000
LATENCY_RATE = 2_000.0  # requests/s: the batch takes about 5 s
POLL_INTERVAL = 2.0
FOLLOW_INTERVAL = 1.0
SAMPLE_S = 0.05


def skip_rows(reason: str) -> list[dict[str, Any]]:
    return [{"benchmark": f"transfer benchmarks skipped: {reason}", "ok": True}]


# --------------------------------------------------------------------------- upload


def bench_upload(tmp: Path) -> list[dict[str, Any]]:
    source = tmp / "upload.jsonl"
    write_requests(source, UPLOAD_LINES, UPLOAD_WORDS)
    mbytes = source.stat().st_size / 1e6
    runs: list[dict[str, Any]] = []
    # paused: the created batches must not be processed while the next upload is measured
    with emulator("--rate", "0", "--start-delay", "0") as emu:
        emu.configure(paused=True)

        def with_curl() -> float:
            return curl(
                "-H", "Expect:", "-F", "purpose=batch", "-F", f"file=@{source}", emu.base_url + "/files"
            )

        def with_submit() -> float:
            manifest = tmp / f"upload-{len(runs)}.manifest.json"
            runs.append(probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest)))
            return float(runs[-1]["phases"].get("upload", runs[-1]["wall"]))

        base, upload = paired(with_curl, with_submit)
    whole = statistics.median(r["wall"] for r in runs)
    rss = max(r["peak_rss_kib"] for r in runs) / 1024
    return [
        throughput_row(f"upload {mbytes:.0f} MB: submit.py upload phase", "curl -F", base, upload, mbytes),
        info(
            throughput_row("upload: whole submit.py (validate+upload+create)", "curl -F", base, whole, mbytes)
        ),
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
    """Submit ``source`` and wait for its batch; the manifest then knows it finished, as after the usual
    ``poll.py --wait`` (a fetch then asks for the output at once: doubleword.headstart). A copy of the
    manifest as submit.py left it is kept beside it (``.submitted``): a fetch from it asks the status first."""
    manifest = tmp / f"{source.stem}.manifest.json"
    result = probe(emu, tmp, "submit.py", str(source), "--manifest", str(manifest), "--no-validate")
    (batch,) = wait_terminal(emu, [result["stdout"]["batches"][0]["batch_id"]])
    shutil.copyfile(manifest, submitted(manifest))
    probe(emu, tmp, "poll.py", "--manifest", str(manifest))
    return manifest, batch


def submitted(manifest: Path) -> Path:
    return manifest.with_suffix(".submitted")


def fetch_fresh(emu: EmulatorServer, tmp: Path, manifest: Path, tag: str, *extra: str) -> dict[str, Any]:
    """fetch_results.py into an empty directory, from a copy of the manifest (a first download)."""
    copy = tmp / f"fetch-{tag}.manifest.json"
    shutil.copyfile(manifest, copy)
    out = tmp / f"fetch-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    result = probe(emu, tmp, "fetch_results.py", "--manifest", str(copy), "--out", str(out), *extra)
    shutil.rmtree(out, ignore_errors=True)
    return result


@contextlib.contextmanager
def plain_json() -> Iterator[None]:
    """Scripts started inside take the standard library's JSON path (no orjson)."""
    os.environ["DOUBLEWORD_PURE_JSON"] = "1"
    try:
        yield
    finally:
        del os.environ["DOUBLEWORD_PURE_JSON"]


def bench_download(tmp: Path) -> list[dict[str, Any]]:
    big, small = tmp / "results-big.jsonl", tmp / "results-small.jsonl"
    write_requests(big, DOWNLOAD_LINES, 100)
    write_requests(small, SMALL_LINES, 100)
    runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    accelerated = importlib.util.find_spec("orjson") is not None
    with emulator("--rate", "0", "--start-delay", "0") as emu:
        manifest, batch = submit_and_finish(emu, tmp, big)
        small_manifest, _ = submit_and_finish(emu, tmp, small)
        content = f"{emu.base_url}/files/{batch['output_file_id']}/content"
        fetched = tmp / "curl-output.jsonl"

        def with_curl() -> float:
            return curl("-o", str(fetched), content)

        def with_fetch() -> float:
            runs.append(fetch_fresh(emu, tmp, manifest, str(len(runs))))
            return float(runs[-1]["wall"])

        def with_plain_fetch() -> float:
            with plain_json():
                plain_runs.append(fetch_fresh(emu, tmp, manifest, f"plain-{len(plain_runs)}"))
            return float(plain_runs[-1]["wall"])

        def with_fetch_after_submit() -> float:
            return float(fetch_fresh(emu, tmp, submitted(manifest), "after-submit")["wall"])

        def with_bare_reader() -> float:
            return bare_reader(content, tmp / "bare-output.jsonl")

        base, _, after_submit, *others = paired(
            with_curl,
            with_fetch,
            with_fetch_after_submit,
            *([with_plain_fetch] if accelerated else []),
            with_bare_reader,
            repeat=DOWNLOAD_REPEAT,
        )
        bare = others[-1]
        mbytes = fetched.stat().st_size / 1e6
        small_runs = [fetch_fresh(emu, tmp, small_manifest, f"small-{i}") for i in range(REPEAT)]
    whole = statistics.median(r["wall"] for r in runs)
    rss_small = statistics.median(r["peak_rss_kib"] for r in small_runs) / 1024
    rss_big = statistics.median(r["peak_rss_kib"] for r in runs) / 1024
    label = f"{DOWNLOAD_LINES:,} results / {mbytes:.0f} MB"
    cpu = statistics.median(r["cpu"] for r in runs)
    rows = [
        throughput_row(
            f"fetch {label}: whole fetch_results.py (download + results.jsonl; {'orjson' if accelerated else 'json'}, "
            f"{cpu:.2f}s CPU)",
            "curl GET content",
            base,
            whole,
            mbytes,
        )
    ]
    rows.append(
        info(
            throughput_row(
                "fetch: the same from the manifest as submit.py left it (not told the batch finished: "
                "its status is asked first, no early request)",
                "curl GET content",
                base,
                after_submit,
                mbytes,
            )
        )
    )
    if plain_runs:  # the standard library path, for information (the accelerator is optional)
        plain_cpu = statistics.median(r["cpu"] for r in plain_runs)
        rows.append(
            info(
                throughput_row(
                    f"fetch: the same without orjson (DOUBLEWORD_PURE_JSON=1; {plain_cpu:.2f}s CPU)",
                    "curl GET content",
                    base,
                    statistics.median(r["wall"] for r in plain_runs),
                    mbytes,
                )
            )
        )
    # What any client built on requests pays here before and while it reads (start-up and import ~0.1 s
    # against curl's ~0.01 s): the fetch beside a Python process that only streams the body to a file.
    rows.append(
        info(
            throughput_row(
                "fetch: whole fetch_results.py vs a bare Python reader (python, import requests, the body "
                "streamed to a file, nothing else)",
                "bare reader",
                bare,
                whole,
                mbytes,
            )
        )
    )
    rows.append(
        info(throughput_row("the bare Python reader vs curl", "curl GET content", base, bare, mbytes))
    )
    rows.append(
        growth_row(f"fetch: peak RSS {SMALL_LINES:,} vs {DOWNLOAD_LINES:,} results", rss_small, rss_big, 1.2)
    )
    return rows


BARE_READER = """
import os, sys, requests
url, path = sys.argv[1:]
headers = {"Authorization": "Bearer " + os.environ["DOUBLEWORD_API_KEY"]}
with requests.get(url, headers=headers, stream=True, timeout=60) as reply, open(path, "wb") as out:
    reply.raise_for_status()
    for chunk in reply.iter_content(1 << 16):
        out.write(chunk)
"""


def bare_reader(url: str, path: Path) -> float:
    """Wall time of a Python process that streams ``url`` to ``path`` with requests, as a script starts."""
    env = dict(os.environ, DOUBLEWORD_API_KEY=KEY, NO_PROXY="*")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_READER, url, str(path)], env=env, check=True)
    return time.perf_counter() - start


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


def bench_latency(tmp: Path) -> list[dict[str, Any]]:
    source = tmp / "latency.jsonl"
    write_requests(source, LATENCY_LINES, 60)
    rows: list[dict[str, Any]] = []
    rate = str(LATENCY_RATE)
    with emulator("--rate", rate, "--start-delay", "0.5") as emu:
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
    from run import print_tables  # bench/ is sys.path[0] when this file runs

    print_tables(run())
