"""A fetch killed while answers wait in its order tracker (served ahead of earlier input lines): their rows
were held apart at the last commit and their records never appended, and records were appended after that
commit. The next run rebuilds the waiting answers from the raw file and ends with the very files of a run
that was never stopped."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

from scripted_server import finished_batch, http_server, read_request

from doubleword.store import INDEX_NAME, RECORDS_NAME

BATCH = "6a0e1c2a-0000-4000-8000-00000000b001"
INPUT, OUTPUT, ERRORS = (f"6a0e1c2a-0000-4000-8000-00000000b00{i}" for i in (2, 3, 4))
N, BLOCK = 30_000, 5_000  # within each block the first answer comes last: the others wait for it


def _lines() -> tuple[bytes, list[bytes]]:
    inputs, outputs = [], []
    for i in range(N):
        custom_id = f"req-{i:05d}"
        body = {"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": f"q{i}"}]}
        request = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        inputs.append(json.dumps(request).encode() + b"\n")
        message = {"role": "assistant", "content": f"answer {i} é"}
        answer = {
            "choices": [{"finish_reason": "stop", "index": 0, "message": message}],
            "model": "Qwen/Qwen3.5-9B",
            "usage": {"prompt_tokens": 5, "completion_tokens": i % 7, "total_tokens": 5 + i % 7},
        }
        line = {
            "id": f"batch_req_{i:08d}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "body": answer},
        }
        outputs.append(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    served = []
    for start in range(0, N, BLOCK):
        served += outputs[start + 1 : start + BLOCK] + [outputs[start]]
    return b"".join(inputs), served


class Server:
    """The batch, finished; its output served whole, or (``phases``) in parts with pauses, then held open
    until the test ends (a fetch reading it must be killed)."""

    def __init__(self, phases: list[tuple[int, float]] | None = None) -> None:
        self.inputs, self.served = _lines()
        self.phases = phases
        self.written = threading.Event()  # every phase is on the wire
        self.release = threading.Event()
        self.httpd = http_server("127.0.0.1", self._handle)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _send(self, handler: BaseHTTPRequestHandler, body: bytes, size: int | None = None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body) if size is None else size))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        seen = read_request(handler)
        skip = int(dict(p.split("=") for p in seen.query.split("&") if p).get("skip", 0))
        if seen.path == f"/v1/batches/{BATCH}":
            batch = finished_batch(BATCH, INPUT, OUTPUT, ERRORS, N)
            self._send(handler, json.dumps(batch).encode())
        elif seen.path == f"/v1/files/{INPUT}/content":
            self._send(handler, self.inputs)
        elif seen.path == f"/v1/files/{ERRORS}/content":
            self._send(handler, b"")
        elif seen.path == f"/v1/files/{OUTPUT}/content" and self.phases is None:
            self._send(handler, b"".join(self.served[skip:]))
        elif seen.path == f"/v1/files/{OUTPUT}/content":
            lines = self.served[skip:]
            self._send(handler, b"", sum(map(len, lines)))
            at = 0
            for count, pause in self.phases:
                handler.wfile.write(b"".join(lines[at : at + count]))
                handler.wfile.flush()
                at += count
                time.sleep(pause)
            self.written.set()
            self.release.wait(60)
        else:
            self._send(handler, b"{}")

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _manifest(tmp_path, name: str) -> str:
    """A manifest of the job as submit.py leaves it once poll.py saw the batch finish (its input file on
    disk, with its digest: the fetch tracks the answers' order against it)."""
    inputs, _ = _lines()
    source = tmp_path / "jobs.jsonl"
    source.write_bytes(inputs)
    shard = {
        "index": 0, "round": 1, "source": None, "path": str(source), "rows_path": None,
        "sha256": hashlib.sha256(inputs).hexdigest(), "requests": N, "bytes": len(inputs),
        "endpoint": "/v1/chat/completions", "estimated_input_tokens": None, "upload_filename": None,
        "upload_state": "done", "file_id": INPUT, "marker": None, "create_state": "done", "batch_id": BATCH,
        "status": "completed", "request_counts": {"total": N, "completed": N, "failed": 0},
        "output_file_id": OUTPUT, "error_file_id": ERRORS,
        "times": {"created_at": 1767225600, "completed_at": 1767225700}, "downloads": {},
        "final_counts": None, "cost_estimate": None, "checked_at": 1767225800,
    }  # fmt: skip
    path = tmp_path / name
    manifest = {
        "format": "doubleword-batches/manifest", "version": 2, "job_id": "dwj-0123456789ab",
        "written_at": str(path), "created_at": 1767225600, "updated_at": 1767225800, "base_url": None,
        "inputs": [], "window": None, "metadata": {},
        "rounds": [{"number": 1, "created_at": 1767225600, "statuses": None, "adjust": {}, "source": None, "left_behind": 0}],
        "shards": [shard], "fetch": None,
    }  # fmt: skip
    path.write_text(json.dumps(manifest))
    return str(path)


def _held_and_trimmed(out) -> bool:
    """The index holds waiting answers' rows, and the record file runs past its committed length."""
    with contextlib.suppress(sqlite3.Error, OSError):
        with contextlib.closing(sqlite3.connect(out / INDEX_NAME, timeout=0.1)) as db:
            (held,) = db.execute("SELECT count(*) FROM held").fetchone()
            committed = db.execute("SELECT value FROM meta WHERE key = 'records_bytes'").fetchone()
        return held > 0 and committed is not None and (out / RECORDS_NAME).stat().st_size > int(committed[0])
    return False


def test_answers_waiting_in_the_tracker_when_killed_are_rebuilt_and_nothing_is_lost(tmp_path, h):
    reference, out = tmp_path / "reference", tmp_path / "out"
    honest = Server()
    try:
        code, doc, err = h.run_script(
            "fetch_results",
            "--manifest",
            _manifest(tmp_path, "reference.json"),
            "--out",
            str(reference),
            env=h.script_env(honest.base_url),
        )
    finally:
        honest.close()
    assert code == 0 and doc["counts"]["completed"] == N, (doc, err)

    # 12,500 lines (a commit at 10,000), a pause, one more line (a commit on time: 2,501 answers of the
    # third block wait), then its end and 500 more (appended after that commit), and no more
    stalled = Server(phases=[(12_500, 1.5), (1, 0.3), (3_000, 0.0)])
    try:
        env = h.script_env(stalled.base_url)
        manifest = _manifest(tmp_path, "job.json")
        command = [
            sys.executable,
            str(h.SCRIPTS / "fetch_results.py"),
            "--manifest",
            manifest,
            "--out",
            str(out),
        ]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert stalled.written.wait(60), "the fetch never asked for the output"
            deadline = time.monotonic() + 30
            while not _held_and_trimmed(out):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            time.sleep(0.5)  # whatever it does with the lines on the wire, it does now
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            _, err = proc.communicate()
        assert h.CANARY_KEY.encode() not in err
    finally:
        stalled.close()

    resumed = Server()
    try:
        code, doc, err = h.run_script(
            "fetch_results", "--manifest", manifest, "--out", str(out), env=h.script_env(resumed.base_url)
        )
    finally:
        resumed.close()
    assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == N, (doc, err)
    for name in ("results.jsonl", "output.jsonl", "retry.jsonl"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    results = [json.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines()]
    assert [r["custom_id"] for r in results] == [f"req-{i:05d}" for i in range(N)]
    assert results[10_001]["content"] == "answer 10001 é"  # held when the run was killed
