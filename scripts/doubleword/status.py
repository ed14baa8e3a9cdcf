"""Batch status presentation: terminal states, the per-batch view, when to look again, and the exit code
for a set of batches (a whole job, later rounds included). Used by poll.py and fetch_results.py.

The exit codes follow SPEC section 3: 7 while any batch runs; 0 only when every batch that counts
completed and no request of the job is left without an answer; 6 otherwise. "That counts": a round
resends what the rounds before it left unanswered, so an earlier round's failures are judged by the
latest round that has batches (plus what that round chose not to resend).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from doubleword.config import TERMINAL_STATUSES
from doubleword.errors import ExitCode
from doubleword.manifest import Manifest, Round
from doubleword.manifest.records import unsent_requests

MIN_CHECK_S = 5
MAX_CHECK_S = 900
REMAINING_SHARE = 1 / 3  # look again after about a third of the expected remaining time


def is_terminal(status: str | None) -> bool:
    """``finalizing`` and ``cancelling`` are not terminal; ``expired`` is (other servers)."""
    return status in TERMINAL_STATUSES


def _counts(batch: Mapping[str, Any]) -> tuple[int, int, int]:
    """(total, completed, failed) from a batch's request counts (an odd type is an internal error)."""
    counts = batch.get("request_counts") or {}
    return int(counts.get("total") or 0), int(counts.get("completed") or 0), int(counts.get("failed") or 0)


def describe_batch(batch: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The per-batch view that poll.py and fetch_results.py print."""
    now = time.time() if now is None else now
    status = batch.get("status")
    total, completed, failed = _counts(batch)
    done = completed + failed
    terminal = is_terminal(status)
    expires_at = batch.get("expires_at")
    past_deadline = bool(batch.get("expired_at")) or (
        isinstance(expires_at, (int, float)) and now > expires_at
    )
    return {
        "batch_id": batch.get("id"),
        "status": status,
        "terminal": terminal,
        "request_counts": batch.get("request_counts") or {},
        "percent": round(100.0 * done / total, 1) if total else (100.0 if terminal else 0.0),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "created_at": batch.get("created_at"),
        "in_progress_at": batch.get("in_progress_at"),
        "expires_at": expires_at,
        "expired_at": batch.get("expired_at"),
        "completed_at": batch.get("completed_at") or batch.get("failed_at") or batch.get("cancelled_at"),
        "overdue": past_deadline and not terminal,
        "endpoint": batch.get("endpoint"),
        "metadata": batch.get("metadata") or {},
    }


def next_check_seconds(batch: dict[str, Any], now: float | None = None) -> int | None:
    """A polite time to look again, growing with the expected remaining time (None when terminal).

    With progress to go on, about a third of the remaining time at the rate seen so far (an agent told
    "5 s" at 7.5% of a 5-minute batch would poll in a loop); before any progress, a tenth of the age.
    Never past the batch's deadline, never under MIN_CHECK_S nor over MAX_CHECK_S.
    """
    if is_terminal(batch.get("status")):
        return None
    now = time.time() if now is None else now
    created = batch.get("created_at") or now
    total, completed, failed = _counts(batch)
    done = completed + failed
    if total and done:
        started = batch.get("in_progress_at") or created
        running_for = max(1.0, now - started)
        remaining = (total - done) * running_for / done  # at the rate seen so far
        wait = remaining * REMAINING_SHARE
    else:
        wait = max(0.0, now - created) / 10
    wait = min(MAX_CHECK_S, max(MIN_CHECK_S, wait))
    expires_at = batch.get("expires_at")
    if isinstance(expires_at, (int, float)) and expires_at > now:
        wait = min(wait, max(MIN_CHECK_S, expires_at - now))
    return int(round(wait))


def unanswered(batch: Mapping[str, Any]) -> int:
    """Requests of a finished batch without an answer from the server: failed, or never run."""
    total, completed, failed = _counts(batch)
    if batch.get("status") == "completed":
        return failed
    return max(failed, total - completed)


def exit_code_for(batches: Iterable[Mapping[str, Any]], *, left_behind: int = 0) -> ExitCode:
    """7 while any batch runs; 0 when every batch completed with no request failed (and nothing was left
    behind); 6 otherwise."""
    batches = list(batches)
    if not all(is_terminal(b.get("status")) for b in batches):
        return ExitCode.NOT_FINISHED
    if left_behind or any(b.get("status") != "completed" or unanswered(b) for b in batches):
        return ExitCode.BATCH_UNSUCCESSFUL
    return ExitCode.OK


def _latest_round(manifest: Manifest) -> Round | None:
    return next((r for r in reversed(manifest.rounds) if any(s.batch_id for s in r.shards)), None)


def job_exit_code(manifest: Manifest, batches: Mapping[str, Mapping[str, Any]]) -> ExitCode:
    """The exit code of a job from the latest view of its batches (by batch id), later rounds included.

    Any running batch of any round: 7. Otherwise the latest round with batches decides: it resent
    everything the earlier rounds left unanswered except ``left_behind`` (inputs a narrowed round chose
    not to resend), so the job is done when that round completed with no failure and left nothing behind.
    """
    known = [batches[s.batch_id] for s in manifest.shards if s.batch_id and s.batch_id in batches]
    if not all(is_terminal(b.get("status")) for b in known):
        return ExitCode.NOT_FINISHED
    latest = _latest_round(manifest)
    if latest is None:
        return exit_code_for(known)
    if not latest.submitted:  # a round stopped half-way: some of its inputs were never sent
        return ExitCode.BATCH_UNSUCCESSFUL
    own = [batches[s.batch_id] for s in latest.shards if s.batch_id and s.batch_id in batches]
    return exit_code_for(own, left_behind=latest.left_behind)


def job_unanswered(manifest: Manifest | None, batches: Mapping[str, Mapping[str, Any]]) -> int:
    """Requests of the job the server has not answered (failed or never run), later rounds counted."""
    latest = _latest_round(manifest) if manifest is not None else None
    if manifest is None or latest is None:
        return sum(unanswered(b) for b in batches.values() if is_terminal(b.get("status")))
    own = [batches[s.batch_id] for s in latest.shards if s.batch_id and s.batch_id in batches]
    unsent = sum(unsent_requests(s) or 0 for s in latest.shards if not s.batch_id)  # in no batch: unanswered
    return latest.left_behind + unsent + sum(unanswered(b) for b in own if is_terminal(b.get("status")))


def suggested_check(batches: Iterable[dict[str, Any]], now: float | None = None) -> int | None:
    """The soonest next check over running batches (None when every one is terminal)."""
    waits = [w for w in (next_check_seconds(b, now) for b in batches) if w is not None]
    return min(waits) if waits else None
