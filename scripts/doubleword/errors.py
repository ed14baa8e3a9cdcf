"""One hierarchy of expected failures, each with its exit code; the CLI boundary turns them into JSON."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


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
