"""Start the emulator (``python -m emulator``) as a subprocess: the one helper that tests, the bench and
the demo use (tests import it as ``from emulator_server import EmulatorServer``).

Usage::

    with EmulatorServer("--start-delay", "0") as emu:
        urllib.request.urlopen(emu.base_url + "/models")  # with emu.headers
        emu.configure(paused=True)
        assert emu.stats()["files_created"] == 0

Standard library only, so it imports wherever the repository is on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0


class EmulatorServer:
    """A running emulator subprocess; a context manager that stops it on exit.

    `args` are extra command-line flags; `port` 0 picks a free port (a fixed one lets a restarted
    server keep its URL); `api_key` None accepts any key. The base URL is read from the first stdout
    line; later output (stdout and stderr) is kept in `output` (the last 1,000 lines)."""

    def __init__(
        self,
        *args: str,
        api_key: str | None = "sk-test",
        db: str | None = None,
        env: dict | None = None,
        port: int = 0,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.api_key = api_key
        self.db = db
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.root_url = ""
        self.output: list[str] = []
        self.start()

    # -- process control -------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        if self.db is not None:
            cmd += ["--db", str(self.db)]
        return cmd

    def start(self) -> None:
        """Start the subprocess and wait for the base URL on its first stdout line."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self.proc = subprocess.Popen(
            self.command(),
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
            first.append(self.proc.stdout.readline())
            ready.set()

        threading.Thread(target=read_first, daemon=True).start()
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

    def env_for_scripts(self) -> dict[str, str]:
        """The environment a command needs to talk to this emulator."""
        return dict(
            os.environ, DOUBLEWORD_BASE_URL=self.base_url, DOUBLEWORD_API_KEY=self.api_key or "sk-any"
        )

    def _control(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.root_url + "/_emulator/" + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # raises HTTPError on a non-2xx answer
            return json.loads(resp.read())

    def requests_log(self) -> list[dict]:
        """Every API call received, in order: dicts with method, path, query, status, fault."""
        return self._control("requests")["requests"]

    def stats(self) -> dict:
        """Counts: files_created, batches_created, api_calls, faults_injected."""
        return self._control("stats")

    def configure(self, **cfg: object) -> dict:
        """Change rate, fail_rate, fault_rate, start_delay, paused... at runtime; returns the config."""
        return self._control("config", cfg)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (deadlines become testable without waiting)."""
        self._control("clock", {"advance_seconds": seconds})
