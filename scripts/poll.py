#!/usr/bin/env python3
"""Check batch status once (default) or wait until every batch is terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from doubleword.api import get_batch
from doubleword.cli import Progress, info, make_parser, run, seconds, summary
from doubleword.client import ApiClient
from doubleword.errors import ExitCode, UsageError
from doubleword.manifest import Manifest, add_target_args, client_for, load_targets
from doubleword.status import (
    describe_batch,
    exit_code_for,
    is_terminal,
    job_exit_code,
    job_unanswered,
    suggested_check,
)

EXAMPLES = """\
  python3 scripts/poll.py --manifest jobs.jsonl.manifest.json
  python3 scripts/poll.py 0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90
  python3 scripts/poll.py --manifest jobs.jsonl.manifest.json --wait --timeout 3600"""

DESCRIPTION = """\
Check the status of batches: one check by default (so an agent never sits in a loop), or --wait to
block until every batch is terminal or --timeout passes. Prints per batch: status, request counts,
percent done, output/error file ids, created/expires/expired times, overdue, terminal; plus a
suggested next_check_seconds. With --manifest it checks every round of the job on the server the job
was submitted to, and updates the manifest. Exit 0 only when every batch completed and no request of
the job is left failed (a later round that answered them counts); 6 when finished otherwise; 7 while
anything runs. Once every batch of a --manifest job finished, "next" is the fetch that downloads the
answers and says whether a resubmit helps."""


def build_parser() -> Any:
    parser = make_parser("poll.py", DESCRIPTION, EXAMPLES, exit_codes=tuple(ExitCode))
    add_target_args(parser)
    parser.add_argument("--wait", action="store_true", help="block until every batch is terminal")
    parser.add_argument(
        "--timeout", type=seconds, default=3600.0, help="with --wait: give up after SECONDS (default 3600)"
    )
    parser.add_argument(
        "--interval",
        type=seconds,
        default=None,
        help="with --wait: seconds between checks (default: the suggested next check, at most 30)",
    )
    return parser


def check(
    client: ApiClient, manifest: Manifest | None, ids: list[str], latest: dict[str, dict[str, Any]]
) -> None:
    """GET every batch not yet seen finished (a finished batch cannot change); record them in the manifest."""
    todo = [batch_id for batch_id in ids if not is_terminal(latest.get(batch_id, {}).get("status"))]
    fresh = [get_batch(client, batch_id) for batch_id in todo]
    latest.update(zip(todo, fresh, strict=True))
    if manifest is not None and fresh:
        manifest.record_batches(fresh)


def progress_line(views: list[dict[str, Any]]) -> str:
    """Batches terminal, and requests done: answered or failed, or never to run (the rest of a batch that
    ended cancelled or expired; a cancelled batch would otherwise stay short of 100% for good)."""
    total = done = never = 0
    for view in views:
        counts = view["request_counts"]
        size = int(counts.get("total") or 0)
        ran = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
        total, done = total + size, done + ran
        if view["terminal"]:
            never += max(0, size - ran)
    terminal = sum(1 for v in views if v["terminal"])
    pct = 100.0 * (done + never) / total if total else 0.0
    statuses = ", ".join(sorted({str(v["status"]) for v in views}))
    line = f"{terminal}/{len(views)} batches terminal ({statuses}); {done + never:,}/{total:,} requests done ({pct:.1f}%)"
    return line + (f", {never:,} of them never ran (cancelled or expired)" if never else "")


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        raise UsageError("--interval must be positive")
    manifest, ids = load_targets(args)
    client = client_for(args, manifest)
    progress = Progress() if args.wait else None
    deadline = time.monotonic() + max(0.0, args.timeout)
    latest: dict[str, dict[str, Any]] = {}
    checks = 0
    while True:
        check(client, manifest, ids, latest)
        checks += 1
        now = time.time()
        views = [describe_batch(latest[i], now) for i in ids]
        suggested = suggested_check([latest[i] for i in ids], now)
        if progress is not None:
            progress.update(progress_line(views), force=checks == 1)
        if not args.wait or suggested is None or time.monotonic() >= deadline:
            break
        pause = args.interval if args.interval is not None else min(30.0, float(suggested))
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    if progress is not None:
        progress.done()
        if suggested is not None:
            info(f"poll.py: --timeout {args.timeout:g}s reached with batches still running")
    if manifest is not None:
        code = job_exit_code(manifest, latest)
    else:
        code = exit_code_for(latest.values())
    result: dict[str, Any] = {
        "ok": True,
        "all_terminal": suggested is None,
        "batches": views,
        "counts": _status_counts(views),
        "next_check_seconds": suggested,
        "checks": checks,
        "api_calls": client.calls,
    }
    if manifest is not None:
        result["manifest"] = str(manifest.path.resolve())
        result["rounds"] = len(manifest.rounds)
        unsent = manifest.unsent_report()
        if unsent:
            result["unsent"] = unsent
    left = job_unanswered(manifest, latest)
    result["unanswered"] = left
    rounds = (
        f" over {len(manifest.rounds)} rounds" if manifest is not None and len(manifest.rounds) > 1 else ""
    )
    so_far = " in the finished batches" if suggested is not None else ""  # running ones are not counted yet
    overdue = sum(1 for v in views if v.get("overdue"))
    late = f"; {overdue} batch(es) overdue (past expires_at, still running)" if overdue else ""
    line = f"{progress_line(views)}; {left:,} request(s) without an answer{so_far}{rounds}{late}"
    if manifest is not None and suggested is None:
        # every batch finished: fetch downloads the answers, judges them, and names a resubmit if one helps
        from doubleword.rounds import check_command

        result["next"] = check_command(manifest)
        line += f"; next: {result['next']}"
    summary(line)
    return result, int(code)


def _status_counts(views: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for view in views:
        counts[str(view["status"])] = counts.get(str(view["status"]), 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(run(main))
