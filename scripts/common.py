"""Shared core of every command in scripts/: exit codes, errors, configuration, output and files.

Each script is a thin ``main(argv)`` that builds a parser with :func:`make_parser`, does its work and
returns ``(result_dict, exit_code)``; :func:`run` is the one error boundary that turns exceptions into
``error: ...`` on stderr, a JSON document on stdout and the documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

SKILL_DIR = Path(__file__).resolve().parent.parent
SCHEMA_DIR = SKILL_DIR / "references" / "schemas"

API_KEY_ENV = "DOUBLEWORD_API_KEY"
BASE_URL_ENV = "DOUBLEWORD_BASE_URL"
DEFAULT_BASE_URL = "https://api.doubleword.ai/v1"

# Documented Doubleword limits, enforced on the client side (doubleword-api.md section 1).
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_REQUESTS_PER_FILE = 50_000
MAX_CUSTOM_ID_BYTES = 64
COMPLETION_WINDOWS = ("24h", "1h")
BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
)
# "deleted" is ours, not the server's: a batch that 404s while its recorded output files remain.
DELETED = "deleted"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", DELETED})
UNSUCCESSFUL_STATUSES = frozenset({"failed", "cancelled", "expired", DELETED})


class ExitCode(IntEnum):
    """Exit codes shared by all scripts (SPEC section 3)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    AUTH = 3
    INVALID_INPUT = 4
    SERVICE = 5
    BATCH_UNSUCCESSFUL = 6
    NOT_FINISHED = 7
    INTERRUPTED = 130


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


# --------------------------------------------------------------------------- errors


class CliError(Exception):
    """An expected failure with a message for the user and an exit code."""

    code: ExitCode = ExitCode.INTERNAL
    kind = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class UsageError(CliError):
    code = ExitCode.USAGE
    kind = "usage_error"


class ConfigError(CliError):
    code = ExitCode.AUTH
    kind = "auth_error"


class InputError(CliError):
    code = ExitCode.INVALID_INPUT
    kind = "invalid_input"


class BusyError(CliError):
    """Another run is already doing this work; running again later carries on from where it stops."""

    code = ExitCode.NOT_FINISHED
    kind = "busy"


class ServiceError(CliError):
    code = ExitCode.SERVICE
    kind = "service_error"


# --------------------------------------------------------------------------- secrets

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from anything we print or write."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``<hidden>``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "<hidden>")
    return text


# --------------------------------------------------------------------------- configuration


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


def base_url_from(args: argparse.Namespace) -> str:
    """The API base URL from ``--base-url``, the environment or the default, checked for safety."""
    url = (getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"base URL {url!r} is not a valid URL ({exc}); set {BASE_URL_ENV} or --base-url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL; set {BASE_URL_ENV} or --base-url")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not args.allow_insecure:
        raise ConfigError(
            f"refusing to send the API key over plain http to {parts.hostname}; use https, "
            "or pass --allow-insecure if you really mean it"
        )
    return url.rstrip("/")


def api_key_from_env() -> str:
    """The API key from the environment; a clear configuration error if it is missing."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"{API_KEY_ENV} is not set. Create a key at https://app.doubleword.ai and run: "
            f"export {API_KEY_ENV}=sk-..."
        )
    register_secret(key)
    return key


def _is_loopback(host: str) -> bool:
    """Only ``localhost`` and loopback IP literals (``127.evil.example`` is a name, not a loopback)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def seconds(value: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {value!r}")
    return number


# --------------------------------------------------------------------------- the error boundary


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


# --------------------------------------------------------------------------- files


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file, never half."""
    target = Path(path)
    with _atomic_target(target) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, redact(json.dumps(obj, indent=2, ensure_ascii=False)) + "\n")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only if the block completes."""
    with _atomic_target(Path(path)) as handle:
        yield handle


@contextlib.contextmanager
def _atomic_target(target: Path) -> Iterator[IO[bytes]]:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = temp_file_beside(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def temp_file_beside(target: Path) -> tuple[int, str]:
    """A new temp file in ``target``'s folder, named so a later run can remove it if this one dies."""
    prefix = f".{target.name}.{os.getpid()}."
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    except OSError as exc:  # name the file the user asked for, not our temp file
        raise OSError(exc.errno, f"{exc.strerror} (cannot create files in {target.parent})", str(target))


_SWEPT: set[Path] = set()


def remove_stale_temps(target: Path) -> None:
    """Delete temp files a killed run (SIGKILL, power loss) left beside ``target``, once per process.

    Temp names carry the writer's pid: only files whose writer is gone are removed, so a run working
    on the same folder at the same time keeps its own."""
    if target in _SWEPT:
        return
    _SWEPT.add(target)
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(target.parent / name)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Load a JSON file we wrote earlier, with a clear error if it is missing or damaged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path} is not readable JSON ({exc}); fix or remove it")
