"""Big batches are answered partly in a second process (emulator/answer_pool.py): the answers must be the
ones the emulator gives anywhere else, requests the pool cannot answer must still be answered, and a pool
process that dies must not lose or stall a request."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import CHAT, Api, chat_line
from emulator_server import EmulatorServer

from emulator.worker import POOL_MIN, TICK_S

PLAIN = 2000
OTHER = 400  # copies of the first plain lines with a no-op `tools: []`: the general path answers them
PROMPTS = ("hello é 😀", 'quote "q" and \\ backslash', "x" * 900, "line\nbreak\ttab")


def mixed_lines() -> list[dict]:
    lines = []
    for i in range(PLAIN):
        budget = 5 if i % 7 == 0 else 64  # every seventh answer is cut short by its budget
        lines.append(chat_line(i, f"{PROMPTS[i % len(PROMPTS)]} #{i}", max_tokens=budget))
    for i in range(OTHER):
        twin = lines[i]
        lines.append({**twin, "custom_id": f"other-{i}", "body": {**twin["body"], "tools": []}})
    return lines


def wait_for_pool(emu: EmulatorServer) -> None:
    deadline = time.monotonic() + 30
    while emu.stats()["pool"] != "ready":
        assert time.monotonic() < deadline, emu.stats()
        time.sleep(0.05)


def all_lines(api: Api, file_id: str) -> list[dict]:
    out: list[dict] = []
    while True:
        page = api.lines(file_id, skip=len(out), limit=100)
        out += page
        if len(page) < 100:
            return out


def test_pool_answers_match_the_general_path_and_the_rest_are_answered_here():
    # --rate 0 (no limit): every tick runs 2,000 rows, so the first runs the plain lines, all in the pool
    with EmulatorServer("--start-delay", "0", "--rate", "0") as emu:
        api = Api(emu)
        lines = mixed_lines()
        emu.configure(paused=True)
        batch = api.batch(lines)
        wait_for_pool(emu)  # it starts with a batch the rate can run in big ticks
        emu.configure(paused=False)
        done = api.wait(batch["id"], timeout=60)
        stats = emu.stats()
        assert done["request_counts"] == {"total": len(lines), "completed": len(lines), "failed": 0}
        got = {x["custom_id"]: x for x in all_lines(api, done["output_file_id"])}
    assert sorted(got) == sorted(x["custom_id"] for x in lines)
    # The pool answered the plain requests, and only those.
    assert stats["pool_answers"] == PLAIN
    for line in got.values():
        body = line["response"]["body"]
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"] is None
        assert body["id"] == "chatcmpl-" + line["id"].removeprefix("batch_req_").replace("-", "")
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        budget = 5 if int(line["custom_id"].rsplit("-", 1)[1]) % 7 == 0 else 64
        finish = body["choices"][0]["finish_reason"]
        assert usage["completion_tokens"] <= budget
        assert finish == "stop" or (finish == "length" and usage["completion_tokens"] == budget)
        assert budget == 64 or finish == "length"  # 5 tokens are too few for any of these answers
    # The same request answers alike whichever path made it (the pool, or the general path here).
    for i in range(OTHER):
        a, b = got[f"req-{i}"]["response"]["body"], got[f"other-{i}"]["response"]["body"]
        for key in ("choices", "usage", "model", "object"):
            assert a[key] == b[key], (i, key)


def pool_pids(pid: int) -> list[int]:
    """The emulator's pool processes (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(x) for x in f.read().split()]
    out = []
    for child in children:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                out.append(child)
    return out


