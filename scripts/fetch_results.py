#!/usr/bin/env python3
"""Download batch results and errors resumably, then write results.jsonl, retry.jsonl and an export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doubleword import headstart
from doubleword.cli import make_parser, one_heap, run, seconds, summary
from doubleword.errors import ExitCode, InputError, UsageError
from doubleword.manifest import (
    Manifest,
    add_target_args,
    client_for,
    fetch_state,
    job_base_url,
    load_targets,
    new_shard,
    record_batch,
)

if TYPE_CHECKING:  # the client, the engine and requests load once the first request is out (headstart)
    from doubleword.client import ApiClient

EXAMPLES = """\
  python3 scripts/fetch_results.py --manifest jobs.jsonl.manifest.json
  python3 scripts/fetch_results.py --manifest jobs.jsonl.manifest.json --export answers.csv
  python3 scripts/fetch_results.py --manifest jobs.jsonl.manifest.json --follow --timeout 7200
  python3 scripts/fetch_results.py 0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90 --out results/"""

DESCRIPTION = """\
Download the output and error files of every round of a job into --out DIR (default beside the manifest),
resuming where the last run stopped, even while the batches run (partial results). Writes output.jsonl and
errors.jsonl (raw lines as served, de-duplicated by line id), results.jsonl (one line per input request of
the first round, in input order, with the best answer across rounds: custom_id, status
completed|failed|truncated|invalid|pending|missing, content, parsed, reasoning, tool_calls, finish_reason,
embedding, usage, error, attempts, batch_id, line_id, model) and retry.jsonl (the original request lines
without a usable answer). Only "completed" is a usable answer. --export PATH.csv|PATH.jsonl writes one row
per input beside your own columns. stdout's "next" is the command to run next (this check while
batches run; the resubmit, with its options, when finished but incomplete). --follow keeps downloading until every batch is terminal (bounded by
--timeout). One fetch runs per output directory at a time: a second one exits 7 at once. With the optional
orjson package installed the per-line decoding uses it (DOUBLEWORD_PURE_JSON=1: the standard library only)."""

STATE_NAME = "fetch.manifest.json"
EXIT_CODES = (
    (ExitCode.OK, "done: every input request has a usable answer on disk"),
    ExitCode.AUTH,
    ExitCode.INVALID_INPUT,
    ExitCode.SERVICE,
    (ExitCode.BATCH_UNSUCCESSFUL, "finished, but not every input has a usable answer: submit.py --resubmit"),
    (ExitCode.NOT_FINISHED, "a batch is still running (partial results written), or another fetch runs here"),
)


def build_parser() -> Any:
    parser = make_parser("fetch_results.py", DESCRIPTION, EXAMPLES, exit_codes=tuple(ExitCode))
    add_target_args(parser)
    parser.add_argument("--out", metavar="PATH", help="output directory (default: beside the manifest)")
    parser.add_argument(
        "--export",
        metavar="PATH",
        help="also write PATH.csv or PATH.jsonl: one row per input, in input order: your own columns, "
        "custom_id, status, the answer (content, or one column per JSON property) and error",
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep downloading until every batch is terminal"
    )
    parser.add_argument(
        "--delete-remote",
        action="store_true",
        help="once every result is on disk and no batch runs, delete the job's input, output and error files "
        "on the server (refused, with the reason, before that)",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=3600.0, help="with --follow: give up after SECONDS (default 3600)"
    )
    parser.add_argument(
        "--interval", type=seconds, default=10.0, help="with --follow: seconds between checks (default 10)"
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=0,
        metavar="N",
        help="download in pages of N lines (1-100); default 0 = one streamed request per file per check",
    )
    return parser


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    one_heap()  # before any thread starts
    args = build_parser().parse_args(argv)
    if not 0 <= args.page_size <= 100:
        raise UsageError("--page-size must be between 1 and 100 (or 0 for streamed downloads)")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    export = None
    if args.export:
        from doubleword.export import check_path  # only --export pays for csv and the export code

        export = check_path(args.export)
    manifest, ids = load_targets(args)
    out_dir = None  # for bare batch ids: known once their manifest is made (which needs the client)
    head = None
    if manifest is not None:
        out_dir = Path(args.out) if args.out else default_out_dir(manifest)
        if not args.page_size:
            head = headstart.begin(job_base_url(args, manifest), manifest.shards, fresh=not out_dir.exists())
    try:
        return _fetch(args, manifest, ids, out_dir, export, head)
    finally:
        if head is not None:
            head.close()


def _fetch(
    args: Any,
    manifest: Manifest | None,
    ids: list[str],
    out_dir: Path | None,
    export: Any,
    head: headstart.HeadStart | None,
) -> tuple[dict[str, Any], int]:
    from doubleword.download import Options, fetch_job

    client = client_for(args, manifest)
    client.head_start = head
    if manifest is None or out_dir is None:
        manifest, out_dir = manifest_for_ids(client, ids, args.out)
    if export is not None:
        from doubleword.export import check_target

        check_target(export, manifest, out_dir)  # never over the job's own files
    options = Options(
        follow=args.follow,
        timeout=args.timeout,
        interval=args.interval,
        page_size=args.page_size,
        by_content=args.manifest is None,
        export=export,
        delete_remote=args.delete_remote,
    )
    result, code = fetch_job(client, manifest, out_dir, options)
    summary(_summary_text(result))
    return result, code


def _summary_text(result: dict[str, Any]) -> str:
    counts = result["counts"]
    parts = [
        f"{counts[s]:,} {s}"
        for s in ("completed", "failed", "truncated", "invalid", "pending", "missing")
        if counts[s]
    ]
    state = (
        "complete"
        if result["complete"]
        else "finished, not complete"
        if result["finished"]
        else "still running"
    )
    text = f"{counts['requests']:,} requests: {', '.join(parts) or 'none'}; {state}; results in {result['files']['results']}"
    if result.get("next"):
        return f"{text}; next: {result['next']}"
    if result["finished"] and not result["complete"] and result["failure_groups"]:
        return f"{text}; no failure is worth resending as it is: fix those requests as each failure group's advice says (retry.jsonl holds them)"
    return text


def default_out_dir(manifest: Manifest) -> Path:
    """Where results go without --out: where they went last time, else ``<name>.results`` beside it."""
    recorded = fetch_state(manifest).get("out_dir")
    if recorded:
        return Path(recorded)
    from doubleword.rounds import job_name

    return manifest.path.resolve().parent / f"{job_name(manifest)}.results"


def manifest_for_ids(client: ApiClient, ids: list[str], out: str | None) -> tuple[Manifest, Path]:
    """For bare batch ids: a small manifest inside the output directory holds the cursors."""
    from doubleword.api import get_batch

    out_dir = Path(out) if out else Path(f"results-{ids[0]}")
    path = out_dir / STATE_NAME
    if Manifest.exists(path):
        manifest = Manifest.load(path)
        if manifest.batch_ids() != ids:
            raise InputError(
                f"{out_dir} holds results of other batches ({', '.join(manifest.batch_ids())}); "
                "choose another --out"
            )
        return manifest, out_dir
    manifest = Manifest.new(path)
    for batch_id in ids:
        batch = get_batch(client, batch_id)
        shard = new_shard(
            len(manifest.shards),
            batch_id=batch_id,
            upload_state="done",
            create_state="done",
            file_id=batch.get("input_file_id") or "",
        )
        record_batch(shard, batch)
        manifest.add_shard(shard)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.save()
    return manifest, out_dir


if __name__ == "__main__":
    sys.exit(run(main))
