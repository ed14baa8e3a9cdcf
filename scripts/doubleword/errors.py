"""One hierarchy of expected failures, each with its exit code; the CLI boundary turns them into JSON.

Exit codes are those of the table in SKILL.md; HTTP statuses map to them as in
``references/api_reference.md`` section 9.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes shared by all scripts (the table in SKILL.md)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    AUTH = 3
    INVALID_INPUT = 4
    SERVICE = 5
    BATCH_UNSUCCESSFUL = 6
    NOT_FINISHED = 7
    INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Raised in a worker thread (a download, an upload) once the command was interrupted: a Ctrl-C reaches
    the main thread only, which then tells the others to stop at their next piece instead of waiting."""


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
    """No key, a key that cannot be sent, an unsafe or unreadable base URL."""

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
    """The service or the network failed (after retries, or in a way retrying cannot fix)."""

    code = ExitCode.SERVICE
    kind = "service_error"


class AmbiguousRequest(ServiceError):
    """A creating call failed in a way that leaves its effect unknown (reply lost or server error).

    ``unanswered`` when the request was sent whole but no reply came in time: the server may still be
    working on it (storing an upload), so the object can appear a while later."""

    unanswered = False


class DeadlineExceeded(CliError):
    """The command's ``--timeout`` ran out while a request was waiting: not finished, run it again."""

    code = ExitCode.NOT_FINISHED
    kind = "timeout"


class ApiError(CliError):
    """The server answered with an error status; ``status`` and the server's ``message`` are kept."""

    def __init__(self, status: int, message: str, *, method: str = "", path: str = "") -> None:
        where = f"{method} {path}: " if method else ""
        hint = MODEL_HINT if status == 403 and "Model '" in message else STATUS_HINTS.get(status, "")
        if status == 404 and path.strip("/") in ROUTES:  # no id in the path: the route itself is missing
            hint = ROUTE_HINT
        super().__init__(f"{where}HTTP {status}: {message}{hint}", details={"status": status})
        self.status = status
        self.server_message = message
        self.code = exit_code_for_status(status)
        self.kind = {
            ExitCode.AUTH: "auth_error",
            ExitCode.INVALID_INPUT: "invalid_input",
        }.get(self.code, "service_error")


# A 404 on a route without an id (listing or creating) means the server has no such route at all.
ROUTES = frozenset({"files", "batches", "models"})
ROUTE_HINT = " (the server has no such route: check the base URL; Doubleword's ends in /v1, https://api.doubleword.ai/v1)"
MODEL_HINT = " (use a model your key can use: scripts/list_models.py lists them, from GET /models)"
STATUS_HINTS = {
    401: " (the API key was refused: check DOUBLEWORD_API_KEY)",
    403: " (the API key in DOUBLEWORD_API_KEY is not allowed to do this)",
    404: " (ids belong to one account and server: check the id, DOUBLEWORD_API_KEY and the base URL)",
}


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code for an HTTP error status (references/api_reference.md section 9)."""
    if status in (401, 402, 403, 407):  # 407: a proxy on the route wants credentials
        return ExitCode.AUTH
    if 400 <= status < 500 and status not in (408, 429):
        return ExitCode.INVALID_INPUT
    return ExitCode.SERVICE
