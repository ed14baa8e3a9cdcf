"""Start the local Doubleword emulator (``python -m emulator``) as a subprocess for tests.

Usage::

    with EmulatorServer("--start-delay", "0") as emu:
        requests.get(emu.base_url + "/models", headers={"Authorization": "Bearer sk-test"})
        emu.configure(paused=True)
        assert emu.stats()["files_created"] == 0

Only the standard library and ``requests`` are used, so any test module can import this.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0


class EmulatorServer:
    """A running emulator subprocess; a context manager that stops it on exit."""

    def __init__(
        self,
        *args: str,
        api_key: str | None = "sk-test",
        db: str | None = None,
        env: dict | None = None,
        port: int = 0,
    ) -> None:
        self.args = list(args)
        self.port = port  # 0: a free port; a fixed one lets a restarted server keep its URL
        self.api_key = api_key
        self.db = db
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.root_url = ""
        self.output: list[str] = []
        self._session = requests.Session()
        self.start()

    # -- process control -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the subprocess and wait for the base URL on its first stdout line."""
        cmd = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        if self.db is not None:
            cmd += ["--db", str(self.db)]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        first: list[str] = []
        ready = threading.Event()

        def read_first() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            line = self.proc.stdout.readline()
            first.append(line)
            ready.set()

        reader = threading.Thread(target=read_first, daemon=True)
        reader.start()
        if not ready.wait(START_TIMEOUT_S) or not first or not first[0].startswith("http"):
            self.kill()
            rest = self.proc.stdout.read() if self.proc.stdout else ""
            raise RuntimeError(f"emulator did not start: {(first[0] if first else '')!r} {rest[-2000:]}")
        self.base_url = first[0].strip()
        self.root_url = self.base_url.rsplit("/v1", 1)[0]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            self.output.append(line)
            del self.output[:-1000]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (simulates a crash; used by restart tests)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test-control API ------------------------------------------------------------------------
    @property
    def headers(self) -> dict:
        """Authorization header for the configured key (any key works when api_key is None)."""
        return {"Authorization": f"Bearer {self.api_key or 'sk-any'}"}

    def requests_log(self) -> list[dict]:
        """Every API call received, in order: dicts with method, path, query, status, fault."""
        r = self._session.get(self.root_url + "/_emulator/requests", timeout=10)
        r.raise_for_status()
        return r.json()["requests"]

    def stats(self) -> dict:
        """Counts: files_created, batches_created, api_calls, faults_injected."""
        r = self._session.get(self.root_url + "/_emulator/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def configure(self, **cfg: object) -> dict:
        """Change rate, fail_rate, fault_rate, start_delay or paused at runtime; returns the config."""
        r = self._session.post(self.root_url + "/_emulator/config", json=cfg, timeout=10)
        r.raise_for_status()
        return r.json()

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (deadlines become testable without waiting)."""
        r = self._session.post(
            self.root_url + "/_emulator/clock", json={"advance_seconds": seconds}, timeout=10
        )
        r.raise_for_status()
