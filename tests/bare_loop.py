"""The least an emulator must do per request, timed on this machine: the yardstick for the emulator's
capacity in tests/emulator/test_rate.py and bench/bench_scale.py (a fixed requests/s bound holds only on
the machine it was set on)."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from typing import Any


def request_body(i: int) -> dict[str, Any]:
    """A chat request body like the ones both measure."""
    return {
        "model": "Qwen/Qwen3.5-9B",
        "messages": [{"role": "user", "content": f"what is {i} times 7?"}],
        "max_tokens": 64,
    }


def bare_loop_seconds(n: int) -> float:
    """Thread CPU seconds of the least an emulator must do for n requests, in one process: select each
    body from SQLite, parse it, build its output line, store the line (250 rows to a statement, one
    transaction, the emulator's scratch-database settings)."""
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "bare.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=MEMORY")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE r (rid INTEGER PRIMARY KEY, body TEXT, state TEXT, line TEXT)")
        lines = ((i, json.dumps(request_body(i))) for i in range(n))
        db.executemany("INSERT INTO r VALUES (?, ?, 'pending', NULL)", lines)
        start = time.thread_time()
        db.execute("BEGIN")
        for k in range(0, n, 250):
            rows = []
            for rid, body in db.execute("SELECT rid, body FROM r WHERE rid >= ? AND rid < ?", (k, k + 250)):
                req = json.loads(body)
                answer = {"role": "assistant", "content": f"{rid * 7}"}
                line = {
                    "id": f"batch_req_{rid}",
                    "custom_id": f"request-{rid}",
                    "response": {
                        "status_code": 200,
                        "request_id": None,
                        "body": {"model": req["model"], "choices": [{"index": 0, "message": answer}]},
                    },
                    "error": None,
                }
                rows.append((json.dumps(line), rid))
            db.executemany("UPDATE r SET state='completed', line=? WHERE rid=?", rows)
        db.execute("COMMIT")
        took = time.thread_time() - start
        db.close()
    return took
