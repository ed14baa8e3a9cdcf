#!/usr/bin/env python3
"""Upload batch files and create one batch per shard, exactly once, recording the job in a manifest;
``--resubmit`` sends, as the job's next round, every input that has no usable answer yet."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from doubleword.cli import info, make_parser, run, warn
from doubleword.client import client_from_args
from doubleword.config import COMPLETION_WINDOWS, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.errors import ExitCode, InputError, UsageError
from doubleword.manifest import Manifest, client_for, default_manifest_path
from doubleword.planning import (
    Options,
    dry_run_plan,
    nothing_sent,
    parse_cost,
    parse_metadata,
    plan_job,
    same_inputs,
    validate_inputs,
    validation_warnings,
)
from doubleword.resubmit import RESUBMITTABLE, Adjustments, resubmit
from doubleword.submission import (
    DEFAULT_UPLOADS,
    MAX_UPLOADS,
    CostLimit,
    send_shards,
    submit_lock,
    summary,
    usd,
)

EXAMPLES = """\
  python3 scripts/submit.py jobs.jsonl
  python3 scripts/submit.py jobs.jsonl --window 1h --metadata project=survey --max-cost 5
  python3 scripts/submit.py --resubmit --manifest jobs.jsonl.manifest.json
  python3 scripts/submit.py --resubmit --manifest jobs.jsonl.manifest.json --only truncated --max-tokens 2048"""

DESCRIPTION = """\
Validate, upload and start batches. Each input (sharded when it exceeds the per-file limits) becomes
one uploaded file and one batch; the job is recorded in a manifest (default <first input>.manifest.json,
with the server's base URL) so that running the same command again reports the existing batches instead
of creating new ones. --resubmit --manifest PATH sends, as the next round of the same job, every input
that has no usable answer yet (failed, missing, truncated, invalid): it downloads what it needs, refuses
(exit 7, nothing sent) while any batch of the job runs, and never resends an answered request.
Prints the manifest path (absolute) and each batch's id, input file id, shard, round, requests, status."""


def build_parser() -> Any:
    codes = (
        ExitCode.OK,
        ExitCode.AUTH,
        ExitCode.INVALID_INPUT,
        ExitCode.SERVICE,
        (
            ExitCode.BATCH_UNSUCCESSFUL,
            "--resubmit: inputs lack an answer but none matches --only/--skip-persistent",
        ),
        (ExitCode.NOT_FINISHED, "--resubmit: a batch of the job is still running; nothing was sent"),
    )
    parser = make_parser("submit.py", DESCRIPTION, EXAMPLES, exit_codes=codes)
    parser.add_argument("inputs", nargs="*", metavar="FILE", help="batch JSONL file(s) to submit")
    parser.add_argument("--manifest", help="manifest path (default: <first input>.manifest.json)")
    parser.add_argument(
        "--window", choices=COMPLETION_WINDOWS, default="24h", help="completion window (default 24h)"
    )
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="batch metadata (repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    parser.add_argument(
        "--max-cost",
        metavar="USD",
        help="upload, ask the server's cost estimate and create nothing if the total exceeds USD",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip local validation")
    parser.add_argument(
        "--force",
        action="store_true",
        help="move an existing manifest aside and submit every input again as a new job (pays again "
        "for every request the old job sent)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        help=f"requests per shard (default {MAX_REQUESTS_PER_FILE})",
    )
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_FILE_BYTES, help=f"bytes per shard (default {MAX_FILE_BYTES})"
    )
    parser.add_argument(
        "--uploads",
        type=int,
        default=DEFAULT_UPLOADS,
        metavar="N",
        help=f"upload up to N shards at once (default {DEFAULT_UPLOADS}); each batch starts as soon as its file is up",
    )
    group = parser.add_argument_group("resubmission (with --resubmit --manifest PATH)")
    group.add_argument("--resubmit", action="store_true", help="send the inputs without a usable answer")
    group.add_argument(
        "--only",
        metavar="STATUS[,STATUS]",
        help=f"resubmit only inputs with these result statuses (default: {','.join(RESUBMITTABLE)})",
    )
    group.add_argument("--max-tokens", type=int, metavar="N", help="set max_tokens (chat/completions) to N")
    group.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="set a body field (repeatable)"
    )
    group.add_argument(
        "--skip-persistent",
        action="store_true",
        help="leave out inputs that failed the same way in the last two rounds (likely to fail again)",
    )
    return parser


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    options = Options(
        window=args.window,
        metadata=parse_metadata(args.metadata),
        max_requests=args.max_requests,
        max_bytes=args.max_bytes,
        validate=not args.no_validate,
        max_cost=parse_cost(args.max_cost),
        upload_workers=args.uploads,
    )
    if args.uploads < 1 or args.uploads > MAX_UPLOADS:
        raise UsageError(f"--uploads must be between 1 and {MAX_UPLOADS}")
    if args.max_requests < 1 or args.max_bytes < 1024:
        raise UsageError("--max-requests must be >= 1 and --max-bytes >= 1024")
    if args.resubmit:
        if not args.manifest or args.inputs or args.force:
            raise UsageError("--resubmit takes --manifest PATH and no input files (nor --force)")
        adjust = Adjustments.parse(args.only, args.max_tokens, args.set, skip_persistent=args.skip_persistent)
        with submit_lock(Path(args.manifest)):
            return resubmit(args, options, adjust)
    if args.only or args.max_tokens is not None or args.set or args.skip_persistent:
        raise UsageError("--only, --max-tokens, --set and --skip-persistent go with --resubmit")
    if not args.inputs:
        raise UsageError("give the batch file(s) to submit, or --resubmit --manifest PATH")
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if path.is_dir():
            raise InputError(f"input {path} is a directory, not a batch file; give the .jsonl file(s) in it")
        if not path.is_file():
            raise InputError(f"input file {path} does not exist")
    manifest_path = Path(args.manifest) if args.manifest else default_manifest_path(inputs[0])
    with submit_lock(manifest_path):
        return submit(args, options, inputs, manifest_path)


