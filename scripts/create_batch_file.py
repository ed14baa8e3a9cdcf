#!/usr/bin/env python3
"""Build a Doubleword batch input file (JSONL) from prompts, a prompts file, CSV or JSONL rows."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

from doubleword.build import ENDPOINTS, endpoint_url, make_request, write_batch
from doubleword.cli import make_parser, run, warn
from doubleword.config import MAX_CUSTOM_ID_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.errors import ExitCode, InputError, UsageError
from doubleword.validation import custom_id_problems, inspect_line

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
is used as the messages/inputs) or --template "... {column} ..." ({{ and }} for literal braces).

stdout: {"ok", "output", "endpoint", "url", "model", "requests", "shards": [{"path","requests","bytes"}],
"warnings" (only when there are some, e.g. a --set name that looks like a typo)}."""

EXAMPLES = """\
  python3 scripts/create_batch_file.py --model Qwen/Qwen3.5-9B --prompt "Say hi" --prompt "Say bye" -o batch.jsonl
  python3 scripts/create_batch_file.py --model Qwen/Qwen3.5-9B --csv reviews.csv --id-field id \\
      --template "Classify the sentiment of: {text}" --json-schema sentiment.json --max-tokens 50 -o batch.jsonl
  python3 scripts/create_batch_file.py --model Qwen/Qwen3-Embedding-8B --endpoint embeddings --prompts docs.txt -o emb.jsonl"""

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = _parse(argv)
    endpoint = args.endpoint
    url = endpoint_url(endpoint)
    options = _body_options(args)
    # Fail on option combinations (e.g. --system with embeddings) before reading any input; the
    # probe also shows warnings every request would share (a near-miss name given with --set).
    probe = make_request("probe", model=args.model, endpoint=endpoint, custom_id="probe", **options)
    notes = [f"{code}: {message}" for code, message in inspect_line(probe)[1]]
    for note in notes:
        warn(note)
    requests = _requests(args, options)
    shards = write_batch(requests, args.output, max_requests=args.max_requests, max_bytes=args.max_bytes)
    total = sum(shard["requests"] for shard in shards)
    if len(shards) > 1:
        sys.stderr.write(
            f"wrote {total} requests in {len(shards)} shards (limits: --max-requests/--max-bytes)\n"
        )
    result = {
        "ok": True,
        "output": args.output,
        "endpoint": endpoint,
        "url": url,
        "model": args.model,
        "requests": total,
        "shards": shards,
    }
    if notes:
        result["warnings"] = notes
    return result, int(ExitCode.OK)


def _parse(argv: list[str]) -> Any:
    parser = make_parser(
        "create_batch_file.py",
        DESCRIPTION,
        EXAMPLES,
        network=False,
        exit_codes=(ExitCode.OK, ExitCode.INVALID_INPUT),
    )
    source = parser.add_argument_group("sources (use one kind)")
    source.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    source.add_argument("--prompts", metavar="FILE", help="a file with one prompt per line (- for stdin)")
    source.add_argument("--csv", metavar="FILE", help="a CSV file with a header row (- for stdin)")
    source.add_argument("--jsonl", metavar="FILE", help="a JSONL file of objects (- for stdin)")
    source.add_argument("--field", metavar="NAME", help="the CSV/JSONL column holding the prompt")
    source.add_argument("--template", metavar="TEXT", help='prompt template over columns: "... {column} ..."')
    ids = parser.add_argument_group("custom_id")
    ids.add_argument("--id-field", metavar="NAME", help="take custom_id from this CSV/JSONL column")
    ids.add_argument("--id-prefix", default="req", metavar="P", help="prefix of generated ids (default: req)")
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
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="the batch file to write")
    out.add_argument(
        "--max-requests",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        metavar="N",
        help=f"requests per file before sharding (default {MAX_REQUESTS_PER_FILE})",
    )
    out.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_FILE_BYTES,
        metavar="N",
        help=f"bytes per file before sharding (default {MAX_FILE_BYTES})",
    )
    args = parser.parse_args(argv)
    kinds = [name for name in ("prompt", "prompts", "csv", "jsonl") if getattr(args, name)]
    if len(kinds) != 1:
        raise UsageError("give exactly one source kind: --prompt, --prompts, --csv or --jsonl")
    tabular = kinds[0] in ("csv", "jsonl")
    if tabular and bool(args.field) == bool(args.template):
        raise UsageError(f"--{kinds[0]} needs exactly one of --field NAME or --template TEXT")
    if not tabular and (args.field or args.template or args.id_field):
        raise UsageError("--field, --template and --id-field apply only to --csv and --jsonl")
    if args.max_requests < 1 or args.max_bytes < 1024:
        raise UsageError("--max-requests must be >= 1 and --max-bytes >= 1024")
    if len(args.id_prefix.encode("utf-8")) > MAX_CUSTOM_ID_BYTES - 6 or custom_id_problems(args.id_prefix):
        raise UsageError("--id-prefix must be short (at most 58 bytes) and free of control characters")
    return args


