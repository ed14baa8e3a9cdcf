"""Plain chat requests are answered at upload (emulator/prepared.py) and completed in SQL when they run:
what a client reads must be byte for byte what the general path (`compose` + `shapes`) gives the same
request, the rest of a batch must still be answered, and the usage counted must be the lines' own."""

from __future__ import annotations

import json
import sqlite3

from conftest import CHAT, Api, chat_line
from emulator_server import EmulatorServer

from emulator.catalog import Catalog
from emulator.model import rid_of
from emulator.model.compose import compose
from emulator.model.shapes import SHAPES
from emulator.outcome import Outcome
from emulator.store.schema import ADDED_COLUMNS
from emulator.worker import output_line

PLAIN = 600
OTHER = 100  # copies of the first plain lines with a no-op `tools: []`: the general path answers them
PROMPTS = ("hello é 😀", 'quote "q" and \\ backslash', "x" * 900, "line\nbreak\ttab", "\u2028 and \x7f")


def plain_lines() -> list[dict]:
    lines = []
    for i in range(PLAIN):
        budget = 5 if i % 7 == 0 else 64  # every seventh answer is cut short by its budget
        line = chat_line(i, f"{PROMPTS[i % len(PROMPTS)]} #{i}", max_tokens=budget)
        if i % 5 == 1:  # a conversation: the answer echoes the last user turn, the prompt counts all
            line["body"]["messages"] = [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": f"first {i}"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": f"second {i}"},
            ]
        if i % 11 == 3:
            line["body"]["priority"] = 1  # removed when stored: the answer is the same
        if i % 13 == 4:
            line["custom_id"] = f'req-{i} "quoted" é'
        lines.append(line)
    return lines


def mixed_lines() -> list[dict]:
    lines = plain_lines()
    for twin in lines[:OTHER]:
        lines.append(
            {**twin, "custom_id": f"other-{twin['custom_id']}", "body": {**twin["body"], "tools": []}}
        )
    return lines


def general_line(served: str, request: dict) -> str:
    """What the general path writes for this request, with the served line's id and created time."""
    seen = json.loads(served)
    req_id = seen["id"].removeprefix("batch_req_")
    body = {k: v for k, v in request["body"].items() if k not in ("priority", "tools")}
    catalog = Catalog([CHAT], [])
    c = compose("/chat/completions", body, CHAT, catalog, 0)
    created = seen["response"]["body"]["created"]
    resp = SHAPES["/chat/completions"](c, rid_of(req_id), CHAT, created, catalog.reasons(CHAT))
    return output_line(req_id, request["custom_id"], Outcome(200, obj=resp))


def served_lines(api: Api, file_id: str) -> dict[str, str]:
    r = api.get(f"/files/{file_id}/content")
    assert r.status_code == 200 and r.headers.get("X-Incomplete") != "true"
    return {json.loads(text)["custom_id"]: text for text in r.content.decode("utf-8").split("\n") if text}


def usage_totals(lines: dict[str, str]) -> tuple[int, int]:
    usage = [json.loads(text)["response"]["body"]["usage"] for text in lines.values()]
    return sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage)


def test_prepared_answers_are_the_general_paths_byte_for_byte():
    with EmulatorServer("--start-delay", "0", "--rate", "0") as emu:
        api = Api(emu)
        lines = mixed_lines()
        done = api.wait(api.batch(lines)["id"], timeout=60)
        assert done["request_counts"] == {"total": len(lines), "completed": len(lines), "failed": 0}
        assert emu.stats()["prepared_answers"] == PLAIN  # the plain ones, and only those
        got = served_lines(api, done["output_file_id"])
        analytics = api.get(f"/batches/{done['id']}/analytics").json()
        size = api.get(f"/files/{done['output_file_id']}").json()["bytes"]
    assert sorted(got) == sorted(x["custom_id"] for x in lines)
    for request in lines[:PLAIN]:
        assert got[request["custom_id"]] == general_line(got[request["custom_id"]], request)
        created = json.loads(got[request["custom_id"]])["response"]["body"]["created"]
        assert done["in_progress_at"] <= created <= done["completed_at"]  # when it ran
    for twin in lines[:OTHER]:  # the general path's own answers: the same reply to the same request
        a = json.loads(got[twin["custom_id"]])["response"]["body"]
        b = json.loads(got[f"other-{twin['custom_id']}"])["response"]["body"]
        assert [a[k] for k in ("choices", "usage", "model")] == [b[k] for k in ("choices", "usage", "model")]
    cut = [json.loads(got[x["custom_id"]])["response"]["body"]["choices"][0] for x in lines[:PLAIN:7]]
    assert {c["finish_reason"] for c in cut} == {"length"}  # the budget of 5 tokens cut every one
    pt, ct = usage_totals(got)
    assert (analytics["total_prompt_tokens"], analytics["total_completion_tokens"]) == (pt, ct)
    assert size == sum(len(text) for text in got.values()) + 50 * len(got)  # the emulator's size rule


def test_prepared_requests_that_failed_are_answered_on_retry_with_their_tokens():
    """With failures on, every request takes the general path; once they are off a retry of the failed
    ones completes them as prepared, counting their tokens (a failure must not have zeroed them)."""
    with EmulatorServer("--start-delay", "0", "--rate", "0", "--seed", "3") as emu:
        api = Api(emu)
        emu.configure(fail_rate=1.0, max_retries=0)
        lines = plain_lines()[:100]
        first = api.wait(api.batch(lines)["id"], timeout=60)
        assert first["request_counts"] == {"total": 100, "completed": 0, "failed": 100}
        assert emu.stats()["prepared_answers"] == 0
        emu.configure(fail_rate=0)
        assert api.post(f"/batches/{first['id']}/retry").status_code == 200
        done = api.wait(first["id"], timeout=60)
        assert done["request_counts"] == {"total": 100, "completed": 100, "failed": 0}
        assert emu.stats()["prepared_answers"] == 100
        got = served_lines(api, done["output_file_id"])
        analytics = api.get(f"/batches/{done['id']}/analytics").json()
    for request in lines:
        assert got[request["custom_id"]] == general_line(got[request["custom_id"]], request)
    assert (analytics["total_prompt_tokens"], analytics["total_completion_tokens"]) == usage_totals(got)
    assert analytics["total_prompt_tokens"] > 0


def test_prepared_lines_outlive_the_input_file(emu):
    """Prepared lines are put together from the input file's rows when read: deleting that file (which
    the batch then forgets) must not lose a line."""
    api = Api(emu)
    lines = plain_lines()[:50]
    done = api.wait(api.batch(lines)["id"])
    before = served_lines(api, done["output_file_id"])
    assert api.delete(f"/files/{done['input_file_id']}").status_code == 200
    assert api.get(f"/batches/{done['id']}").json()["input_file_id"] in ("", None)
    assert served_lines(api, done["output_file_id"]) == before
    for request in lines:
        assert before[request["custom_id"]] == general_line(before[request["custom_id"]], request)


def test_a_db_file_of_an_earlier_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    with EmulatorServer("--start-delay", "0", db=str(path)):
        pass  # makes the file
    db = sqlite3.connect(path)
    for table, column, _ in ADDED_COLUMNS:  # as a version before them left it
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    with EmulatorServer("--start-delay", "0", db=str(path)) as emu:
        api = Api(emu)
        lines = plain_lines()[:20]
        done = api.wait(api.batch(lines)["id"])
        assert done["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
        assert emu.stats()["prepared_answers"] == 20
        got = served_lines(api, done["output_file_id"])
    for request in lines:
        assert got[request["custom_id"]] == general_line(got[request["custom_id"]], request)
