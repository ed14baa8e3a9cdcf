#!/usr/bin/env python3
"""Check batch input files locally, before spending anything: every problem at once, with line numbers."""

from __future__ import annotations

import sys
from typing import Any

from doubleword.cli import make_parser, run, summary
from doubleword.errors import ExitCode, UsageError
from doubleword.fingerprint import validate_file
from doubleword.validation import invalid_summary, validate_batch_file

DESCRIPTION = """\
Validate Doubleword batch input files (JSONL) against references/schemas/ and the file rules: valid UTF-8,
one JSON object per line, custom_id present, unique, at most 64 bytes and free of control characters,
method POST, url a batchable endpoint and the same on every line, body.model a string, the body valid for
its endpoint (roles, content shapes, parameter ranges), each line at most 10 MB, image parts well formed
(an http(s) URL or data:image/<type>;base64 with valid base64), the server's reasoning rules (only
reasoning_effort on chat and reasoning.effort on responses, one of none, minimal, low, medium, high, xhigh,
max; chat_template_kwargs, thinking and thinking_token_budget refused), at most 200 MB and 50,000 requests,
not empty.
Warnings (not errors): blank lines, stream: true, priority, near-miss field names (max_token).

stdout: {"ok": bool, "files": [report, ...]}; each report has errors and warnings (physical line number,
custom_id, a stable code, a message that says how to fix it), bounded by --max-errors with the count of
the rest, and stats (requests, bytes, endpoint, models, estimated_input_tokens: prompt characters / 4
plus each image's tokens from its pixel size, one per 32x32 pixels, 256 for an image URL). Line 0 means
the whole file (file_not_found, empty_file). A summary goes to stderr."""

EXAMPLES = """\
  python3 scripts/validate_batch_file.py batch.jsonl
  python3 scripts/validate_batch_file.py shards/*.jsonl --max-errors 50
  some_generator | python3 scripts/validate_batch_file.py -"""


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    parser = make_parser(
        "validate_batch_file.py",
        DESCRIPTION,
        EXAMPLES,
        network=False,
        exit_codes=(
            ExitCode.OK,
            (ExitCode.INVALID_INPUT, "invalid input: a file has problems (files[].errors) or cannot be read"),
        ),
        resumes=False,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="batch files to check; - reads stdin")
    parser.add_argument(
        "--max-errors",
        type=int,
        default=20,
        metavar="N",
        help="list at most N errors and N warnings per file (the rest are counted; default 20)",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr (stdout is unchanged)")
    args = parser.parse_args(argv)
    if args.max_errors < 0:
        raise UsageError("--max-errors must be 0 or more")
    if args.files.count("-") > 1:
        raise UsageError("stdin (-) can be given only once")
    # A file is hashed as it is validated (one read): submit.py then skips validating this content again.
    reports = [
        (validate_batch_file if path == "-" else validate_file)(path, max_errors=args.max_errors)
        for path in args.files
    ]
    ok = all(report["valid"] for report in reports)
    if not args.quiet:
        for report in reports:
            _summarise(report)
    result: dict[str, Any] = {"ok": ok, "files": reports}
    summary(f"{len(reports)} file(s) checked, {sum(not r['valid'] for r in reports)} invalid")
    if not ok:
        result["error"] = {"type": "invalid_input", "message": invalid_summary(reports)}
    return result, int(ExitCode.OK if ok else ExitCode.INVALID_INPUT)


def _summarise(report: dict[str, Any]) -> None:
    name = report["file"] if report["file"] != "-" else "<stdin>"
    stats = report["stats"]
    for kind, items in (("error", report["errors"]), ("warning", report["warnings"])):
        for item in items:
            where = f"line {item['line']}" if item["line"] else "file"
            if item["custom_id"] is not None:
                where += f" (custom_id {item['custom_id']!r})"
            _err(f"{name}: {where}: {kind}: {item['code']}: {item['message']}")
    if report["errors_omitted"] or report["warnings_omitted"]:
        _err(
            f"{name}: {report['errors_omitted']} more errors and {report['warnings_omitted']} more warnings "
            "not listed (raise --max-errors to see them)"
        )
    verdict = "valid" if report["valid"] else f"INVALID ({_count(report['errors_total'], 'error')})"
    endpoint = f", endpoint {stats['endpoint']}" if stats["endpoint"] else ""
    warnings = f", {_count(report['warnings_total'], 'warning')}" if report["warnings_total"] else ""
    _err(
        f"{name}: {verdict}; {_count(stats['requests'], 'request')}, {stats['bytes']:,} bytes{endpoint}, "
        f"~{stats['estimated_input_tokens']:,} input tokens{warnings}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _err(text: str) -> None:
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace") + "\n")


if __name__ == "__main__":
    sys.exit(run(main))