def test_a_dead_pool_process_loses_no_request():
    # A rate whose every tick has enough rows for the pool (at 15,000/s a tick on an idle fast machine
    # had 300, fewer than POOL_MIN, and answered them inline: the pool never saw 1,000), and about 1.6 s of
    # work left when the test pauses it (50,000 requests, a file's most, at 31,250/s): a test process
    # starved for a second on a loaded machine (it was: the batch ended before it was seen running)
    # still finds it running.
    rate = int(1.25 * POOL_MIN / TICK_S)
    n = 50_000
    with EmulatorServer("--start-delay", "0", "--rate", str(rate)) as emu:
        api = Api(emu)
        emu.configure(paused=True)
        batch = api.batch([chat_line(i, f"question {i}", max_tokens=16) for i in range(n)])
        wait_for_pool(emu)
        (child,) = pool_pids(emu.pid)
        emu.configure(paused=False)
        deadline = time.monotonic() + 30
        while emu.stats()["pool_answers"] < 1000:
            assert time.monotonic() < deadline, emu.stats()
            time.sleep(0.02)
        emu.configure(paused=True)  # no tick runs until the pool is dead (however slow this machine is)
        assert api.get(f"/batches/{batch['id']}").json()["status"] == "in_progress"
        os.kill(child, signal.SIGKILL)
        emu.configure(paused=False)
        done = api.wait(batch["id"], timeout=60)
        stats = emu.stats()
        assert stats["pool"] == "broken"
        assert done["request_counts"] == {"total": n, "completed": n, "failed": 0}
        assert 1000 <= stats["pool_answers"] < n  # the rest were answered by the worker itself
        r = api.get(f"/files/{done['output_file_id']}/content")
        ids = [line.split('"custom_id":"', 1)[1].split('"', 1)[0] for line in r.text.splitlines()]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(n))


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def test_the_pool_process_ends_with_a_killed_server():
    """A SIGKILLed server (the crash tests do it) leaves no pool process waiting for work for ever."""
    emu = EmulatorServer("--start-delay", "0", "--rate", "50000")
    try:
        api = Api(emu)
        emu.configure(paused=True)
        api.batch([chat_line(i) for i in range(1000)])
        wait_for_pool(emu)
        (child,) = pool_pids(emu.pid)
    finally:
        emu.kill()
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "the pool process outlived its server"
        time.sleep(0.1)


def test_a_server_stopped_with_sigterm_stops_its_pool_at_once():
    emu = EmulatorServer("--start-delay", "0", "--rate", "50000")
    api = Api(emu)
    emu.configure(paused=True)
    api.batch([chat_line(i) for i in range(1000)])
    wait_for_pool(emu)
    (child,) = pool_pids(emu.pid)
    start = time.monotonic()
    emu.stop()
    assert emu.proc is not None and emu.proc.returncode == 0  # exited by itself, not killed after 10 s
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while alive(child):
        assert time.monotonic() < deadline, "the pool process outlived its server"
        time.sleep(0.1)


def test_an_answer_for_another_request_is_never_stored():
    """In process: the worker checks each pool answer's request id before storing it; a wrong one (parts
    out of step after a failure) is answered by the worker itself and the pool is not used again."""
    from emulator.config import Config
    from emulator.state import State

    state = State(Config(db=":memory:", start_delay=0))
    st = state.store
    rows = [("a", "POST", "/v1/chat/completions", CHAT, json.dumps(chat_line("a")["body"], sort_keys=True))]
    f = st.add_input_file("f1", "o", 1, "x", "batch", 0, rows, 1)
    b = st.create_batch("o", f, "/v1/chat/completions", "24h", {}, 0)
    st.populate(st.batch_row(b["id"]))
    (row,) = st.pending_requests(st.batch_row(b["id"]), st.clock.now(), 10)
    wrong = ('{"id":"batch_req_00000000-0000-4000-8000-000000000000","custom_id":"a"}', 1, 1)
    state.worker.settle_answers([row], [wrong])
    assert state.worker.pool.state() == "broken" and state.worker.pool.answered == 0
    (line,) = st.result_lines(b["id"], "completed", None, None).page(0, 10)
    assert json.loads(line)["id"] == f"batch_req_{row['id']}"


def test_no_pool_process_at_the_default_rate():
    """At the default 5,000/s a tick runs ~100 rows: starting a process for them would only cost. Its own
    emulator: the module's one may have started a pool for another test's rate (the order is xdist's)."""
    with EmulatorServer("--start-delay", "0") as emu:
        api = Api(emu)
        done = api.wait(api.batch([chat_line(i) for i in range(1000)])["id"])
        assert done["request_counts"]["completed"] == 1000
        assert emu.stats()["pool"] == "off"
