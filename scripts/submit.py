#!/usr/bin/env python3
"""Upload batch files and create one batch per shard, exactly once, recording all in a manifest."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from doubleword.api import (
    MARKER_KEY,
    cost_estimate,
    create_batch,
    decimal_cost,
    find_batch_by_marker,
    find_file_by_name,
    upload_file,
)
from doubleword.cli import info, make_parser, run, warn
from doubleword.client import AmbiguousRequest, ApiClient, ApiError, client_from_args
from doubleword.config import COMPLETION_WINDOWS, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.errors import ExitCode, InputError, ServiceError, UsageError
from doubleword.manifest import Manifest, Shard, default_manifest_path, new_shard, record_batch, sha256_file

EXAMPLES = """\
  python3 scripts/submit.py jobs.jsonl
  python3 scripts/submit.py jobs.jsonl --window 1h --metadata project=survey --max-cost 5
  python3 scripts/submit.py jobs.jsonl --dry-run"""

DESCRIPTION = """\
Validate, upload and start batches. Each input (sharded when it exceeds the per-file limits) becomes
one uploaded file and one batch; everything is recorded in a manifest (default <first input>.manifest.json)
so that running the same command again reports the existing batches instead of creating new ones.
Prints the manifest path and each batch's id, input file id, shard, request count and status."""

MAX_ATTEMPTS = 3


def build_parser() -> Any:
    parser = make_parser(
        "submit.py", DESCRIPTION, EXAMPLES, exit_codes=set(ExitCode) - {ExitCode.BATCH_UNSUCCESSFUL}
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="batch JSONL file(s) to submit")
    parser.add_argument("--manifest", help="manifest path (default: <first input>.manifest.json)")
    parser.add_argument(
        "--window", choices=COMPLETION_WINDOWS, default="24h", help="completion window (default 24h)"
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="batch metadata (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; no network")
    parser.add_argument(
        "--max-cost",
        metavar="USD",
        help="upload, ask the server's cost estimate and create nothing if the total exceeds USD",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip local validation")
    parser.add_argument("--force", action="store_true", help="submit again even if the manifest has batches")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        help=f"requests per shard (default {MAX_REQUESTS_PER_FILE})",
    )
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_FILE_BYTES, help=f"bytes per shard (default {MAX_FILE_BYTES})"
    )
    return parser


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    metadata = parse_metadata(args.metadata)
    max_cost = parse_cost(args.max_cost)
    if args.max_requests < 1 or args.max_bytes < 1024:
        raise UsageError("--max-requests must be >= 1 and --max-bytes >= 1024")
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if path.is_dir():
            raise InputError(f"input {path} is a directory, not a batch file; give the .jsonl file(s) in it")
        if not path.is_file():
            raise InputError(f"input file {path} does not exist")
    manifest_path = Path(args.manifest) if args.manifest else default_manifest_path(inputs[0])

    manifest: Manifest | None = None
    notes: list[str] = []  # warnings, also returned in the JSON so an agent sees them
    if Manifest.exists(manifest_path) and not args.force:
        manifest = Manifest.load(manifest_path)
        if not same_inputs(manifest, inputs):
            if not nothing_sent(manifest):
                raise InputError(
                    f"manifest {manifest.path} was made for other inputs (or they changed since) and "
                    "its batches were submitted; pass --force to submit these as new batches, or "
                    "--manifest NEW_PATH"
                )
            # An earlier attempt stopped before anything reached the server (e.g. a rejected
            # upload that the user has since fixed): plan afresh; nothing can be duplicated.
            info(f"{manifest.path}: nothing was submitted from it; planning afresh for these inputs")
            os.unlink(manifest.path)
            manifest = None
        elif manifest.window != args.window:
            notes.append(
                f"the batches in {manifest.path} use --window {manifest.window}; "
                f"--window {args.window} was ignored (--force submits new batches)"
            )
            warn(notes[-1])

    if manifest is None:
        reports = [] if args.no_validate else validate_inputs(inputs)
        notes += validation_warnings(reports)
        invalid = [r for r in reports if not r.get("valid")]
        if invalid:
            from doubleword.validation import invalid_summary

            message = f"{invalid_summary(reports)}; nothing was uploaded"
            result = {"ok": False, "error": {"type": "invalid_input", "message": message}}
            result["validation"] = reports
            info(f"error: {message} (details in the 'validation' member of stdout)")
            return result, int(ExitCode.INVALID_INPUT)
        if args.dry_run:
            plan = dry_run_plan(inputs, reports, args, manifest_path)
            if notes:
                plan["warnings"] = notes
            return plan, int(ExitCode.OK)
        client_from_args(args)  # a missing key or an unsafe URL stops here, before any file is written
        manifest = plan_manifest(inputs, reports, args, metadata, manifest_path)
        manifest.base_url = client_from_args(args).base_url
        manifest.save()
    elif args.dry_run:
        return existing_plan(manifest), int(ExitCode.OK)

    if all_created(manifest):
        info(
            f"all {len(manifest.shards)} batch(es) already exist (see {manifest.path}); use --force to resubmit"
        )
        return summary(manifest, created=0, notes=notes), int(ExitCode.OK)

    client = client_from_args(args)
    for shard in manifest.shards:  # every shard still to upload is there and unchanged, before any upload
        if shard["upload_state"] == "pending":
            check_shard_file(manifest, shard)
    for shard in manifest.shards:
        ensure_uploaded(client, manifest, shard)

    if max_cost is not None and not any(s["create_state"] != "pending" for s in manifest.shards):
        total = estimate_cost(client, manifest)
        if total > max_cost:
            message = (
                f"the estimated cost ${_usd(total)} exceeds --max-cost ${_usd(max_cost)}; no batch was created "
                f"(files are uploaded; re-run with a higher --max-cost to go ahead)"
            )
            info(f"error: {message}")
            result = summary(manifest, created=0, notes=notes)
            result.update(
                ok=False,
                error={"type": "cost_limit", "message": message},
                estimated_cost_usd=_usd(total),
                max_cost_usd=_usd(max_cost),
            )
            return result, int(ExitCode.INVALID_INPUT)

    created = 0
    for shard in manifest.shards:
        created += ensure_created(client, manifest, shard)
    result = summary(manifest, created=created, notes=notes)
    result["api_calls"] = client.calls
    return result, int(ExitCode.OK)


