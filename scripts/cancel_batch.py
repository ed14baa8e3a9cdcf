#!/usr/bin/env python3
"""Cancel running batches; refuse to touch a batch that already finished unless --force."""

from __future__ import annotations

import sys
from typing import Any

from doubleword.api import cancel_batch, get_batch
from doubleword.cli import info, make_parser, run, summary
from doubleword.errors import ExitCode
from doubleword.manifest import add_target_args, client_for, load_targets
from doubleword.status import is_terminal

EXAMPLES = """\
  python3 scripts/cancel_batch.py 0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90
  python3 scripts/cancel_batch.py --manifest jobs.jsonl.manifest.json"""

DESCRIPTION = """\
Cancel batches. Requests not yet started never run; results already produced stay downloadable
(fetch_results.py). A batch id given that already finished is refused, exit 4 (Doubleword would relabel
a completed batch as cancelled) unless --force; with --manifest, the job's finished batches (an earlier
round, a shard done first) are left as they are ("finished": true) and the running ones cancelled."""


def build_parser() -> Any:
    parser = make_parser(
        "cancel_batch.py",
        DESCRIPTION,
        EXAMPLES,
        exit_codes=(ExitCode.OK, ExitCode.AUTH, ExitCode.INVALID_INPUT, ExitCode.SERVICE),
    )
    add_target_args(parser)
    parser.add_argument("--force", action="store_true", help="cancel even a batch that already finished")
    return parser


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    manifest, ids = load_targets(args)
    client = client_for(args, manifest)
    outcomes = []
    refused: list[str] = []
    left: list[str] = []  # with --manifest: the job's batches that had already finished
    seen = []
    for batch_id in ids:
        batch = get_batch(client, batch_id)
        before = batch.get("status")
        if before in ("cancelled", "cancelling"):  # nothing to do: report it, not an error
            info(f"batch {batch_id} is already {before}")
            outcomes.append({"batch_id": batch_id, "status": before, "cancelled": True, "already": True})
        elif is_terminal(before) and not args.force and manifest is not None:
            # a job's finished batch (an earlier round, a shard done first): done, nothing to cancel
            left.append(batch_id)
            outcomes.append({"batch_id": batch_id, "status": before, "cancelled": False, "finished": True})
        elif is_terminal(before) and not args.force:
            refused.append(f"{batch_id} is already {before}")
            outcomes.append({"batch_id": batch_id, "status": before, "cancelled": False, "refused": True})
        else:
            batch = cancel_batch(client, batch_id)
            info(f"batch {batch_id}: {before} -> {batch.get('status')}")
            outcomes.append(
                {
                    "batch_id": batch_id,
                    "previous_status": before,
                    "status": batch.get("status"),
                    "cancelled": True,
                }
            )
        seen.append(batch)
    if manifest is not None:
        manifest.record_batches(seen)
    result: dict[str, Any] = {"ok": not refused, "batches": outcomes}
    parts = [f"{sum(bool(o['cancelled']) for o in outcomes)} cancelled"]
    if refused or not left:
        parts.append(f"{len(refused)} refused (already finished)")
    if left:
        parts.append(f"{len(left)} of the job already finished (left as they are)")
    summary(", ".join(parts))
    if refused:
        message = (
            "refusing to cancel finished batches (--force would relabel them cancelled; it resends nothing "
            "and their results stay downloadable): " + "; ".join(refused)
        )
        result["error"] = {"type": "invalid_input", "message": message}
        info(f"error: {message}")
        return result, int(ExitCode.INVALID_INPUT)
    return result, int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(run(main))
