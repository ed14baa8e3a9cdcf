"""The built-in model processes batch requests at the `--rate` it is given: a low rate is honoured, and
its capacity is measured against this machine's own speed: the emulator's busiest process (the server,
or the answer pool that makes plain answers of big batches) needs at most 2x the CPU of one bare loop
doing only the work no emulator can skip (select each body from SQLite, parse it, make an answer line,
store it). A fixed bound (a core's second per 50,000 requests, met where it was set) failed on every run
on a machine twice as slow; bench/bench_scale.py still measures the wall-clock rate against 50,000/s.
Measured as CPU time, which other processes on a shared machine do not inflate the way they stretch
wall-clock time; this machine's CPU time still varies by about a fifth from run to run, hence the margin
(the server alone, with no pool, needs about 1.4x the bare loop: the pool's use is checked directly), and
the least of two runs is compared with the least of three bare loops. The margin was 1.6x until a session
that measured 1.0-1.3x on an idle host and 1.5-1.7x an hour later on the same one, slowed (the bare loop
keeps its speed better than a server doing SQLite, pipes and HTTP): 2x still fails a server that doubled
its work per request (the pool's use is checked directly)."""

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


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the emulator's process and of its children (the answer pool)."""
    return cpu_seconds(pid), sum(cpu_seconds(c) for c in children(pid))


def run_batch(emu: EmulatorServer, n: int, pool: bool = False) -> tuple[float, tuple[float, float]]:
    """(wall seconds, (server, pool) CPU seconds) from the batch's start to its end."""
    api = Api(emu)
    content = "".join(
        json.dumps(chat_line(i, f"what is {i} times 7?", max_tokens=64)) + "\n" for i in range(n)
    )
    fid = api.upload(content).json()["id"]
    emu.configure(paused=True)
    b = api.create(fid).json()
    api.wait(b["id"], statuses=("in_progress",))
    deadline = time.monotonic() + 30
    while pool and emu.stats()["pool"] != "ready":  # the pool process starts with a big batch
        assert time.monotonic() < deadline, emu.stats()
        time.sleep(0.05)
    t, cpu = time.monotonic(), tree_cpu(emu.pid)
    emu.configure(paused=False)
    done = api.get(f"/batches/{b['id']}").json()
    while done["status"] == "in_progress":
        time.sleep(0.05)
        done = api.get(f"/batches/{b['id']}").json()
    wall, after = time.monotonic() - t, tree_cpu(emu.pid)
    used = (after[0] - cpu[0], after[1] - cpu[1])
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
    busiest = []
    with EmulatorServer("--start-delay", "0", "--rate", "50000") as emu:
        for _ in range(2):
            wall, (server, pool) = run_batch(emu, n, pool=True)
            busiest.append(max(server, pool))
            bare.append(bare_loop_seconds(n))
            print(
                f"{n} requests: {wall:.2f}s wall ({n / wall:.0f}/s); CPU: server {server:.2f}s, pool "
                f"{pool:.2f}s ({n / max(server, pool):.0f}/s on the busiest core); the bare loop {bare[-1]:.2f}s"
            )
        answered_by_pool = emu.stats()["pool_answers"]
    print(f"{answered_by_pool} of {2 * n} answered by the pool")
    assert answered_by_pool > n  # the pool did most of the answering (of 2 * n)
    assert min(busiest) <= 2.0 * min(bare), (busiest, bare)
