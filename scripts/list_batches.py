#!/usr/bin/env python3
"""List batches, newest first, with their status, counts, created time and metadata."""

from __future__ import annotations

import sys
from typing import Any

from doubleword.api import iter_batches
from doubleword.cli import make_parser, run, summary
from doubleword.client import client_from_args
from doubleword.errors import ExitCode, UsageError

EXAMPLES = """\
  python3 scripts/list_batches.py
  python3 scripts/list_batches.py --status in_progress --limit 50
  python3 scripts/list_batches.py --all"""

DESCRIPTION = """\
List batches newest first: id, status, request counts, created time, endpoint, window and metadata.
--all follows the server's pages (has_more/after) to the end, stopping safely if a page repeats."""

STATUSES = ("in_progress", "completed", "failed", "cancelled", "expired")


def build_parser() -> Any:
    parser = make_parser(
        "list_batches.py",
        DESCRIPTION,
        EXAMPLES,
        exit_codes=(ExitCode.OK, ExitCode.AUTH, ExitCode.INVALID_INPUT, ExitCode.SERVICE),
    )
    parser.add_argument("--limit", type=int, default=20, help="how many batches (default 20)")
    parser.add_argument(
        "--status",
        choices=STATUSES,
        help="only batches in this state (in_progress includes validating; expired = past the deadline)",
    )
    parser.add_argument("--all", action="store_true", help="every batch, following all pages")
    return parser


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    client = client_from_args(args)
    batches = []
    has_more = False
    for batch, more in iter_batches(client, limit=args.limit, status=args.status, all_pages=args.all):
        has_more = more
        batches.append(
            {
                "id": batch.get("id"),
                "status": batch.get("status"),
                "request_counts": batch.get("request_counts"),
                "created_at": batch.get("created_at"),
                "endpoint": batch.get("endpoint"),
                "completion_window": batch.get("completion_window"),
                "expires_at": batch.get("expires_at"),
                "metadata": batch.get("metadata") or {},
            }
        )
    summary(f"{len(batches)} batches listed" + (" (more on the server: --all)" if has_more else ""))
    # With --all, has_more stays true only if the walk had to stop early (the server repeated a page).
    return {"ok": True, "count": len(batches), "has_more": has_more, "batches": batches}, 0


if __name__ == "__main__":
    sys.exit(run(main))
