"""The command-line boundary: parsers with the shared flags, the error boundary, output and progress.

Each command is a thin ``main(argv)`` that builds a parser with :func:`make_parser`, does its work and
returns ``(result_dict, exit_code)``; :func:`run` is the one error boundary that turns exceptions into
``error: ...`` on stderr, a JSON document on stdout and the documented exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn

from doubleword.config import BASE_URL_ENV, DEFAULT_BASE_URL, redact
from doubleword.errors import CliError, ExitCode, UsageError

EXIT_CODE_HELP = """\
exit codes:
  0  success (poll/fetch: every batch finished and every result is on disk)
  1  unexpected internal error (traceback only with --debug)
  2  usage error
  3  authentication or configuration error (no key, 401, 403)
  4  invalid input (local validation failed, or the server rejected the input)
  5  service or network failure after retries
  6  a batch ended unsuccessfully (failed, cancelled, expired)
  7  not finished yet (a batch is still running; partial results may be on disk)
"""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become a :class:`UsageError` (JSON on stdout, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def make_parser(prog: str, description: str, examples: str, *, network: bool = True) -> Parser:
    """A parser with the shared flags, the examples and the exit-code table in ``--help``."""
    parser = Parser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples.rstrip()}\n\n{EXIT_CODE_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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


def run(main: Callable[[list[str]], tuple[dict[str, Any], int]], argv: list[str] | None = None) -> int:
    """Run a script's ``main`` and turn its outcome into one JSON document on stdout and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result, code = main(args)
    except CliError as exc:
        result, code = _error_result(exc.kind, exc.message, exc.details), int(exc.code)
        _print_err(f"error: {exc.message}")
    except KeyboardInterrupt:
        result, code = _error_result("interrupted", "interrupted; state saved, re-run to resume"), 130
        _print_err("error: interrupted; state saved, re-run the same command to resume")
    except BrokenPipeError:
        return int(ExitCode.INTERNAL)
    except OSError as exc:
        if exc.filename is None:  # not about a path (a socket, say): an unexpected failure
            result, code = _unexpected(exc, debug)
        else:  # a path the user gave (or its folder) cannot be read or written
            where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
            message = f"cannot use {where}: {exc.strerror or exc}; check the path and its permissions"
            result, code = _error_result("invalid_input", message), int(ExitCode.INVALID_INPUT)
            if debug:
                _print_err(traceback.format_exc())
            _print_err(f"error: {message}")
    except Exception as exc:  # the last line of defence: never a bare traceback unless asked
        result, code = _unexpected(exc, debug)
    emit(result)
    return code


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


def emit(result: dict[str, Any]) -> None:
    """Print the run's single JSON document on stdout (secrets removed)."""
    sys.stdout.write(redact(json.dumps(result, indent=2, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


def _print_err(text: str) -> None:
    sys.stderr.write(redact(text).rstrip("\n") + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """A warning for humans on stderr."""
    _print_err(f"warning: {message}")


def info(message: str) -> None:
    """A progress or status line for humans on stderr."""
    _print_err(message)


class Progress:
    """A progress display on stderr: one updating line on a TTY, an occasional plain line otherwise."""

    def __init__(self, stream: IO[str] | None = None, plain_every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.plain_every = plain_every
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[K" + redact(text))
            self._shown = True
        elif force or now - self._last >= self.plain_every:
            self.stream.write(redact(text) + "\n")
            self._last = now
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
