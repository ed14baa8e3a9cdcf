"""The built-in model processes batch requests at the `--rate` it is given: a low rate is honoured, and
the emulator has the CPU capacity for 50,000 requests/s (measured as its own CPU time, which other
processes on a shared machine do not inflate the way they stretch wall-clock time)."""

from __future__ import annotations

import json
import os
import time

from conftest import Api, chat_line
from emulator_server import EmulatorServer


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_batch(emu: EmulatorServer, n: int) -> tuple[float, float]:
    """(wall seconds, emulator CPU seconds) from the batch's start to its end."""
    api = Api(emu)
    content = "".join(
        json.dumps(chat_line(i, f"what is {i} times 7?", max_tokens=64)) + "\n" for i in range(n)
    )
    fid = api.upload(content).json()["id"]
    emu.configure(paused=True)
    b = api.create(fid).json()
    api.wait(b["id"], statuses=("in_progress",))
    t, cpu = time.monotonic(), cpu_seconds(emu.pid)
    emu.configure(paused=False)
    done = api.get(f"/batches/{b['id']}").json()
    while done["status"] == "in_progress":  # a slow poll: each read counts the batch's rows
        time.sleep(0.25)
        done = api.get(f"/batches/{b['id']}").json()
    wall, used = time.monotonic() - t, cpu_seconds(emu.pid) - cpu
    assert done["request_counts"] == {"total": n, "completed": n, "failed": 0}
    return wall, used


def test_a_low_rate_is_honoured():
    with EmulatorServer("--start-delay", "0", "--rate", "1000") as emu:
        wall, _ = run_batch(emu, 2000)
    assert wall >= 1.8  # 2,000 requests at 1,000/s


def test_capacity_for_fifty_thousand_requests_per_second():
    n = 30_000
    with EmulatorServer("--start-delay", "0", "--rate", "50000") as emu:
        wall, used = run_batch(emu, n)
    print(
        f"{n} requests: {wall:.2f}s wall ({n / wall:.0f}/s), {used:.2f}s emulator CPU ({n / used:.0f}/CPU-s)"
    )
    assert used <= n / 50_000
