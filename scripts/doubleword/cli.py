"""The command-line boundary: parsers with the shared flags, the error boundary, output and progress.

Each command is a thin ``main(argv)`` that builds a parser with :func:`make_parser`, does its work and
returns ``(result_dict, exit_code)``; :func:`run` is the one error boundary that turns exceptions and
termination signals into ``error: ...`` on stderr, a JSON document on stdout, a one-line summary on
stderr and the documented exit code.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import math
import os
import re
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn, TypeVar

from doubleword import missing_dependency
from doubleword.config import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    redact,
    skill_version,
)
from doubleword.errors import CliError, ExitCode, UsageError
from doubleword.redaction import redact_data

EXIT_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL: "unexpected internal error (traceback only with --debug)",
    ExitCode.USAGE: "usage error",
    ExitCode.AUTH: "authentication or configuration error (no key, 401, 403)",
    ExitCode.INVALID_INPUT: "invalid input (local validation failed, or the server rejected the input)",
    ExitCode.SERVICE: "service or network failure after retries",
    ExitCode.BATCH_UNSUCCESSFUL: "finished, but not every input has a usable answer",
    ExitCode.NOT_FINISHED: "not finished yet (a batch is still running; partial results may be on disk)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM or SIGHUP); state saved, re-run to resume",
}
# What 130 means for a command that keeps no state (create, validate): it starts over when re-run.
STARTS_OVER = "interrupted (Ctrl-C, SIGTERM or SIGHUP); nothing is kept: re-run it (it starts over)"
_DISK_TROUBLE = re.compile(r"disk is full", re.I)  # sqlite3 says so for ENOSPC and quota
# Every command can end these ways, whatever it does: the boundary's own outcomes.
_ALWAYS = (ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.INTERRUPTED)
ExitCodes = Iterable["ExitCode | tuple[ExitCode, str]"]


def exit_code_help(codes: ExitCodes | None = None) -> str:
    """The ``exit codes:`` section of ``--help``: the codes given (with their meaning) plus 1, 2, 130."""
    meanings: dict[int, str] = {}
    for item in EXIT_MEANINGS if codes is None else codes:
        code, text = item if isinstance(item, tuple) else (item, EXIT_MEANINGS[item])
        meanings[int(code)] = text
    for code in _ALWAYS:
        meanings.setdefault(int(code), EXIT_MEANINGS[code])
    lines = [f"  {code:<3} {meanings[code]}" for code in sorted(meanings)]
    return "exit codes:\n" + "\n".join(lines) + "\n"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become a :class:`UsageError` (JSON on stdout, exit 2).

    Options that take a value and name no metavar get the shared ones: ``N`` for counts, ``SECONDS``
    for durations, ``PATH`` for files and folders, ``URL`` for addresses."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if args and str(args[0]).startswith("-") and "metavar" not in kwargs and "choices" not in kwargs:
            metavar = _default_metavar(args, kwargs)
            if metavar:
                kwargs["metavar"] = metavar
        return super().add_argument(*args, **kwargs)


_PATH_WORDS = ("path", "file", "dir", "manifest", "out", "output", "db")


def _default_metavar(names: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("action") not in (None, "store", "append") or kwargs.get("nargs") == 0:
        return None
    kind = kwargs.get("type")
    long_name = next((str(n) for n in names if str(n).startswith("--")), str(names[0]))
    word = long_name.lstrip("-").replace("-", "_")
    if kind is int or getattr(kind, "metavar", None) == "N":
        return "N"
    if kind is seconds or word in ("timeout", "interval", "wait_seconds"):
        return "SECONDS"
    if kind is Path or word in _PATH_WORDS or word.endswith(("_path", "_file", "_dir")):
        return "PATH"
    if word.endswith("url"):
        return "URL"
    return None


class _VersionAction(argparse.Action):
    """``--version``: the skill's version from SKILL.md, read only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the skill's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        raise VersionRequested(f"{parser.prog} {skill_version()}")


class VersionRequested(Exception):
    """Raised by ``--version``; :func:`run` prints it (plain text, as every CLI does) and exits 0."""


