#!/usr/bin/env python3
"""Upload batch files and create one batch per shard, exactly once, recording the job in a manifest;
``--resubmit`` sends, as the job's next round, every input that has no usable answer yet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from doubleword.cli import add_shard_args, make_parser, run
from doubleword.config import COMPLETION_WINDOWS
from doubleword.errors import ExitCode, UsageError
from doubleword.first_round import input_paths, submit
from doubleword.manifest import default_manifest_path
from doubleword.planning import DEFAULT_UPLOADS, DEFAULT_WINDOW, options_from_args
from doubleword.resubmit import RESUBMITTABLE, Adjustments, resubmit
from doubleword.submission import submit_lock

EXAMPLES = """\
  python3 scripts/submit.py jobs.jsonl
  python3 scripts/submit.py jobs.jsonl --window 1h --metadata project=survey --max-cost 5
  python3 scripts/submit.py --resubmit --manifest jobs.jsonl.manifest.json
  python3 scripts/submit.py --resubmit --manifest jobs.jsonl.manifest.json --only truncated --max-tokens 2048"""

DESCRIPTION = """\
Validate, upload and start batches. Each input (sharded when it exceeds the per-file limits) becomes
one uploaded file and one batch; the job is recorded in a manifest (default <first input>.manifest.json,
with the server's base URL) so that running the same command again reports the existing batches instead
of creating new ones (and sends an input the server refused, fixed since: none of it was sent; a changed
input the job sent is refused). --resubmit --manifest PATH sends, as the next round of the same job, every input
that has no usable answer yet (failed, missing, truncated, invalid): it downloads what it needs, refuses
(exit 7, nothing sent) while any batch of the job runs, and never resends an answered request. Each
request goes as it was last sent: an earlier round's --max-tokens, --set or --system carry over.
Prints the manifest path (absolute) and each batch's id, input file id, shard, round, requests, status."""


def build_parser() -> Any:
    codes = (
        ExitCode.OK,
        ExitCode.AUTH,
        ExitCode.INVALID_INPUT,
        ExitCode.SERVICE,
        (
            ExitCode.BATCH_UNSUCCESSFUL,
            "--resubmit: inputs lack an answer but none matches --only/--skip-persistent/--skip-refused",
        ),
        (ExitCode.NOT_FINISHED, "--resubmit: a batch of the job is still running; nothing was sent"),
    )
    parser = make_parser("submit.py", DESCRIPTION, EXAMPLES, exit_codes=codes)
    parser.add_argument("inputs", nargs="*", metavar="FILE", help="batch JSONL file(s) to submit")
    parser.add_argument("--manifest", help="manifest path (default: <first input>.manifest.json)")
    parser.add_argument(
        "--window",
        choices=COMPLETION_WINDOWS,
        help=f"completion window (default {DEFAULT_WINDOW}; with --resubmit: the new round's, default the job's)",
    )
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="batch metadata (repeatable)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (shards, requests, a local input-token estimate; no price); send nothing",
    )
    parser.add_argument(
        "--max-cost",
        metavar="USD",
        help="upload, ask the server's cost estimate and create nothing if the total exceeds USD (exit 4, "
        "showing the local input-token count beside the server's: the server counts 4 body bytes as a "
        "token, so base64 images make its estimate far too high)",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip local validation")
    parser.add_argument(
        "--force",
        action="store_true",
        help="move an existing manifest aside and submit every input again as a new job (pays again "
        "for every request the old job sent)",
    )
    add_shard_args(parser, "per shard")
    parser.add_argument(
        "--uploads",
        type=int,
        default=DEFAULT_UPLOADS,
        metavar="N",
        help=f"upload up to N shards at once (default {DEFAULT_UPLOADS}); each batch starts as soon as its file is up",
    )
    add_resubmit_args(parser)
    return parser


def add_resubmit_args(parser: Any) -> None:
    group = parser.add_argument_group("resubmission (with --resubmit --manifest PATH)")
    group.add_argument("--resubmit", action="store_true", help="send the inputs without a usable answer")
    group.add_argument(
        "--only",
        metavar="STATUS[,STATUS]",
        help=f"resubmit only inputs with these result statuses (default: {','.join(RESUBMITTABLE)})",
    )
    group.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="set each resent request's output-token limit to N (max_tokens, max_completion_tokens or "
        "max_output_tokens, the one the endpoint uses)",
    )
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="set a body field of each resent request (repeatable)",
    )
    group.add_argument(
        "--system",
        metavar="TEXT",
        help="add TEXT to each resent request's system prompt (after its own, or as one), e.g. for answers "
        'that broke the JSON format twice: --only invalid --system "Reply with the JSON object only."',
    )
    group.add_argument(
        "--skip-persistent",
        action="store_true",
        help="leave out inputs that failed the same way in the last two rounds (likely to fail again)",
    )
    group.add_argument(
        "--skip-refused",
        action="store_true",
        help="leave out inputs the server refused (HTTP 4xx other than 408 and 429: the request itself is at "
        "fault, and sent again unchanged it is refused again); fetch's next round adds it when there are some",
    )


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    if args.manifest and Path(args.manifest).is_dir():
        raise UsageError(f"--manifest {args.manifest} is a folder; give the manifest's file path in it")
    options = options_from_args(args)
    if args.resubmit:
        if not args.manifest or args.inputs or args.force:
            raise UsageError("--resubmit takes --manifest PATH and no input files (nor --force)")
        adjust = Adjustments.parse(
            args.only,
            args.max_tokens,
            args.set,
            skip_persistent=args.skip_persistent,
            system=args.system,
            skip_refused=args.skip_refused,
        )
        with submit_lock(Path(args.manifest)):
            return resubmit(args, options, adjust)
    given = (args.only, args.set, args.skip_persistent, args.skip_refused, args.max_tokens is not None)
    if any(given) or args.system is not None:
        raise UsageError(
            "--only, --max-tokens, --set, --system, --skip-persistent and --skip-refused go with --resubmit"
        )
    if not args.inputs:
        raise UsageError("give the batch file(s) to submit, or --resubmit --manifest PATH")
    inputs = input_paths(args.inputs)
    manifest_path = Path(args.manifest) if args.manifest else default_manifest_path(inputs[0])
    with submit_lock(manifest_path):
        return submit(args, options, inputs, manifest_path)


if __name__ == "__main__":
    sys.exit(run(main))
