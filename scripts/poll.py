#!/usr/bin/env python3
"""Check batch status once (default) or wait until every batch is terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from doubleword.api import describe_batch, get_batch, next_check_seconds
from doubleword.cli import Progress, info, make_parser, run, seconds
from doubleword.client import ApiClient, client_from_args
from doubleword.config import UNSUCCESSFUL_STATUSES
from doubleword.errors import ExitCode, UsageError
from doubleword.manifest import Manifest, add_target_args, load_targets

EXAMPLES = """\
  python3 scripts/poll.py --manifest jobs.jsonl.manifest.json
  python3 scripts/poll.py 0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90
  python3 scripts/poll.py --manifest jobs.jsonl.manifest.json --wait --timeout 3600"""

DESCRIPTION = """\
Check the status of batches: one check by default (so an agent never sits in a loop), or --wait to
block until every batch is terminal or --timeout passes. Prints per batch: status, request counts,
percent done, output/error file ids, created/expires/expired times, overdue, terminal; plus a
suggested next_check_seconds. Updates the manifest when one is given."""


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


def check(client: ApiClient, manifest: Manifest | None, ids: list[str]) -> list[dict[str, Any]]:
    """GET every batch once; record what the server says in the manifest."""
    batches = [get_batch(client, batch_id) for batch_id in ids]
    if manifest is not None:
        manifest.record_batches(batches)
    return batches


def exit_code_for(statuses: list[str | None]) -> int:
    from doubleword.api import is_terminal

    if not all(is_terminal(s) for s in statuses):
        return int(ExitCode.NOT_FINISHED)
    if any(s in UNSUCCESSFUL_STATUSES for s in statuses):
        return int(ExitCode.BATCH_UNSUCCESSFUL)
    return int(ExitCode.OK)


def progress_line(views: list[dict[str, Any]]) -> str:
    total = sum(int(v["request_counts"].get("total") or 0) for v in views)
    done = sum(
        int(v["request_counts"].get("completed") or 0) + int(v["request_counts"].get("failed") or 0)
        for v in views
    )
    terminal = sum(1 for v in views if v["terminal"])
    pct = 100.0 * done / total if total else 0.0
    statuses = ", ".join(sorted({str(v["status"]) for v in views}))
    return f"{terminal}/{len(views)} batches terminal ({statuses}); {done}/{total} requests done ({pct:.1f}%)"


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        raise UsageError("--interval must be positive")
    manifest, ids = load_targets(args)
    client = client_from_args(args)
    progress = Progress() if args.wait else None
    deadline = time.monotonic() + max(0.0, args.timeout)
    checks = 0
    while True:
        batches = check(client, manifest, ids)
        checks += 1
        now = time.time()
        views = [describe_batch(b, now) for b in batches]
        waits = [w for w in (next_check_seconds(b, now) for b in batches) if w is not None]
        suggested = min(waits) if waits else None
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
    code = exit_code_for([v["status"] for v in views])
    result: dict[str, Any] = {
        "ok": True,
        "all_terminal": suggested is None,
        "batches": views,
        "counts": _status_counts(views),
        "next_check_seconds": suggested,
        "checks": checks,
    }
    if manifest is not None:
        result["manifest"] = str(manifest.path)
    return result, code


def _status_counts(views: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for view in views:
        counts[str(view["status"])] = counts.get(str(view["status"]), 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(run(main))
