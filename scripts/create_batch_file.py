#!/usr/bin/env python3
"""Build a Doubleword batch input file (JSONL) from prompts, a prompts file, CSV or JSONL rows."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from doubleword.batchfile import check_output_path
from doubleword.build import DUPLICATES, ENDPOINTS, endpoint_url, make_request, set_overrides
from doubleword.cli import add_shard_args, info, make_parser, run, summary, warn
from doubleword.endpoints import REASONING_EFFORTS
from doubleword.errors import ExitCode, UsageError
from doubleword.images import IMAGE_SUFFIXES
from doubleword.sources import (
    absolute,
    build_batch,
    check_source_args,
    parse_set,
    read_json_schema,
    source_from_args,
)
from doubleword.validation import inspect_line

DESCRIPTION = """\
Build a batch input file for Doubleword's batch API: one request line per prompt, CSV row or JSONL row.
Every line written passes validate_batch_file.py. When the requests exceed --max-requests or --max-bytes,
numbered shards OUT-001.jsonl, OUT-002.jsonl, ... are written instead of OUT.jsonl (a line is never split).
Files are written atomically (nothing is left behind on error).

custom_id: --id-field NAME takes it from the data; otherwise PREFIX-00001, PREFIX-00002, ... in input order
(--id-prefix, default "req"; at least five digits). Ids must be unique and at most 64 bytes: a clash or an
over-long id is an error naming the row.

Sources (one kind): --prompt TEXT (repeatable); --prompts FILE (one prompt per line, blank lines skipped,
- for stdin); --csv FILE or --jsonl FILE with --field NAME (that column is the prompt; in JSONL a list value
is used as the messages/inputs) or --template "... {column} ..." ({{ and }} for literal braces); --images DIR
(one request per image file, ids = file names, with one --prompt). --image-field COL adds an image part after
the text (repeatable; a JSONL list gives several): a local path (relative to the data file's folder, or to the
working directory for stdin) becomes a data:<mime>;base64 URI, an http(s) URL is kept. A line over the
server's 10 MB limit, or a missing image, is an error naming the row. Duplicate ids are an error unless
--duplicates number (ID-2, ID-3, ...) or skip (exact repeats left out).
Empty prompts are reported in "warnings" and "empty_prompts" (--skip-empty leaves them out); --limit N
takes the first N rows (a trial run). --reasoning-effort LEVEL writes reasoning_effort (chat) or
reasoning.effort (responses), the only reasoning control the server accepts.
Beside every batch file X.jsonl, X.rows.jsonl records each line's custom_id and source row (the columns).

