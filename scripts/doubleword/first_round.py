"""``submit.py FILE ...``: round 1 of a job. Plan it (validated inputs, shards, markers) or find it already
planned in its manifest, refusing what would pay twice, then send every shard not yet sent.
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from doubleword.batchfile import written_as_shards
from doubleword.cli import info, warn
from doubleword.cli import summary as say
from doubleword.client import client_from_args
from doubleword.errors import ExitCode, InputError, UsageError
from doubleword.manifest import Manifest, client_for
from doubleword.planning import (
    Options,
    changed_inputs,
    dry_run_plan,
    nothing_sent,
    plan_job,
    replan_inputs,
    unsent_input,
    validate_inputs,
    validation_warnings,
)
from doubleword.store import JOB_MARK, RETRY_NAME
from doubleword.submission import CostLimit, cost_refusal, send_shards, summary, usd, with_notes


def input_paths(names: list[str]) -> list[Path]:
    """The input files, each checked to be a file (a folder or a missing path is an input error)."""
    inputs = [Path(p) for p in names]
    seen: dict[tuple[int, int], Path] = {}
    for path in inputs:
        if path.is_dir():
            raise InputError(f"input {path} is a directory, not a batch file; give the .jsonl file(s) in it")
        if not path.is_file():
            raise InputError(f"input file {path} does not exist{written_as_shards(path)}")
        stat = path.stat()
        first = seen.setdefault((stat.st_dev, stat.st_ino), path)
        if first is not path:  # the same file twice (a glob and a name, ./x and x): every request paid twice
            raise UsageError(f"input {path} is given twice (also as {first}); give each batch file once")
    return inputs


def _is_fetch_retry_file(path: Path) -> bool:
    """The retry.jsonl of a results folder (fetch's requests without a usable answer)."""
    return path.name == RETRY_NAME and (path.parent / JOB_MARK).exists()


def _retry_file_note(path: Path) -> str:
    note = (
        f"retry_file: {path} is the retry.jsonl a fetch wrote; sent like this its requests are a new job of "
        "their own, and their answers do not join the first job's results.jsonl. To send them as that job's "
        "next round: submit.py --resubmit --manifest <the job's manifest>"
    )
    warn(note)
    return note


def submit(args: Any, options: Options, inputs: list[Path], path: Path) -> tuple[dict[str, Any], int]:
    """Round 1 of a job: plan it (or find it planned), then send every shard not yet sent."""
    notes: list[str] = []  # warnings, also returned in the JSON so an agent sees them
    manifest, changed = existing_manifest(args, options, inputs, path, notes)
    if manifest is None:
        notes += [_retry_file_note(p) for p in inputs if _is_fetch_retry_file(p)]
    reports: list[dict[str, Any]] = []
    if manifest is None or changed:  # what is planned now is validated first
        planned = inputs if manifest is None else [inputs[n] for n in changed]
        reports = validate_inputs(planned) if options.validate else []
        notes += validation_warnings(reports)
        if any(not r.get("valid") for r in reports):
            return invalid(reports)
    if manifest is None:
        if args.dry_run:
            plan = dry_run_plan(inputs, reports, options, path)
            say(
                f"dry run: {plan['batches_to_create']} batch(es) would be created, {plan['requests']:,} "
                f"requests, ~{plan['estimated_input_tokens']:,} input tokens; nothing sent"
            )
            return with_notes(plan, notes), int(ExitCode.OK)
        client = client_from_args(
            args
        )  # a missing key or an unsafe URL stops here, before any file is written
        manifest = plan_job(inputs, reports, options, path, client.base_url)
        if args.force:
            move_aside(path)
        manifest.save()
    elif args.dry_run:
        result = dry_run_of_planned(manifest, [inputs[n] for n in changed], reports, options)
        notes += [
            f"{inputs[n]} changed since it was planned; never sent, so a run sends it as it is"
            for n in changed
        ]
        return with_notes(result, notes), int(ExitCode.OK)
    else:
        client = client_for(args, manifest)
        if changed:
            replan_inputs(manifest, inputs, changed, reports, options)
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
        return with_notes(cost_refusal(manifest, shards, options, exc), notes), int(ExitCode.INVALID_INPUT)
    result = summary(manifest, shards, created=created)
    estimates = [s.cost_estimate for s in shards if options.max_cost is not None]
    usds = [e["usd"] for e in estimates if isinstance(e, dict) and "usd" in e]
    if usds and len(usds) == len(shards):  # what --max-cost allowed
        result["estimated_cost_usd"] = usd(sum((Decimal(u) for u in usds), Decimal(0)))
    result["api_calls"] = client.calls
    return with_notes(result, notes), int(ExitCode.OK)


def dry_run_of_planned(
    manifest: Manifest, afresh: list[Path], reports: list[dict[str, Any]], options: Options
) -> dict[str, Any]:
    """A dry run of a job already planned: its round-1 batches as they stand, with each changed input
    (none of it sent) in its place as a run plans it afresh (its shards and requests; nothing written)."""
    shards = manifest.first_round.shards
    result = summary(manifest, shards, created=0)
    fresh = dry_run_plan(afresh, reports, options, manifest.path)["shards"] if afresh else []
    replanned, placed = {str(p.resolve()) for p in afresh}, set()
    batches: list[dict[str, Any]] = []
    for shard, entry in zip(shards, result["batches"], strict=True):
        if shard.source not in replanned:
            batches.append(entry)
        if shard.source not in replanned or shard.source in placed:
            continue  # an old shard of a replanned input: its new ones are in place already
        placed.add(shard.source)
        mine = [p for p in fresh if p["source"] == shard.source]
        batches += [
            {
                "batch_id": None,
                "input_file_id": None,
                "shard": p["source"] if len(mine) == 1 else None,  # split: its files are written by the run
                "round": 1,
                "requests": p["requests"],
                "endpoint": p["endpoint"],
                "status": "not created",
            }
            for p in mine
        ]
    result["batches"], result["dry_run"] = batches, True
    result["batches_to_create"] = sum(1 for b in batches if not b["batch_id"])
    requests = sum(b["requests"] or 0 for b in batches)
    say(
        f"dry run: {result['batches_to_create']} batch(es) would be created, "
        f"{len(batches) - result['batches_to_create']} already there, {requests:,} requests; nothing sent"
    )
    return result


def invalid(reports: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The JSON of a submit stopped by local validation: nothing was uploaded."""
    from doubleword.validation import invalid_summary

    message = f"{invalid_summary(reports)}; nothing was uploaded"
    info(f"error: {message} (details in the 'validation' member of stdout)")
    error = {"type": "invalid_input", "message": message}
    return {"ok": False, "error": error, "validation": reports}, int(ExitCode.INVALID_INPUT)


def existing_manifest(
    args: Any, options: Options, inputs: list[Path], path: Path, notes: list[str]
) -> tuple[Manifest | None, list[int]]:
    """The job already planned for these inputs (None to plan afresh), and the positions of inputs changed
    since, none of which was sent (a refused file, fixed): those are planned again. Refuses what would pay
    twice: other inputs, or a changed input the job sent."""
    if not Manifest.exists(path):
        return None, []
    if args.force:  # moved aside only once the new job is written (move_aside): not by a dry run or a failure
        if args.dry_run:
            notes.append(
                f"--force: {path.resolve()} would be moved aside (kept as a .bak) and every input sent "
                "again as a new job"
            )
            warn(notes[-1])
        return None, []
    manifest = Manifest.load(path)
    changed = changed_inputs(manifest, inputs)
    if changed != [] and nothing_sent(manifest):
        # An earlier attempt stopped before anything reached the server (e.g. a rejected
        # upload that the user has since fixed): plan afresh; nothing can be duplicated.
        info(f"{manifest.path.resolve()}: nothing was submitted from it; planning afresh for these inputs")
        os.unlink(manifest.path)
        return None, []
    if changed is None:
        raise InputError(f"manifest {manifest.path.resolve()} was made for other inputs; {_sent(manifest)}")
    sent = [inputs[n] for n in changed if not unsent_input(manifest, n)]
    if sent:
        raise InputError(
            f"{', '.join(map(str, sent))} changed since this job sent it (manifest {manifest.path.resolve()}): "
            "restore its content and run the same command again (a shard file the server refused, named in "
            f"error.shard, may be fixed in place). {_sent(manifest)}"
        )
    if options.window is not None and manifest.window != options.window:
        notes.append(
            f"the batches in {manifest.path.resolve()} use --window {manifest.window}; --window "
            f"{options.window} was ignored (the job exists; its requests are not sent twice)"
        )
        warn(notes[-1])
    return manifest, changed


def move_aside(path: Path) -> None:
    """--force: keep the previous job's manifest beside the new one (its batches stay on the server)."""
    if Manifest.exists(path):
        backup = path.with_name(f"{path.name}.{uuid.uuid4().hex[:6]}.bak")
        os.replace(path, backup)
        info(f"--force: the previous manifest was moved to {backup.resolve()}")


def _sent(manifest: Manifest) -> str:
    """What the job already sent, and the ways to submit other inputs without paying for it twice."""
    sent = sum(s.requests or 0 for s in manifest.shards if not s.never_sent)
    batches = ", ".join(manifest.batch_ids()) or "being created"
    return (
        f"{sent} of its requests were sent (they run or ran as batches {batches}). To submit these inputs "
        "as a separate job, pass --manifest NEW_PATH; --force would move this manifest aside and send every "
        f"input again, paying again for those {sent} requests"
    )
