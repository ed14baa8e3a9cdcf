"""Plain answers made in a second process, so that a big batch uses both cores: while the worker (on the
event loop) writes one part's outcomes to SQLite, this process parses the next part's bodies and writes
their output lines. Only the built-in model's fast path runs here (`Model.plain_answer`, a pure function
of the row and the served models); any other request comes back as None and the worker answers it itself,
exactly as before. The worker still waits for every part of a tick before it returns, so no handler ever
sees a half-processed tick."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from .config import Config
from .model import Model
from .responses import json_string

log = logging.getLogger("emulator.pool")

_MODEL: list[Model] = []  # the pool process's model (one)
WATCH_S = 0.5  # how often the pool process looks whether the server is still there

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


def plain_lines(model: Model, jobs: Sequence[Job], created: int) -> list[Answer]:
    """Each job's output line when the fast path answers it, else None."""
    out: list[Answer] = []
    for req_id, custom_id, url, body in jobs:
        try:
            obj = json.loads(body)
        except ValueError:
            out.append(None)
            continue
        fast = model.plain_answer(url, obj, created, req_id)
        out.append(None if fast is None else (plain_output_line(req_id, custom_id, 200, fast[0]), *fast[1:]))
    return out


def _start(models: list[str], reasoning_models: list[str], server: int) -> None:
    _MODEL.append(Model(Config(models=models, reasoning_models=reasoning_models)))
    threading.Thread(target=_exit_with, args=(server,), name="watch-server", daemon=True).start()


def _exit_with(server: int) -> None:
    """The pool process ends when the server does, even when the server was SIGKILLed (nothing would
    tell it otherwise: it would wait for work for ever)."""
    while os.getppid() == server:
        time.sleep(WATCH_S)
    os._exit(0)


def _run(jobs: Sequence[Job], created: int) -> list[Answer]:
    return plain_lines(_MODEL[0], jobs, created)


class AnswerPool:
    """One helper process (started on first use, with `spawn`: nothing of the server's threads or event
    loop is copied into it). Broken or unavailable: `usable` turns False and the worker answers inline."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.executor: ProcessPoolExecutor | None = None
        self.started: Future | None = None  # the warm-up job: done once the process is up
        self.usable = True
        self.answered = 0  # answers made in the pool process (shown in /_emulator/stats)

    def submit(self, jobs: Sequence[Job], created: int) -> Future:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(list(self.cfg.models), list(self.cfg.reasoning_models), os.getpid()),
            )
        return self.executor.submit(_run, jobs, created)

    def warm(self) -> None:
        """Start the process now (a big batch is about to run), without waiting for it."""
        if self.usable and self.executor is None:
            try:
                self.started = self.submit([], 0)
            except Exception:  # no processes on this system: answer inline
                log.warning("answer pool unavailable; answering in the worker", exc_info=True)
                self.usable = False

    def ready(self) -> bool:
        """Up and answering (started by `warm`, which this calls): until then the worker answers inline
        rather than wait for the process to start (that would stall the server for a moment)."""
        self.warm()
        if not self.usable or self.started is None or not self.started.done():
            return False
        if self.started.exception() is not None:
            self.broken()
            return False
        return True

    def state(self) -> str:
        """off (not started), starting, ready or broken (shown in /_emulator/stats)."""
        if not self.usable:
            return "broken"
        if self.started is None:
            return "off"
        return "ready" if self.started.done() else "starting"

    def broken(self) -> None:
        log.warning("answer pool failed; answering in the worker from now on", exc_info=True)
        self.usable = False
        self.close()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
            self.started = None