def _body_options(args: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=JSON, e.g. --set seed=42")
        try:
            extra[key.strip()] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--set {key}: the value {raw!r} is not JSON ({exc.msg}); strings need JSON quotes, "
                f"e.g. --set '{key}=\"text\"'"
            )
    schema = None
    if args.json_schema:
        try:
            with open(args.json_schema, encoding="utf-8") as handle:
                schema = json.load(handle)
        except OSError as exc:
            raise InputError(f"--json-schema {args.json_schema}: cannot read it ({exc.strerror})")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"--json-schema {args.json_schema}: not valid JSON ({exc})")
        if not isinstance(schema, dict):
            raise InputError(f"--json-schema {args.json_schema}: must hold a JSON object (a JSON Schema)")
    if args.stop is not None and len(args.stop) > 4:
        raise UsageError("--stop can be given at most 4 times")
    return {
        "system": args.system,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "top_p": args.top_p,
        "stop": args.stop,
        "json_schema": schema,
        "extra": extra or None,
    }


# --------------------------------------------------------------------------- sources


def _open_text(path: str, flag: str, newline: str | None = None) -> Any:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline=newline)
    try:
        return open(path, encoding="utf-8-sig", newline=newline)  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot open it ({exc.strerror})")


def _rows(args: Any) -> Iterator[tuple[str, Any, dict[str, Any] | None]]:
    """(row description, prompt or messages, the row's columns or None) in input order."""
    if args.prompt:
        for number, prompt in enumerate(args.prompt, 1):
            yield f"--prompt number {number}", prompt, None
        return
    if args.prompts:
        with _open_text(args.prompts, "--prompts", newline="\n") as handle:
            for lineno, line in enumerate(_lines(handle, "--prompts", args.prompts), 1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield f"line {lineno} of {args.prompts}", text, None
        return
    if args.csv:
        with _open_text(args.csv, "--csv", newline="") as handle:
            reader = csv.DictReader(handle)
            try:
                for number, row in enumerate(reader, 1):
                    where = f"row {number} (line {reader.line_num}) of {args.csv}"
                    if None in row:
                        raise InputError(f"{where} has more values than the header has columns")
                    yield where, _prompt_from(row, args, where), row
            except csv.Error as exc:
                raise InputError(f"{args.csv}: not readable as CSV near line {reader.line_num}: {exc}")
            except UnicodeDecodeError:
                raise InputError(f"{args.csv} is not valid UTF-8; re-save it as UTF-8")
        return
    with _open_text(args.jsonl, "--jsonl", newline="\n") as handle:
        for lineno, line in enumerate(_lines(handle, "--jsonl", args.jsonl), 1):
            if not line.strip():
                continue
            where = f"line {lineno} of {args.jsonl}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{where} is not valid JSON ({exc})")
            if not isinstance(row, dict):
                raise InputError(f"{where} is not a JSON object")
            yield where, _prompt_from(row, args, where), row


def _lines(handle: Any, flag: str, path: str) -> Iterator[str]:
    try:
        yield from handle
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path} is not valid UTF-8; re-save it as UTF-8")


def _prompt_from(row: dict[str, Any], args: Any, where: str) -> Any:
    if args.field:
        if args.field not in row:
            raise InputError(
                f"{where}: column {args.field!r} is missing; columns are: {', '.join(map(str, row))}"
            )
        value = row[args.field]
        if isinstance(value, list) and value:
            return value
        if value is None or isinstance(value, (dict, list)):
            raise InputError(f"{where}: column {args.field!r} is {json.dumps(value)}, not a prompt")
        return value if isinstance(value, str) else json.dumps(value)

    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in row:
            raise InputError(
                f"{where}: the template uses {{{name}}} but the row has no column {name!r}; "
                f"columns are: {', '.join(map(str, row))}"
            )
        value = row[name]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _PLACEHOLDER.sub(fill, args.template)


def _requests(args: Any, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    seen: dict[str, str] = {}
    for number, (where, prompt, row) in enumerate(_rows(args), 1):
        if args.id_field:
            assert row is not None
            if args.id_field not in row or row[args.id_field] in (None, ""):
                raise InputError(f"{where}: the id column {args.id_field!r} is missing or empty")
            value = row[args.id_field]
            custom_id = value if isinstance(value, str) else json.dumps(value)
        else:
            custom_id = f"{args.id_prefix}-{number:05d}"
        problems = custom_id_problems(custom_id)
        if problems:
            raise InputError(f"{where}: custom_id {custom_id!r}: {problems[0][1]}")
        if custom_id in seen:
            raise InputError(
                f"{where}: custom_id {custom_id!r} is already used by {seen[custom_id]}; ids must be unique"
            )
        seen[custom_id] = where
        if isinstance(prompt, str) and not prompt.strip() and args.endpoint != "embeddings":
            sys.stderr.write(f"warning: {where}: the prompt is empty\n")
        yield make_request(prompt, model=args.model, endpoint=args.endpoint, custom_id=custom_id, **options)


if __name__ == "__main__":
    sys.exit(run(main))