# --------------------------------------------------------------------------- planning


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata expects KEY=VALUE, got {pair!r}")
        if key.strip() == MARKER_KEY:
            raise UsageError(f"--metadata key {MARKER_KEY} is reserved for exactly-once submission")
        metadata[key.strip()] = value
    return metadata


def _usd(amount: Decimal) -> str:
    """A plain decimal string (never 1E-7)."""
    return format(amount.normalize(), "f")


def parse_cost(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        cost = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"--max-cost expects an amount in USD, got {value!r}")
    if cost < 0:
        raise UsageError("--max-cost must not be negative")
    return cost


def validate_inputs(inputs: list[Path]) -> list[dict[str, Any]]:
    from doubleword.validation import validate_batch_file

    reports = [validate_batch_file(str(path)) for path in inputs]
    for text in validation_warnings(reports):
        warn(text)
    return reports


def validation_warnings(reports: list[dict[str, Any]]) -> list[str]:
    """One line per warning of the validation reports (they are bounded by --max-errors there)."""
    lines = []
    for report in reports:
        for warning in report.get("warnings") or []:
            where = f"line {warning['line']}: " if warning.get("line") else ""
            lines.append(f"{report['file']}: {where}{warning.get('message')}")
    return lines


def count_file(path: Path) -> tuple[int, int, str | None]:
    """Requests (non-blank lines), bytes and the first line's url, streaming the file."""
    import json

    requests_count, endpoint = 0, None
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            requests_count += 1
            if endpoint is None:
                try:
                    endpoint = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    endpoint = None
    return requests_count, path.stat().st_size, endpoint


