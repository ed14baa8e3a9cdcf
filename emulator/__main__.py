"""Command line: ``python -m emulator [--host H] [--port P] [--api-key K ...] [--db PATH] ...``.

The first line on stdout is the base URL (e.g. ``http://127.0.0.1:8765/v1``), printed once the server
accepts connections."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile

from aiohttp import web

from .app import build_app
from .catalog import DEFAULT_MODELS, DEFAULT_REASONING_MODELS
from .config import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_REQUESTS, ORDERS, Config, fraction

DESCRIPTION = """\
A local server that behaves like Doubleword's batch API (files, batches, models, realtime chat and
embeddings under /v1 and /ai/v1), for tests, demos and offline dry runs of the scripts. Requests are
answered by a deterministic built-in model (or forwarded with --upstream). The first line on stdout is
the base URL to use as DOUBLEWORD_BASE_URL."""

EPILOG = """\
examples:
  python -m emulator --port 8765 --db state.sqlite3
  python -m emulator --port 0 --rate 50 --fail-rate 0.1 --fault-rate 0.2 --seed 7
  python -m emulator --upstream http://localhost:8000/v1

test control endpoints (no auth, never faulted):
  GET  /_emulator/requests   every API call received: method, path, query, status, fault
  GET  /_emulator/stats      files_created, batches_created, api_calls, faults_injected
  POST /_emulator/config     {"rate", "fail_rate", "fault_rate", "start_delay", "paused", ...}
  POST /_emulator/clock      {"advance_seconds": N} moves the clock (deadlines, expired_at)
"""


def build_parser() -> argparse.ArgumentParser:
    """Every flag with its default in the help text (`%(default)s` keeps the two in step)."""
    p = argparse.ArgumentParser(
        prog="python -m emulator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_flags(p.add_argument_group("server"))
    add_model_flags(p.add_argument_group("processing and the built-in model"))
    add_fault_flags(p.add_argument_group("failures and faults"))
    return p


def add_server_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    g.add_argument(
        "--port", type=int, default=8765, metavar="N", help="0 picks a free port (default: %(default)s)"
    )
    g.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted key, repeatable (default: any Bearer key is accepted)",
    )
    g.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite state file, so a restarted emulator carries on (default: a temporary file removed on "
        "exit; ':memory:' keeps everything in RAM)",
    )
    g.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help="upload size limit (default: %(default)s, 200 MiB)",
    )
    g.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        metavar="N",
        help="requests per file, 0 for no cap (default: %(default)s)",
    )
    g.add_argument(
        "--flavor",
        choices=("doubleword", "openai"),
        default="doubleword",
        help="openai: prefixed ids, OpenAI failure lines, `expired` status (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="print only the base URL (default: off)")


def add_model_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        metavar="LIST",
        help="comma-separated model names served (default: %(default)s)",
    )
    g.add_argument(
        "--reasoning-models",
        default=",".join(DEFAULT_REASONING_MODELS),
        metavar="LIST",
        help="comma-separated models that answer with reasoning_content, which uses the output budget "
        "first (default: %(default)s); the efforts each model lists and accepts come from its family "
        "(Qwen3/Qwen3.5 chat: none, low, medium, high; gpt-oss: low, medium, high)",
    )
    g.add_argument(
        "--sloppy-rate",
        type=share,
        default=0.0,
        metavar="F",
        help="fraction of answers a sloppy model spoils: JSON in a code fence, prose instead of JSON, or "
        "an answer that runs long (300-800 tokens, by the prompt): cut with finish_reason length by a "
        "smaller max_tokens, whole with a larger one (default: %(default)s)",
    )
    g.add_argument(
        "--order",
        choices=ORDERS,
        default="completion",
        help="the order of a batch's output and error lines: completion (as a real server writes them: "
        "requests running at once finish in a random order, retried ones later) or input (default: "
        "%(default)s)",
    )
    g.add_argument(
        "--rate",
        type=float,
        default=5000.0,
        metavar="N",
        help="requests processed per second, 0 for unlimited (default: %(default)s)",
    )
    g.add_argument(
        "--start-delay",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="how long a batch stays validating (default: %(default)s)",
    )
    g.add_argument(
        "--upstream",
        default=None,
        metavar="URL",
        help="forward requests to this OpenAI-compatible base URL (default: the built-in model)",
    )
    g.add_argument(
        "--upstream-key",
        default=os.environ.get("EMULATOR_UPSTREAM_KEY"),
        metavar="KEY",
        help="Bearer key for --upstream (default: $EMULATOR_UPSTREAM_KEY, else none)",
    )
    g.add_argument(
        "--retry-base",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="first backoff of a retried request (default: %(default)s)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries of a transient failure (default: %(default)s)",
    )


def share(text: str) -> float:
    """An argparse type: a fraction from 0 to 1 (``--fail-rate 10`` is refused, not taken as always)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return fraction(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_fault_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--fail-rate",
        type=share,
        default=0.0,
        metavar="F",
        help="fraction of batch requests that fail, a third each with 400, 422 and 500; a 400 or 422 comes "
        "from the request itself (its custom_id and body, and --seed): sent again unchanged it is refused "
        "again, while a 500 is drawn afresh for each batch row (default: %(default)s)",
    )
    g.add_argument(
        "--fault-rate",
        type=share,
        default=0.0,
        metavar="F",
        help="fraction of API calls given an HTTP fault (default: %(default)s)",
    )
    g.add_argument(
        "--fault-retry-after",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Retry-After of injected 429/503 (default: %(default)s)",
    )
    g.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed for failures and faults (default: random)"
    )


def parse_args(argv: list[str] | None = None) -> Config:
    a = build_parser().parse_args(argv)
    values = vars(a)
    values["api_keys"] = values.pop("api_key")
    values["db"] = a.db or ""
    values["models"] = [m.strip() for m in a.models.split(",") if m.strip()]
    values["reasoning_models"] = [m.strip() for m in a.reasoning_models.split(",") if m.strip()]
    return Config(**values)


async def serve(cfg: Config) -> None:
    app = build_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    # Handlers first: a SIGTERM sent as soon as the URL line is read must still shut down cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = runner.addresses[0][1]
    host = "127.0.0.1" if cfg.host in ("", "0.0.0.0") else cfg.host
    if ":" in host:
        host = f"[{host}]"
    print(f"http://{host}:{port}/v1", flush=True)
    if not cfg.quiet:
        key = cfg.api_keys[0] if cfg.api_keys else "sk-local"
        accepted = "the key given with --api-key" if cfg.api_keys else "any key is accepted"
        print(
            f"emulator: serving on http://{host}:{port}/v1 (also /ai/v1); use it with:\n"
            f"  export DOUBLEWORD_BASE_URL=http://{host}:{port}/v1\n"
            f"  export DOUBLEWORD_API_KEY={key}   # {accepted}\n"
            "Ctrl-C stops it.",
            file=sys.stderr,
        )
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="emulator: %(levelname)s %(message)s")
    tmpdir = None
    if not cfg.db:
        tmpdir = tempfile.mkdtemp(prefix="dw-emulator-")
        cfg.db = os.path.join(tmpdir, "state.sqlite3")
        cfg.scratch_db = True
    try:
        asyncio.run(serve(cfg))
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
