"""Plain answers made in a second process, so that a big batch uses both cores: while the worker (on the
event loop) writes one part's outcomes to SQLite, this process parses the next part's bodies and writes
their output lines. Only the built-in model's fast path runs here (`Model.plain_answer`, a pure function
of the row and the served models); any other request comes back as None and the worker answers it itself,
exactly as before. The worker still waits for every part of a tick before it returns, so no handler ever
sees a half-processed tick. Jobs and answers cross a pipe as NUL-separated text (no pickling, no
executor threads in the server)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from .config import Config
from .model import Model
from .responses import json_string

log = logging.getLogger("emulator.pool")

WATCH_S = 0.5  # how often the pool process looks whether the server is still there
TIMEOUT_S = 30.0  # a part not answered by then: the pool is taken as broken
READY = b"ready"
NOT_PLAIN = ("", "", "")

# (request id, custom_id, url, body JSON) in; (output line, prompt tokens, completion tokens) or None out.
Job = tuple[str, str, str, str]
Answer = tuple[str, int, int] | None


def plain_output_line(req_id: str, custom_id: str, status: int, body: str) -> str:
    """An output line around a body already in its sorted compact JSON form (references/api_reference.md
    section 5: keys id, custom_id, response{status_code, request_id: null, body}, error: null)."""
    return (
        f'{{"id":"batch_req_{req_id}","custom_id":{json_string(custom_id)},"response":{{"status_code":'
        f'{status},"request_id":null,"body":{body}}},"error":null}}'
    )


def plain_fields(
    model: Model, req_id: str, custom_id: str, url: str, body: str, created: int
) -> tuple[str, ...]:
    """(output line, prompt tokens, completion tokens) as text when the fast path answers the request,
    else three empty strings (the worker answers it)."""
    try:
        fast = model.plain_answer(url, json.loads(body), created, req_id)
        if fast is not None:
            return plain_output_line(req_id, custom_id, 200, fast[0]), str(fast[1]), str(fast[2])
    except Exception:  # whatever it is, the worker's general path answers (and logs) it
        pass
    return NOT_PLAIN


class Sender:
    """The server's writes to the pool, from a thread of its own: the server never blocks on a full pipe
    (the pool may be busy writing an answer into a full pipe of its own, which the server must read)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.failed = False
        self.thread = threading.Thread(target=self._run, name="pool-sender", daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        self.queue.put(data)

    def close(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            try:
                self.conn.send_bytes(data)
            except (OSError, ValueError):  # the other side is gone: its reader finds out
                self.failed = True
                return


def serve(conn: Connection, models: list[str], reasoning_models: list[str], server: int) -> None:
    """The pool process: answer each message of jobs until the pipe closes or the server is gone.
    A message is NUL-separated text (no field can hold a NUL: JSON escapes it, ids and custom_ids are
    checked at upload): `created`, then 4 fields a job; the answer, 3 fields a job."""
    model = Model(Config(models=models, reasoning_models=reasoning_models))
    threading.Thread(target=_exit_with, args=(server,), name="watch-server", daemon=True).start()
    # Written directly (no Sender here): the server reads every answer without waiting for anything
    # of ours, so a full pipe only pauses us until it does; and a sender thread would have to win the
    # GIL back from the answering loop (up to the 5 ms switch interval) before the next answer.
    conn.send_bytes(READY)
    while True:
        try:
            fields = conn.recv_bytes().decode("utf-8").split("\0")
        except (EOFError, OSError):
            return
        created = int(fields[0])
        out: list[str] = []
        for i in range(1, len(fields), 4):
            out += plain_fields(model, *fields[i : i + 4], created)
        try:
            conn.send_bytes("\0".join(out).encode("utf-8"))
        except (OSError, ValueError):
            return


def _exit_with(server: int) -> None:
    """The pool process ends when the server does, even when the server was SIGKILLed (nothing would
    tell it otherwise: it would wait for work for ever)."""
    while os.getppid() == server:
        time.sleep(WATCH_S)
    os._exit(0)


class AnswerPool:
    """One helper process (started on first use with `spawn`, so nothing of the server's threads or event
    loop is copied into it) and a pipe to it (the server's side written by a Sender); parts are answered
    in the order sent. Broken, stalled or unavailable: `usable` turns False and the worker answers everything
    itself."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.sender: Sender | None = None
        self.up = False  # the process said it is ready
        self.waiting = 0  # jobs sent and not yet answered
        self.usable = True
        self.answered = 0  # answers made in the pool process (shown in /_emulator/stats)

    def warm(self) -> None:
        """Start the process now (a big batch is about to run), without waiting for it."""
        if not self.usable or self.proc is not None:
            return
        try:
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.sender = Sender(self.conn)
            args = (child, list(self.cfg.models), list(self.cfg.reasoning_models), os.getpid())
            self.proc = ctx.Process(target=serve, args=args, name="emulator-answer-pool", daemon=True)
            self.proc.start()
            child.close()
        except Exception:  # no processes on this system: answer inline
            self.broken()

    def ready(self) -> bool:
        """Up and answering (started by `warm`, which this calls): until then the worker answers inline
        rather than wait for the process to start (that would stall the server for a moment)."""
        self.warm()
        return self.started()

    def started(self) -> bool:
        """Whether the process, once started, has said it is ready (looked at without waiting)."""
        if self.up or not self.usable or self.conn is None:
            return self.up and self.usable
        try:
            if self.conn.poll():
                self.up = self.conn.recv_bytes() == READY
            elif self.proc is not None and not self.proc.is_alive():
                self.broken()
        except (EOFError, OSError):
            self.broken()
        return self.up and self.usable

    def send(self, jobs: Sequence[Job], created: int) -> None:
        """Hand over a part (answered by `receive`, in order); nothing when the pool is not usable."""
        if not self.usable or self.sender is None:
            return
        if self.sender.failed:
            self.broken()
            return
        self.sender.send("\0".join([str(created), *(f for job in jobs for f in job)]).encode("utf-8"))
        self.waiting += 1

    def receive(self, n: int) -> list[Answer]:
        """The answers to the oldest part sent (n jobs); all None when the pool failed meanwhile."""
        if not self.usable or self.conn is None or not self.waiting:
            return [None] * n
        try:
            if not self.conn.poll(TIMEOUT_S):
                raise TimeoutError(f"no answer from the pool in {TIMEOUT_S:g} s")
            fields = self.conn.recv_bytes().decode("utf-8").split("\0")
            self.waiting -= 1
        except (EOFError, OSError, TimeoutError):
            self.broken()
            return [None] * n
        if len(fields) != 3 * n:
            self.broken()
            return [None] * n
        answers: list[Answer] = []
        for i in range(0, 3 * n, 3):
            line = fields[i]
            answers.append((line, int(fields[i + 1]), int(fields[i + 2])) if line else None)
        return answers

    def state(self) -> str:
        """off (not started), starting, ready or broken (shown in /_emulator/stats)."""
        if not self.usable:
            return "broken"
        if self.proc is None:
            return "off"
        return "ready" if self.started() else "starting"

    def broken(self) -> None:
        log.warning("answer pool failed; answering in the worker from now on", exc_info=True)
        self.usable = False
        self.close()

    def close(self) -> None:
        """Close the pipe (the process then ends by itself) and make sure the process is gone."""
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join(1.0)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(1.0)
            self.proc = None
        self.waiting = 0