def submit(args: Any, options: Options, inputs: list[Path], path: Path) -> tuple[dict[str, Any], int]:
    """Round 1 of a job: plan it (or find it planned), then send every shard not yet sent."""
    notes: list[str] = []  # warnings, also returned in the JSON so an agent sees them
    manifest = existing_manifest(args, inputs, path, notes)
    if manifest is None:
        reports = validate_inputs(inputs) if options.validate else []
        notes += validation_warnings(reports)
        if any(not r.get("valid") for r in reports):
            from doubleword.validation import invalid_summary

            message = f"{invalid_summary(reports)}; nothing was uploaded"
            info(f"error: {message} (details in the 'validation' member of stdout)")
            error = {"type": "invalid_input", "message": message}
            return {"ok": False, "error": error, "validation": reports}, int(ExitCode.INVALID_INPUT)
        if args.dry_run:
            return with_notes(dry_run_plan(inputs, reports, options, path), notes), int(ExitCode.OK)
        client = client_from_args(
            args
        )  # a missing key or an unsafe URL stops here, before any file is written
        manifest = plan_job(inputs, reports, options, path, client.base_url)
        manifest.save()
    elif args.dry_run:
        result = summary(manifest, manifest.first_round.shards, created=0)
        result["dry_run"] = True
        result["batches_to_create"] = sum(1 for s in manifest.first_round.shards if s.create_state != "done")
        return result, int(ExitCode.OK)
    else:
        client = client_for(args, manifest)
    shards = manifest.first_round.shards
    if manifest.first_round.submitted:
        info(
            f"all {len(shards)} batch(es) already exist (see {manifest.path.resolve()}); to send what has no "
            f"answer once they finish: submit.py --resubmit --manifest {manifest.path.resolve()}"
        )
        return with_notes(summary(manifest, shards, created=0), notes), int(ExitCode.OK)
    try:
        created = send_shards(client, manifest, shards, options)
    except CostLimit as exc:
        assert options.max_cost is not None
        message = (
            f"the estimated cost ${usd(exc.total)} exceeds --max-cost ${usd(options.max_cost)}; no batch was "
            "created (files are uploaded; re-run with a higher --max-cost to go ahead)"
        )
        info(f"error: {message}")
        result = summary(manifest, shards, created=0)
        result.update(ok=False, error={"type": "cost_limit", "message": message})
        result.update(estimated_cost_usd=usd(exc.total), max_cost_usd=usd(options.max_cost))
        return with_notes(result, notes), int(ExitCode.INVALID_INPUT)
    result = summary(manifest, shards, created=created)
    result["api_calls"] = client.calls
    return with_notes(result, notes), int(ExitCode.OK)


def existing_manifest(args: Any, inputs: list[Path], path: Path, notes: list[str]) -> Manifest | None:
    """The job already planned for these inputs, or None to plan afresh (refusing what would pay twice)."""
    if not Manifest.exists(path):
        return None
    if args.force:  # keep the old one beside the new
        backup = path.with_name(f"{path.name}.{uuid.uuid4().hex[:6]}.bak")
        os.replace(path, backup)
        info(f"--force: the previous manifest was moved to {backup.resolve()}")
        return None
    manifest = Manifest.load(path)
    if not same_inputs(manifest, inputs):
        if not nothing_sent(manifest):
            sent = sum(s.requests or 0 for s in manifest.shards if s.upload_state != "pending")
            raise InputError(
                f"manifest {manifest.path.resolve()} was made for other inputs (or they changed since) and "
                f"{sent} of its requests were sent (they run or ran as batches {', '.join(manifest.batch_ids()) or 'being created'}). "
                "To submit these inputs as a separate job, pass --manifest NEW_PATH; --force would move "
                f"this manifest aside and send every input again, paying again for those {sent} requests"
            )
        # An earlier attempt stopped before anything reached the server (e.g. a rejected
        # upload that the user has since fixed): plan afresh; nothing can be duplicated.
        info(f"{manifest.path.resolve()}: nothing was submitted from it; planning afresh for these inputs")
        os.unlink(manifest.path)
        return None
    if manifest.window != args.window:
        notes.append(
            f"the batches in {manifest.path.resolve()} use --window {manifest.window}; --window "
            f"{args.window} was ignored (the job exists; its requests are not sent twice)"
        )
        warn(notes[-1])
    return manifest


def with_notes(result: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    if notes:
        result["warnings"] = notes
    return result


if __name__ == "__main__":
    sys.exit(run(main))
