"""Issue 6, item 3: the server dies (SIGKILL) mid-batch and comes back on the same SQLite file and port.

``fetch_results.py --follow`` and ``poll.py --wait`` are running when it happens; they must ride through
(retrying refused connections and cut downloads) and finish with complete, correct results: every input
once, in order, with its answer; nothing created twice on the server.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from emulator_server import EmulatorServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(h, name: str, *args: str, env: dict[str, str], out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(h.SCRIPTS / f"{name}.py"), *args],
        env=env,
        stdout=open(out.with_suffix(".stdout"), "w"),  # noqa: SIM115 - the child owns it
        stderr=open(out.with_suffix(".stderr"), "w"),  # noqa: SIM115
    )


def finished(proc: subprocess.Popen, out: Path, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    code = proc.wait(timeout)
    stderr = out.with_suffix(".stderr").read_text()
    return code, json.loads(out.with_suffix(".stdout").read_text()), stderr


def server_objects(emu: EmulatorServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def get(what: str) -> list[dict[str, Any]]:
        r = requests.get(f"{emu.base_url}/{what}", headers=emu.headers, params={"limit": 100}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]

    return [f for f in get("files") if f.get("purpose") == "batch"], get("batches")


def completed_so_far(emu: EmulatorServer, batch_ids: list[str]) -> int:
    total = 0
    for batch_id in batch_ids:
        r = requests.get(f"{emu.base_url}/batches/{batch_id}", headers=emu.headers, timeout=10)
        total += r.json()["request_counts"]["completed"]
    return total


def run_restarts(tmp_path: Path, h, seed: int, n: int, restarts: int) -> dict[str, Any]:
    rng = random.Random(seed)
    db = str(tmp_path / "emulator.sqlite3")
    port = free_port()
    args = ("--start-delay", "0", "--rate", "400", "--quiet")
    emu = EmulatorServer(*args, api_key=h.CANARY_KEY, db=db, port=port)
    try:
        base_url = emu.base_url
        env = h.script_env(base_url)
        lines = h.chat_lines(n)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        manifest = tmp_path / "jobs.jsonl.manifest.json"
        code, doc, err = h.run_script("submit", str(src), "--max-requests", str(-(-n // 2)), env=env)
        assert code == 0, err
        batch_ids = [b["batch_id"] for b in doc["batches"]]
        fetch = spawn(
            h,
            "fetch_results",
            "--manifest",
            str(manifest),
            "--follow",
            "--interval",
            "0.2",
            "--page-size",
            "100",
            "--timeout",
            "120",
            env=env,
            out=tmp_path / "fetch",
        )
        poll = spawn(
            h,
            "poll",
            *batch_ids,
            "--wait",
            "--interval",
            "0.2",
            "--timeout",
            "120",
            env=env,
            out=tmp_path / "poll",
        )
        downs = []
        for i in range(restarts):
            # kill it at a random point of the run (seeded), while both scripts are working
            target = int(n * (i + rng.uniform(0.2, 0.8)) / (restarts + 1))
            deadline = time.monotonic() + 60
            while completed_so_far(emu, batch_ids) < target:
                assert time.monotonic() < deadline, "the batches made no progress"
                time.sleep(0.02)
            assert fetch.poll() is None and poll.poll() is None, "the scripts finished before the crash"
            emu.kill()
            down = rng.uniform(0.5, 3.0)
            downs.append(round(down, 2))
            time.sleep(down)
            emu.start()
            assert emu.base_url == base_url
        code, fetched, err = finished(fetch, tmp_path / "fetch")
        assert code == 0 and fetched["complete"] is True, (fetched, err)
        code, polled, err = finished(poll, tmp_path / "poll")
        assert code == 0 and polled["all_terminal"], (polled, err)
        assert [b["status"] for b in polled["batches"]] == ["completed", "completed"]
        files, batches = server_objects(emu)
    finally:
        emu.stop()
    # the scripts noticed the outage and retried through it
    assert "retrying" in (tmp_path / "fetch.stderr").read_text()
    # exactly one upload and one batch per shard survived in the server's state
    data = json.loads(manifest.read_text())
    assert sorted(f["id"] for f in files) == sorted(s["file_id"] for s in data["shards"])
    assert sorted(b["id"] for b in batches) == sorted(batch_ids)
    out = tmp_path / "jobs.results"
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    for line, result in zip(lines, results, strict=True):
        assert (
            result["status"] == "completed" and line["body"]["messages"][-1]["content"] in result["content"]
        )
    output = h.read_jsonl(out / "output.jsonl")
    assert len({o["id"] for o in output}) == len(output) == n
    assert fetched["counts"] == {
        "requests": n, "completed": n, "failed": 0, "truncated": 0, "invalid": 0, "pending": 0, "missing": 0
    }  # fmt: skip
    assert (out / "retry.jsonl").read_bytes() == b""
    h.assert_no_key_in_tree(tmp_path)
    return {"downs": downs}


def test_server_restart_mid_batch(tmp_path, h):
    run_restarts(tmp_path, h, seed=1, n=1200, restarts=1)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(10, 14))
def test_server_restarts_mid_batch_soak(tmp_path, h, seed):
    report = run_restarts(tmp_path, h, seed=seed, n=6000, restarts=3)
    print(f"seed {seed}: {report}")