stdout (every path absolute): {"ok", "output" (the batch file; null when sharded), "outputs" (every batch
file written, in order: pass them all to submit.py), "endpoint", "url", "model", "requests", "shards":
[{"path","requests","bytes","rows_path"}], "empty_prompts": {"count", "first"} (when some), "skipped_empty"
(with --skip-empty), "skipped_duplicates" / "renamed_duplicates" (with --duplicates skip / number), "warnings"
(only when there are some, e.g. a --set name that looks like a typo, or empty prompts), "next" (the submit.py
command that sends every file written)}."""

EXAMPLES = """\
  python3 scripts/create_batch_file.py --model Qwen/Qwen3.5-9B --prompt "Say hi" --prompt "Say bye" -o batch.jsonl
  python3 scripts/create_batch_file.py --model Qwen/Qwen3.5-9B --csv reviews.csv --id-field id \\
      --template "Classify the sentiment of: {text}" --json-schema sentiment.json \\
      --reasoning-effort none --max-tokens 50 -o batch.jsonl
  python3 scripts/create_batch_file.py --model Qwen/Qwen3-Embedding-8B --endpoint embeddings --prompts docs.txt -o emb.jsonl
  python3 scripts/create_batch_file.py --model Qwen/Qwen3-VL-30B-A3B-Instruct-FP8 --images scans/ \\
      --prompt "Transcribe this page as Markdown." --max-tokens 2000 -o ocr.jsonl"""


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = _parse(argv)
    options = _body_options(args)
    # Fail on option combinations (e.g. --system with embeddings, images with completions) before reading any
    # input; the probe shows warnings every request would share (a near-miss --set name, a --set override).
    images = ["https://example.com/probe.png"] if args.images or args.image_field else None
    probe = make_request("probe", custom_id="probe", images=images, **options)
    notes = [f"{c}: {m}" for c, m in inspect_line(probe)[1]] + set_overrides(images, **options)
    report = build_batch(
        source_from_args(args),
        args.output,
        options,
        id_prefix=args.id_prefix,
        limit=args.limit,
        skip_empty=args.skip_empty,
        duplicates=args.duplicates,
        max_requests=args.max_requests,
        max_bytes=args.max_bytes,
    )
    shards = report.shards
    total = sum(shard["requests"] for shard in shards)
    if len(shards) > 1:
        info(f"wrote {total:,} requests in {len(shards)} shards (limits: --max-requests/--max-bytes)")
    written = [shard["path"] for shard in shards]
    result: dict[str, Any] = {
        "ok": True,
        "output": written[0] if len(written) == 1 else None,  # -o's file; sharded, it was not written
        "outputs": written,
        "endpoint": args.endpoint,
        "url": endpoint_url(args.endpoint),
        "model": args.model,
        "requests": total,
        "shards": shards,
    }
    fields, more = report.summary(skip_empty=args.skip_empty, duplicates=args.duplicates)
    result.update(fields)
    notes += more
    for note in notes:
        warn(note)
    if notes:
        result["warnings"] = notes
    # SKILL.md's step 3 (a file from here needs no separate validation); every shard goes in one submit
    result["next"] = shlex.join(["python3", str(Path(__file__).resolve().parent / "submit.py"), *written])
    summary(
        f"wrote {total:,} requests to {len(shards)} file(s) ({len(notes)} warnings); next: {result['next']}"
    )
    return result, int(ExitCode.OK)


def _parse(argv: list[str]) -> Any:
    parser = make_parser(
        "create_batch_file.py",
        DESCRIPTION,
        EXAMPLES,
        network=False,
        exit_codes=(
            ExitCode.OK,
            (
                ExitCode.INVALID_INPUT,
                "invalid input: a source row, an option's file or a request fails (the error names it)",
            ),
        ),
        resumes=False,
    )
    _source_flags(parser)
    _body_flags(parser)
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="the batch file to write")
    add_shard_args(out, "per file before sharding")
    args = parser.parse_args(argv)
    check_source_args(args)
    for name in ("output", "prompts", "csv", "jsonl", "images", "json_schema"):  # stdout and messages
        setattr(args, name, absolute(getattr(args, name)))
    reads = {f"--{k.replace('_', '-')}": getattr(args, k) for k in ("prompts", "csv", "jsonl", "json_schema")}
    check_output_path(args.output, reads)  # a file, and never the data it is made from
    return args


def _source_flags(parser: Any) -> None:
    source = parser.add_argument_group("sources (use one kind)")
    source.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    source.add_argument("--prompts", metavar="FILE", help="a file with one prompt per line (- for stdin)")
    source.add_argument("--csv", metavar="FILE", help="a CSV file with a header row (- for stdin)")
    source.add_argument("--jsonl", metavar="FILE", help="a JSONL file of objects (- for stdin)")
    source.add_argument(
        "--images",
        metavar="DIR",
        help=f"a folder of images ({' '.join(sorted(IMAGE_SUFFIXES))}; other files and subfolders are "
        "skipped): one request per image in name order (ids = file names), --prompt once",
    )
    source.add_argument("--field", metavar="NAME", help="the CSV/JSONL column holding the prompt")
    source.add_argument("--template", metavar="TEXT", help='prompt template over columns: "... {column} ..."')
    source.add_argument(
        "--image-field",
        action="append",
        metavar="COL",
        help="CSV/JSONL column with an image path (relative to the data file's folder) or http(s) URL "
        "(repeatable: one image part per column, blank cells skipped; a JSONL list gives several)",
    )
    source.add_argument("--limit", type=int, metavar="N", help="only the first N rows (a trial run)")
    source.add_argument("--skip-empty", action="store_true", help="leave out rows whose prompt is empty")
    ids = parser.add_argument_group("custom_id")
    ids.add_argument("--id-field", metavar="NAME", help="take custom_id from this CSV/JSONL column")
    ids.add_argument("--id-prefix", default="req", metavar="P", help="prefix of generated ids (default: req)")
    ids.add_argument(
        "--duplicates",
        choices=DUPLICATES,
        default="error",
        help="a repeated id: error (default), number (ID-2, ID-3, ...) or skip (exact repeats only)",
    )


def _body_flags(parser: Any) -> None:
    body = parser.add_argument_group("request body")
    body.add_argument("--model", required=True, help="model name, as listed by GET /models (required)")
    body.add_argument(
        "--endpoint",
        default="chat",
        choices=list(ENDPOINTS),
        help="chat (default: /v1/chat/completions), embeddings, responses, completions, messages",
    )
    body.add_argument("--system", metavar="TEXT", help="system prompt (instructions for responses)")
    body.add_argument("--temperature", type=float, metavar="T", help="sampling temperature, 0-2")
    body.add_argument("--max-tokens", type=int, metavar="N", help="output token limit (>= 1)")
    body.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling, 0-1")
    body.add_argument("--stop", action="append", metavar="TEXT", help="stop sequence (repeatable, up to 4)")
    body.add_argument(
        "--reasoning-effort",
        choices=REASONING_EFFORTS,
        metavar="LEVEL",
        help="reasoning_effort (chat) or reasoning.effort (responses): " + ", ".join(REASONING_EFFORTS),
    )
    body.add_argument(
        "--json-schema",
        metavar="FILE",
        help="structured output: a JSON Schema file (response_format json_schema)",
    )
    body.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other body field, value as JSON (repeatable), e.g. --set seed=42 --set 'user=\"me\"'",
    )


def _body_options(args: Any) -> dict[str, Any]:
    if args.stop is not None and len(args.stop) > 4:
        raise UsageError("--stop can be given at most 4 times")
    return {
        "model": args.model,
        "endpoint": args.endpoint,
        "reasoning_effort": args.reasoning_effort,
        "system": args.system,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "top_p": args.top_p,
        "stop": args.stop,
        "json_schema": read_json_schema(args.json_schema) if args.json_schema else None,
        "extra": parse_set(args.set) or None,
    }


if __name__ == "__main__":
    sys.exit(run(main))