def stats_for(path: Path, report: dict[str, Any] | None) -> dict[str, Any]:
    stats = dict((report or {}).get("stats") or {})
    if "requests" not in stats or "endpoint" not in stats or "bytes" not in stats:
        count, size, endpoint = count_file(path)
        stats.setdefault("requests", count)
        stats.setdefault("bytes", size)
        stats.setdefault("endpoint", endpoint)
    if not stats.get("endpoint"):
        stats["endpoint"] = count_file(path)[2]
    stats.setdefault("estimated_input_tokens", stats["bytes"] // 4)
    return stats


def needs_sharding(stats: dict[str, Any], args: Any) -> bool:
    return stats["requests"] > args.max_requests or stats["bytes"] > args.max_bytes


def split(path: Path, out_dir: Path, args: Any) -> list[dict[str, Any]]:
    from doubleword.build import shard_file

    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return shard_file(
            str(path), str(out_dir / path.name), max_requests=args.max_requests, max_bytes=args.max_bytes
        )
    except BaseException:
        for folder in created:  # leave no empty shard folders behind (e.g. a line over --max-bytes)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def shard_dir(manifest_path: Path) -> Path:
    name = manifest_path.name.removesuffix(".json").removesuffix(".manifest")
    return manifest_path.resolve().parent / f"{name}.shards"


def plan_manifest(
    inputs: list[Path], reports: list[dict[str, Any]], args: Any, metadata: dict[str, str], path: Path
) -> Manifest:
    """A fresh manifest: shards with their markers chosen before anything is sent."""
    if Manifest.exists(path):  # --force: keep the old one beside the new
        backup = path.with_name(f"{path.name}.{uuid.uuid4().hex[:6]}.bak")
        os.replace(path, backup)
        info(f"--force: the previous manifest was moved to {backup}")
    manifest = Manifest.new(
        path,
        inputs=[
            {"path": str(p.resolve()), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in inputs
        ],
        window=args.window,
        metadata=metadata,
    )
    for i, source in enumerate(inputs):
        report = reports[i] if reports else None
        stats = stats_for(source, report)
        if needs_sharding(stats, args):
            pieces = split(source, shard_dir(path) / f"{i:03d}", args)
            info(f"{source}: {stats['requests']} requests split into {len(pieces)} shards")
        else:
            pieces = [{"path": str(source), "requests": stats["requests"], "bytes": stats["bytes"]}]
        for piece in pieces:
            piece_path = Path(piece["path"]).resolve()
            digest = sha256_file(piece_path)
            nonce = uuid.uuid4().hex[:12]
            stem = piece_path.name.removesuffix(".jsonl")[:80]
            manifest.add_shard(
                new_shard(
                    len(manifest.shards),
                    source=str(source.resolve()),
                    path=str(piece_path),
                    sha256=digest,
                    requests=piece["requests"],
                    bytes=piece["bytes"],
                    endpoint=stats["endpoint"],
                    estimated_input_tokens=stats.get("estimated_input_tokens") if len(pieces) == 1 else None,
                    upload_filename=f"{stem}.{digest[:8]}.{nonce}.jsonl",
                    marker=f"dwb-{nonce}",
                )
            )
    return manifest


def dry_run_plan(inputs: list[Path], reports: list[dict[str, Any]], args: Any, path: Path) -> dict[str, Any]:
    """The plan without network calls and without leaving files behind."""
    shards: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="dwb-dry-run-"))
    try:
        for i, source in enumerate(inputs):
            stats = stats_for(source, reports[i] if reports else None)
            if needs_sharding(stats, args):
                pieces = split(source, tmp / f"{i:03d}", args)
            else:
                pieces = [{"path": str(source), "requests": stats["requests"], "bytes": stats["bytes"]}]
            for piece in pieces:
                tokens = stats["estimated_input_tokens"] * piece["bytes"] // max(1, stats["bytes"])
                shards.append(
                    {
                        "source": str(source),
                        "shard": len(shards),
                        "requests": piece["requests"],
                        "bytes": piece["bytes"],
                        "endpoint": stats["endpoint"],
                        "estimated_input_tokens": tokens,
                    }
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "ok": True,
        "dry_run": True,
        "manifest": str(path),
        "window": args.window,
        "batches_to_create": len(shards),
        "requests": sum(s["requests"] for s in shards),
        "estimated_input_tokens": sum(s["estimated_input_tokens"] for s in shards),
        "shards": shards,
    }


def existing_plan(manifest: Manifest) -> dict[str, Any]:
    result = summary(manifest, created=0)
    result["dry_run"] = True
    result["batches_to_create"] = sum(1 for s in manifest.shards if s["create_state"] != "done")
    return result


def same_inputs(manifest: Manifest, inputs: list[Path]) -> bool:
    recorded = [(i.get("path"), i.get("sha256")) for i in manifest.inputs]
    return recorded == [(str(p.resolve()), sha256_file(p)) for p in inputs]


def nothing_sent(manifest: Manifest) -> bool:
    """True when no upload or batch creation from this manifest can have reached the server."""
    return all(
        s["upload_state"] == "pending" and s["create_state"] == "pending" and not s.get("file_id")
        for s in manifest.shards
    )


def all_created(manifest: Manifest) -> bool:
    return bool(manifest.shards) and all(s["create_state"] == "done" for s in manifest.shards)


# --------------------------------------------------------------------------- exactly-once steps