def make_parser(
    prog: str,
    description: str,
    examples: str,
    *,
    network: bool = True,
    exit_codes: ExitCodes | None = None,
    resumes: bool = True,
) -> Parser:
    """A parser with the shared flags, the examples and this command's exit codes in ``--help``.

    ``exit_codes`` lists the codes the command can return (an ``ExitCode``, or ``(code, meaning)`` to say
    what it means for this command); 1, 2 and 130 are added. Without it the whole table is shown.
    ``resumes=False``: a command that keeps no state says that a re-run after an interrupt starts over."""
    _STATE.resumes = resumes
    if not resumes:
        exit_codes = (*(exit_codes or ()), (ExitCode.INTERRUPTED, STARTS_OVER))
    parser = Parser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples.rstrip()}\n\n{exit_code_help(exit_codes)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors")
    if network:
        parser.add_argument(
            "--base-url",
            help=f"API base URL (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
        )
        parser.add_argument(
            "--allow-insecure",
            action="store_true",
            help="allow sending the API key over plain http:// to a non-loopback host",
        )
    return parser


def seconds(value: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {value!r}")
    return number


# -- the error boundary


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so the run ends like a Ctrl-C (JSON, state saved)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


T = TypeVar("T")
_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


SIGNAL_TICK = 0.2  # seconds the main thread waits on other threads before it looks for a signal


def result_of(future: Future[T]) -> T:
    """``future.result()``, waited for a tick at a time. The kernel hands a Ctrl-C to any thread of the
    process; delivered to a worker, it is raised in the main thread only once that runs Python code again,
    which a wait without a timeout never does (a fetch once waited 60 s and more on a silent server)."""
    while not wait([future], timeout=SIGNAL_TICK).done:
        pass
    return future.result()


def as_done(futures: Iterable[Future[T]]) -> Iterator[Future[T]]:
    """``concurrent.futures.as_completed``, a tick at a time (see :func:`result_of`)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=SIGNAL_TICK, return_when=FIRST_COMPLETED)
        yield from done


def _set_handlers(handler: Any) -> dict[int, Any]:
    """Set ``handler`` (one for all, or a dict by signal) for SIGINT, SIGTERM and SIGHUP; return the old ones."""
    previous = {}
    for signum in _SIGNALS:
        wanted = handler.get(signum) if isinstance(handler, dict) else handler
        if wanted is None:
            continue
        try:
            previous[signum] = signal.signal(signum, wanted)
        except (ValueError, OSError):  # not the main thread, or not allowed here
            pass
    return previous


def add_shard_args(parser: Any, per: str) -> None:
    """--max-requests and --max-bytes: the limits a batch file is sharded by (create and submit alike)."""
    for flag, default, what in (
        ("--max-requests", MAX_REQUESTS_PER_FILE, "requests"),
        ("--max-bytes", MAX_FILE_BYTES, "bytes"),
    ):
        parser.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{what} {per} (default {default})"
        )


def run(main: Callable[[list[str]], tuple[dict[str, Any], int]], argv: list[str] | None = None) -> int:
    """Run a script's ``main`` and turn its outcome into one JSON document on stdout and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _STATE.quiet = "--quiet" in args  # a command's --quiet silences the closing summary too
    terminate = {signal.SIGTERM: _raise_terminated}
    if hasattr(signal, "SIGHUP"):
        terminate[signal.SIGHUP] = _raise_terminated
    previous = _set_handlers(terminate)
    _STATE.summary = None
    _STATE.resumes = True  # until the command's parser says otherwise
    try:
        return _run(main, args, debug)
    finally:
        _set_handlers(previous)  # a caller in the same process (a test) gets its handlers back
        if argv is None:  # the command itself, about to exit: the collections at interpreter shutdown
            gc.freeze()  # skip frozen objects (~45 ms of a fetch's exit on this machine, nothing else skipped)


def _run(main: Callable[[list[str]], tuple[dict[str, Any], int]], args: list[str], debug: bool) -> int:
    try:
        result, code = main(args)
    except VersionRequested as exc:
        return _write_stdout(f"{exc}\n", int(ExitCode.OK))
    except CliError as exc:
        result, code = _error_result(exc.kind, exc.message, exc.details), int(exc.code)
        _print_err(f"error: {exc.message}")
    except KeyboardInterrupt as exc:
        what = f"stopped by {exc}" if isinstance(exc, Terminated) else "interrupted"
        message = (
            f"{what}; state saved, re-run the same command to resume"
            if _STATE.resumes
            else f"{what}; nothing was kept (no partial file): re-run the same command, it starts over"
        )
        result, code = _error_result("interrupted", message), int(ExitCode.INTERRUPTED)
        _print_err(f"error: {message}")
    except BrokenPipeError:
        _silence_stdout()
        return int(ExitCode.INTERNAL)
    except OSError as exc:
        result, code = _os_error(exc, debug)
    except sqlite3.OperationalError as exc:  # a local index (fetch's) on a full or failing disk
        if not _DISK_TROUBLE.search(str(exc)):
            result, code = _unexpected(exc, debug)
        else:
            result, code = _os_error(OSError(errno.ENOSPC, f"{exc}", getattr(exc, "filename", None)), debug)
    except ModuleNotFoundError as exc:  # requests or jsonschema not installed (imported lazily)
        missing = missing_dependency(exc)
        if missing is None:
            result, code = _unexpected(exc, debug)
        else:
            result, code = _error_result("missing_dependency", missing), int(ExitCode.AUTH)
            _print_err(f"error: {missing}")
    except Exception as exc:  # the last line of defence: never a bare traceback unless asked
        result, code = _unexpected(exc, debug)
    previous = _set_handlers(signal.SIG_IGN)  # the JSON and summary are written whole, whatever comes
    try:
        finish_progress()
        code = _write_stdout(_dump(result), code)
        if not _STATE.quiet:
            _print_err(_summary_line(result, code))
    finally:
        _set_handlers(previous)
    return code


def _os_error(exc: OSError, debug: bool) -> tuple[dict[str, Any], int]:
    if exc.filename is None and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return _unexpected(exc, debug)  # not about a path (a socket, say): an unexpected failure
    if exc.filename is None:
        message = f"cannot write: {exc.strerror or exc}; free some space and re-run (it resumes)"
    else:  # a path the user gave (or its folder) cannot be read or written
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        advice = (
            "free some space and re-run (it resumes)"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the path and its permissions"
        )
        message = f"cannot use {where}: {exc.strerror or exc}; {advice}"
    if debug:
        _print_err(traceback.format_exc())
    _print_err(f"error: {message}")
    return _error_result("invalid_input", message), int(ExitCode.INVALID_INPUT)


def _unexpected(exc: BaseException, debug: bool) -> tuple[dict[str, Any], int]:
    message = f"unexpected {type(exc).__name__}: {exc}"
    if debug:
        _print_err(traceback.format_exc())
    _print_err(f"error: {message} (re-run with --debug for a traceback)")
    return _error_result("internal_error", message), int(ExitCode.INTERNAL)


def _error_result(kind: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if details:
        error.update(details)
    return {"ok": False, "error": error}


def _dump(result: dict[str, Any]) -> str:
    text = json.dumps(redact_data(result), indent=2, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an id holding half an emoji): ASCII JSON keeps its escape
        text = json.dumps(redact_data(result), indent=2) + "\n"
    return text


def emit(result: dict[str, Any]) -> None:
    """Print the run's single JSON document on stdout (secrets removed)."""
    _write_stdout(_dump(result), 0)


def _write_stdout(text: str, code: int) -> int:
    """Write to stdout; a full device or closed pipe is reported on stderr, never as a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        _silence_stdout()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if not isinstance(exc, BrokenPipeError):
            _print_err(f"error: cannot write the result to stdout: {reason}")
        return code or int(ExitCode.INTERNAL)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# Control characters (escape sequences, carriage returns) and bidi overrides from a server's message must
# not drive the user's terminal: they are shown as \xNN / \uNNNN.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with every character that could drive a terminal shown escaped."""
    return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def _print_err(text: str) -> None:
    try:
        sys.stderr.write(terminal_safe(redact(text)).rstrip("\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr gone: nothing useful left to do
        pass


def warn(message: str) -> None:
    """A warning for humans on stderr."""
    _clear_progress_line()
    _print_err(f"warning: {message}")


def info(message: str) -> None:
    """A progress or status line for humans on stderr."""
    _clear_progress_line()
    _print_err(message)


# -- the closing summary


class _State:
    summary: str | None = None
    quiet = False
    resumes = True  # an interrupted run picks up where it stopped (see make_parser)
    progress: list[Progress] = []


_STATE = _State()


def summary(text: str) -> None:
    """Set the one-line human summary :func:`run` prints on stderr at the end (include failures)."""
    _STATE.summary = " ".join(text.split())


def _summary_line(result: dict[str, Any], code: int) -> str:
    prog = os.path.basename(sys.argv[0]) or "doubleword"
    meaning = EXIT_MEANINGS.get(ExitCode(code), "") if code in set(ExitCode) else ""
    if result.get("ok") is False:
        error = result.get("error") or {}
        text = _STATE.summary or str(error.get("message") or meaning)
        return f"{prog}: failed (exit {code}, {error.get('type', 'error')}): {text}"
    text = _STATE.summary or meaning
    return f"{prog}: {text} (exit {code})"


# -- progress


def _use_escapes(stream: IO[str]) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") not in ("dumb", "")


class Progress:
    """A progress display on stderr: one updating line on a terminal, an occasional plain line otherwise.

    No terminal escapes when stderr is not a terminal or ``TERM=dumb``. The updating line is erased when
    the display ends (and before any other message), so no stale line is left behind."""

    def __init__(self, stream: IO[str] | None = None, plain_every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = _use_escapes(self.stream)
        self.plain_every = plain_every
        self._last = -math.inf
        self._shown = False
        _STATE.progress.append(self)

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        try:
            if self.tty:
                self.stream.write("\r\x1b[K" + redact(text))
                self._shown = True
            elif force or now - self._last >= self.plain_every:
                self.stream.write(redact(text) + "\n")
                self._last = now
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def clear(self) -> None:
        """Erase the updating line (a terminal only); the next update draws it again."""
        if self.tty and self._shown:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._shown = False

    def done(self) -> None:
        self.clear()
        if self in _STATE.progress:
            _STATE.progress.remove(self)


def _clear_progress_line() -> None:
    for progress in _STATE.progress:
        progress.clear()


def finish_progress() -> None:
    """End every progress display still open (the error boundary does this before the summary)."""
    for progress in list(_STATE.progress):
        progress.done()


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover


class Transfer:
    """Byte progress with rate for one upload or download: ``meter.add(len(chunk))`` as bytes move.

    ``total`` may be None (unknown size). Shows e.g. ``uploading jobs.jsonl: 45.2 MB / 109.0 MB (41%),
    12.3 MB/s``; on a terminal at most ten updates a second, otherwise a plain line every 10 s."""

    def __init__(self, label: str, total: int | None = None, *, progress: Progress | None = None) -> None:
        self.label = label
        self.total = total
        self.done_bytes = 0
        self.started = time.monotonic()
        self.ended: float | None = None  # set by stop_clock(): the bytes all moved then
        self._progress = progress or Progress()
        self._drawn = -math.inf

    def stop_clock(self) -> None:
        """The last byte has moved (an upload's body is sent): the rate stops here, the wait after is not counted."""
        self.ended = time.monotonic()

    def add(self, count: int) -> None:
        self.done_bytes += count
        now = time.monotonic()
        if self._progress.tty and now - self._drawn < 0.1:
            return
        self._drawn = now
        self._progress.update(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (time.monotonic() if now is None else now) - self.started)
        rate = f"{human_bytes(self.done_bytes / elapsed)}/s"
        if self.total:
            pct = 100.0 * self.done_bytes / self.total
            return f"{self.label}: {human_bytes(self.done_bytes)} / {human_bytes(self.total)} ({pct:.0f}%), {rate}"
        return f"{self.label}: {human_bytes(self.done_bytes)}, {rate}"

    def finish(self) -> str:
        """End the display; returns a line for a summary (bytes moved, time, rate)."""
        self._progress.done()
        elapsed = (self.ended or time.monotonic()) - self.started
        rate = human_bytes(self.done_bytes / max(elapsed, 1e-6))
        return f"{self.label}: {human_bytes(self.done_bytes)} in {elapsed:.1f}s ({rate}/s)"


M_ARENA_MAX = -8  # glibc's mallopt parameter


def one_heap() -> None:
    """Threads allocate from one C heap (glibc; call before starting them). By default each thread that
    allocates gets an arena of its own, which keeps what it freed: a fetch's download, reader and commit
    threads held several MB more that way (peak 52-54 -> 47 MiB at 200,000 requests, 41.5 -> 39.6 MiB
    at 20,000). They take turns under the GIL anyway. A MALLOC_ARENA_MAX of the user's wins; on another C
    library (musl, macOS) nothing is done."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        import ctypes

        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (ValueError, OSError, AttributeError):  # not glibc, or no such call
        return
