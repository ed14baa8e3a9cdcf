"""A job's rounds seen together: which inputs still lack a usable answer, and whether resubmitting them
is likely to help.

``job_records`` reduces a results.jsonl to one record per first-round input (best across rounds:
``completed`` beats everything, otherwise the latest round's record; ``attempts`` = rounds that sent it).
It works on a results.jsonl that already holds one line per input (the download engine's job-level join)
and on one with a line per round's request (each line naming its batch), so resubmission does not
depend on which of the two the engine writes.

Failure judgement (SPEC section 4, issue 11): server errors, timeouts, rate limits and requests that were
never run are worth resubmitting; a request that failed the same way in the last two rounds is not
(fix it); a first rejection (4xx) gets one more round to tell the two apart; a cut-off answer only helps
with a larger max_tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doubleword.manifest import Manifest

USABLE = "completed"
TRANSIENT_TYPES = frozenset(
    {"RetriableHttpStatus", "NetworkError", "Timeout", "TaskTerminated", "BatchTerminated", "not_answered"}
)
TRANSIENT_HTTP = frozenset({408, 409, 425, 429})


@dataclass
class InputRecord:
    """One first-round input as the job stands."""

    custom_id: str
    status: str
    error: dict[str, Any] | None
    round: int  # the round whose record this is
    attempts: int


def signature(error: dict[str, Any] | None) -> list[Any] | None:
    """How a request failed, comparable across rounds (type, HTTP status, message)."""
    if not error:
        return None
    return [error.get("type"), error.get("status"), error.get("message")]


def _round_of(manifest: Manifest) -> dict[str, int]:
    return {s.batch_id: s.round for s in manifest.shards if s.batch_id}


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def job_records(manifest: Manifest, results: Iterable[dict[str, Any]]) -> list[InputRecord]:
    """One record per input of the first round, in input order, best across rounds."""
    rounds = _round_of(manifest)
    by_id: dict[str, InputRecord] = {}
    for line in results:
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str):
            continue
        number = rounds.get(str(line.get("batch_id")), 1)
        given = line.get("attempts")
        attempts = given if isinstance(given, int) else 1
        record = InputRecord(custom_id, str(line.get("status")), line.get("error"), number, attempts)
        seen = by_id.get(custom_id)
        if seen is None:
            if number == 1 or isinstance(line.get("attempts"), int):
                by_id[custom_id] = record
            continue  # a later round's line for an input the first round does not have: not the job's
        if "attempts" not in line:
            record.attempts = seen.attempts + 1
        if seen.status != USABLE and (record.status == USABLE or record.round >= seen.round):
            by_id[custom_id] = record
        else:
            seen.attempts = record.attempts
    return list(by_id.values())


def judge(status: str, error: dict[str, Any] | None, persistent: bool) -> tuple[bool, str]:
    """Whether resubmitting an unanswered input is likely to help, and why."""
    if persistent:
        return False, "failed the same way in the last two rounds: fix the request instead of resending it"
    if status == "truncated":
        return False, "the answer was cut off: resubmit with a larger --max-tokens (--only truncated)"
    if status == "invalid":
        return True, "the answer broke its JSON schema; another sample may not (a clearer prompt helps more)"
    if status == "missing" or not error:
        return True, "never answered (the batch ended first): resubmitting runs it"
    kind, http = error.get("type"), error.get("status")
    if kind in TRANSIENT_TYPES or (isinstance(http, int) and (http >= 500 or http in TRANSIENT_HTTP)):
        return True, "a server error, timeout or rate limit: likely to pass on another round"
    return True, "rejected once; one more round tells a passing fault from a request to fix"


def failure_groups(unanswered: list[InputRecord], persistent_ids: set[str]) -> list[dict[str, Any]]:
    """The unanswered inputs grouped by status and failure kind, each with a judgement."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in unanswered:
        error = record.error or {}
        persistent = record.custom_id in persistent_ids
        helps, why = judge(record.status, record.error, persistent)
        verdict = "no" if not helps else "yes"
        key = (record.status, error.get("type"), error.get("status"), persistent)
        group = groups.setdefault(
            key,
            {
                "type": error.get("type"),
                "status": error.get("status"),
                "result_status": record.status,
                "count": 0,
                "persistent": int(persistent),
                "resubmit": verdict,
                "advice": why,
                "example": {"custom_id": record.custom_id, "message": str(error.get("message") or "")[:300]},
            },
        )
        group["count"] += 1
        group["persistent"] = group["count"] if persistent else 0
    return sorted(groups.values(), key=lambda g: -g["count"])