def ensure_uploaded(client: ApiClient, manifest: Manifest, shard: Shard) -> None:
    """Upload a shard once: a possibly-sent upload is looked up by its unique filename first."""
    if shard["upload_state"] == "done":
        return
    name = shard["upload_filename"]
    if shard["upload_state"] == "sending":
        found = find_file_by_name(client, name)
        if found:
            info(f"shard {shard['index']}: found the earlier upload {found['id']} ({name})")
            _adopt_file(manifest, shard, found)
            return
    check_shard_file(manifest, shard)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        shard["upload_state"] = "sending"
        manifest.save()
        info(f"shard {shard['index']}: uploading {shard['path']} ({shard['requests']} requests)")
        try:
            uploaded = upload_file(client, shard["path"], name)
        except AmbiguousRequest as exc:
            warn(f"{exc}; looking for the upload by its name {name}")
            found = find_file_by_name(client, name)
            if found:
                _adopt_file(manifest, shard, found)
                return
            if attempt == MAX_ATTEMPTS:
                raise
            continue
        except ApiError:
            shard["upload_state"] = "pending"  # a definite refusal: nothing was stored
            manifest.save()
            raise
        _adopt_file(manifest, shard, uploaded)
        return


def check_shard_file(manifest: Manifest, shard: Shard) -> None:
    """A shard file recorded in the manifest must still exist with the content that was planned."""
    if not Path(shard["path"]).is_file():
        raise InputError(
            f"shard {shard['path']} (recorded in manifest {manifest.path}) is missing; nothing was "
            "uploaded for it: restore the file, or re-run with --force to plan the shards afresh"
        )
    if sha256_file(shard["path"]) != shard["sha256"]:
        raise InputError(
            f"shard {shard['path']} changed since it was planned (manifest {manifest.path}); "
            "re-run with --force to plan the shards afresh"
        )


def _adopt_file(manifest: Manifest, shard: Shard, file_obj: dict[str, Any]) -> None:
    shard["file_id"] = file_obj["id"]
    shard["upload_state"] = "done"
    manifest.save()


def ensure_created(client: ApiClient, manifest: Manifest, shard: Shard) -> int:
    """Create a shard's batch once; a possibly-sent creation is looked up by its marker. Returns 1 if new."""
    if shard["create_state"] == "done":
        return 0
    marker = shard["marker"]
    if shard["create_state"] == "sending":
        found = find_batch_by_marker(client, marker)
        if found:
            info(f"shard {shard['index']}: found the earlier batch {found['id']} ({marker})")
            _adopt_batch(manifest, shard, found)
            return 1
    metadata = {**manifest.metadata, MARKER_KEY: marker}
    window = manifest.window or "24h"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        shard["create_state"] = "sending"
        manifest.save()
        try:
            batch = create_batch(client, shard["file_id"], shard["endpoint"], window, metadata)
        except AmbiguousRequest as exc:
            warn(f"{exc}; looking for the batch by its marker {marker}")
            found = find_batch_by_marker(client, marker)
            if found:
                _adopt_batch(manifest, shard, found)
                return 1
            if attempt == MAX_ATTEMPTS:
                raise
            continue
        except ApiError:
            shard["create_state"] = "pending"
            manifest.save()
            raise
        _adopt_batch(manifest, shard, batch)
        info(f"shard {shard['index']}: batch {batch['id']} created ({batch.get('status')})")
        return 1
    raise ServiceError("unreachable")  # pragma: no cover


def _adopt_batch(manifest: Manifest, shard: Shard, batch: dict[str, Any]) -> None:
    record_batch(shard, batch)
    shard["create_state"] = "done"
    manifest.save()


def estimate_cost(client: ApiClient, manifest: Manifest) -> Decimal:
    window = manifest.window or "24h"
    total = Decimal(0)
    for shard in manifest.shards:
        cached = shard.get("cost_estimate")
        if not (isinstance(cached, dict) and cached.get("window") == window):
            estimate = cost_estimate(client, shard["file_id"], window)
            cached = {"window": window, "usd": str(decimal_cost(estimate.get("total_estimated_cost")))}
            shard["cost_estimate"] = cached
            manifest.save()
        total += Decimal(cached["usd"])
    return total


# --------------------------------------------------------------------------- output


def summary(manifest: Manifest, *, created: int, notes: list[str] | None = None) -> dict[str, Any]:
    batches = [
        {
            "batch_id": s.get("batch_id"),
            "input_file_id": s.get("file_id"),
            "shard": s.get("path"),
            "requests": s.get("requests"),
            "endpoint": s.get("endpoint"),
            "status": s.get("status") or ("not created" if s["create_state"] != "done" else None),
        }
        for s in manifest.shards
    ]
    return {
        "ok": True,
        "manifest": str(manifest.path),
        "created": created,
        "existing": sum(1 for s in manifest.shards if s["create_state"] == "done") - created,
        "window": manifest.window,
        "batches": batches,
        **({"warnings": notes} if notes else {}),
    }


if __name__ == "__main__":
    sys.exit(run(main))
