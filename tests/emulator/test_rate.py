"""The built-in model processes batch requests at the `--rate` it is given: a low rate is honoured, and
its capacity is measured against this machine's own speed: the emulator's CPU per request must stay
below one bare loop's doing only what an emulator that answered each request as it ran could not skip
(select each body from SQLite, parse it, make an answer line, store it). The emulator answers plain
requests at upload (emulator/prepared.py) and completes them in SQL as they run, so it needs well under
that loop (0.45x measured here); 1x fails a run that went back to answering each request as it runs.
Measured as CPU time, which other processes on a shared machine do not inflate the way they stretch
wall-clock time; this machine's CPU time still varies by about a fifth from run to run, hence the least of
two runs against the least of three bare loops. bench/bench_scale.py still measures the wall-clock rate
against 50,000/s. A fixed bound (a core's second per 50,000 requests) failed on every run on a machine
twice as slow as the one it was set on."""

from __future__ import annotations

import json
import os
import time

import pytest
from bare_loop import bare_loop_seconds
from conftest import Api, chat_line
from emulator_server import EmulatorServer


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_batch(emu: EmulatorServer, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from the batch's start to its end."""
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
    while done["status"] == "in_progress":
        time.sleep(0.05)
        done = api.get(f"/batches/{b['id']}").json()
    wall, used = time.monotonic() - t, cpu_seconds(emu.pid) - cpu
    assert done["request_counts"] == {"total": n, "completed": n, "failed": 0}
    return wall, used


def test_a_low_rate_is_honoured():
    with EmulatorServer("--start-delay", "0", "--rate", "1000") as emu:
        wall, _ = run_batch(emu, 1000)
    assert wall >= 0.85  # 1,000 requests at 1,000/s (less the 0.1 s the rate may save up)


@pytest.mark.serial  # a time bound: runs alone, after the parallel run (make test)
def test_capacity_against_a_bare_loop_on_this_machine():
    # Two batches and three bare loops, in turn; the least CPU of each side is compared: a host that
    # inflates CPU time now and then (seen here: one batch at 1.7x with the bare loop at its usual
    # speed) rarely does so to every run of one side and to none of the other's
    n = 30_000
    bare = [bare_loop_seconds(n)]
    used = []
    with EmulatorServer("--start-delay", "0", "--rate", "50000") as emu:
        for _ in range(2):
            wall, cpu = run_batch(emu, n)
            used.append(cpu)
            bare.append(bare_loop_seconds(n))
            print(
                f"{n} requests: {wall:.2f}s wall ({n / wall:.0f}/s); CPU {cpu:.2f}s ({n / cpu:.0f}/s);"
                f" the bare loop {bare[-1]:.2f}s"
            )
        prepared = emu.stats()["prepared_answers"]
    assert prepared == 2 * n  # every request completed as prepared
    assert min(used) <= min(bare), (used, bare)
