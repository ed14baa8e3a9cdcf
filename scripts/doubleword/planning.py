"""Planning a job before anything is sent: options, local validation, shards with their markers, and
the dry run (SPEC section 4, submit.py). Every marker and digest is chosen here, so that the sending
step (submission.py) can always tell whether a shard was sent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from doubleword.api import RESERVED_KEYS
from doubleword.cli import info, warn
from doubleword.errors import InputError, UsageError
from doubleword.fingerprint import recall_valid, validate_file
from doubleword.manifest import Manifest, Round, Shard, new_shard, sha256_file

DEFAULT_WINDOW = "24h"
DEFAULT_UPLOADS = 1
MAX_UPLOADS = 8


@dataclass
class Options:
    """What the user asked for, independent of argparse."""

    window: str | None = None  # None: not asked (24h for a new job; the job's own window for a round)
    metadata: dict[str, str] = field(default_factory=dict)
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    validate: bool = True
    max_cost: Decimal | None = None
    upload_workers: int = (
        DEFAULT_UPLOADS  # files uploaded at once (each batch is created as soon as its file is up)
    )


def options_from_args(args: Any) -> Options:
    """submit.py's flags as Options, each checked (a usage error names the flag)."""
    if args.uploads < 1 or args.uploads > MAX_UPLOADS:
        raise UsageError(f"--uploads must be between 1 and {MAX_UPLOADS}")
    if args.max_requests < 1 or args.max_bytes < 1024:
        raise UsageError("--max-requests must be >= 1 and --max-bytes >= 1024")
    return Options(
        window=args.window,
        metadata=parse_metadata(args.metadata),
        max_requests=args.max_requests,
        max_bytes=args.max_bytes,
        validate=not args.no_validate,
        max_cost=parse_cost(args.max_cost),
        upload_workers=args.uploads,
    )


# --------------------------------------------------------------------------- planning


def validate_inputs(inputs: list[Path]) -> list[dict[str, Any]]:
    """Each input's validation report, validated and hashed in one read; content validated before (same
    digest, same rules) is only hashed, not validated again."""
    reports = []
    for path in inputs:
        report = recall_valid(path)
        if report is not None:
            info(f"{path}: this content passed validation before; not validating it again")
        else:
            # no per-file limits here: an oversize input is sharded, not refused (each shard fits)
            report = validate_file(path, max_bytes=sys.maxsize, max_requests=sys.maxsize)
        reports.append(report)
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
    if not stats["endpoint"]:  # with --no-validate nothing else would notice before the upload
        raise not_a_batch_file(path)
    stats.setdefault("estimated_input_tokens", stats["bytes"] // 4)
    return stats


def not_a_batch_file(path: Path) -> InputError:
    return InputError(
        f'{path}: its first request line has no "url", so it is not a batch file (a X.rows.jsonl '
        f"beside a batch file holds source rows for --export); check it: validate_batch_file.py {path}"
    )


def send_names(path: Path, digest: str) -> tuple[str, str]:
    """A new upload filename and batch marker for a shard file (unique: they find the objects later)."""
    nonce = uuid.uuid4().hex[:12]
    return f"{path.name.removesuffix('.jsonl')[:80]}.{digest[:8]}.{nonce}.jsonl", f"dwb-{nonce}"


def complete_plan(manifest: Manifest, shard: Shard) -> None:
    """Fill in what a never-sent shard lacks (an older version recorded a file it then refused, without an
    endpoint): digest, counts, endpoint, upload filename and marker, from its file. Nothing of it is on the
    server, so new names cannot duplicate anything. A shard without a file is an error naming it."""
    names = (shard.sha256, shard.endpoint, shard.upload_filename, shard.marker)
    if not shard.never_sent or (all(names) and shard.requests is not None and shard.bytes is not None):
        return
    if not shard.path:
        raise InputError(
            f"manifest {manifest.path.resolve()}: shard {shard.index} (round {shard.round}) was never sent "
            'and records no file to send; put its "path" back, or restore the manifest from a backup'
        )
    path = Path(shard.path)
    if not path.is_file():
        return  # the send step names the missing file
    requests_count, size, endpoint = count_file(path)
    if not (shard.endpoint or endpoint):
        raise not_a_batch_file(path)
    shard.sha256 = shard.sha256 or sha256_file(path)
    shard.requests = shard.requests if shard.requests is not None else requests_count
    shard.bytes = shard.bytes if shard.bytes is not None else size
    shard.endpoint = shard.endpoint or endpoint
    upload_filename, marker = send_names(path, shard.sha256)
    shard.upload_filename = shard.upload_filename or upload_filename
    shard.marker = shard.marker or marker
    info(f"shard {shard.index}: never sent; filled in what its record lacked from {path}")
    manifest.save()


def pieces_of(source: Path, stats: dict[str, Any], options: Options, out_dir: Path) -> list[dict[str, Any]]:
    """The file itself when it fits the per-file limits, else its shards written into ``out_dir``."""
    if stats["requests"] <= options.max_requests and stats["bytes"] <= options.max_bytes:
        return [{"path": str(source), "requests": stats["requests"], "bytes": stats["bytes"]}]
    from doubleword.build import shard_file

    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        pieces = shard_file(
            str(source),
            str(out_dir / source.name),
            max_requests=options.max_requests,
            max_bytes=options.max_bytes,
        )
    except BaseException:
        for folder in created:  # leave no empty shard folders behind (e.g. a line over --max-bytes)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    info(f"{source}: {stats['requests']} requests split into {len(pieces)} shards")
    return pieces


def shard_dir(manifest_path: Path) -> Path:
    name = manifest_path.name.removesuffix(".json").removesuffix(".manifest")
    return manifest_path.resolve().parent / f"{name}.shards"


def rows_path_for(path: Path) -> str | None:
    """``X.rows.jsonl`` beside ``X.jsonl`` when create_batch_file.py wrote one (TEAM contract 1)."""
    rows = path.with_name(path.name.removesuffix(".jsonl") + ".rows.jsonl")
    return str(rows.resolve()) if rows.is_file() and rows != path else None


def add_shards(
    manifest: Manifest, round_: Round, source: Path, stats: dict[str, Any], options: Options, folder: Path
) -> None:
    """Plan the shards of one source file into ``round_``: paths, digests and markers, before any send."""
    for shard in plan_shards(manifest, round_, source, stats, options, folder):
        manifest.add_shard(shard)


def plan_shards(
    manifest: Manifest, round_: Round, source: Path, stats: dict[str, Any], options: Options, folder: Path
) -> list[Shard]:
    """The shard records of one source file (written into ``folder`` when it must be split), numbered
    after the manifest's last shard, not yet added to it."""
    pieces = pieces_of(source, stats, options, folder)
    first = manifest.next_shard_index()
    shards = []
    for number, piece in enumerate(pieces):
        piece_path = Path(piece["path"]).resolve()
        digest = sha256_file(piece_path)
        upload_filename, marker = send_names(piece_path, digest)
        shards.append(
            new_shard(
                first + number,
                round=round_.number,
                source=str(source.resolve()),
                path=str(piece_path),
                rows_path=piece.get("rows_path") or (rows_path_for(piece_path) if len(pieces) == 1 else None),
                sha256=digest,
                requests=piece["requests"],
                bytes=piece["bytes"],
                endpoint=stats["endpoint"],
                estimated_input_tokens=stats.get("estimated_input_tokens") if len(pieces) == 1 else None,
                upload_filename=upload_filename,
                marker=marker,
            )
        )
    return shards


def plan_job(
    inputs: list[Path], reports: list[dict[str, Any]], options: Options, path: Path, base_url: str
) -> Manifest:
    """A fresh manifest whose round 1 holds the inputs' shards, markers chosen before anything is sent."""
    digests = [sha256_file(p) for p in inputs]
    refuse_copies(inputs, digests)
    manifest = Manifest.new(
        path,
        base_url=base_url,
        inputs=[
            {"path": str(p.resolve()), "sha256": digest, "bytes": p.stat().st_size}
            for p, digest in zip(inputs, digests, strict=True)
        ],
        window=options.window or DEFAULT_WINDOW,
        metadata=options.metadata,
    )
    for i, source in enumerate(inputs):
        stats = stats_for(source, reports[i] if reports else None)
        add_shards(manifest, manifest.first_round, source, stats, options, shard_dir(path) / f"{i:03d}")
    return manifest


def refuse_copies(inputs: list[Path], digests: list[str]) -> None:
    """Refuse a copy given beside its original (same sha256): every request would be paid twice."""
    for later, digest in enumerate(digests):
        first = digests.index(digest)
        if first != later:
            raise InputError(
                f"{inputs[later]} holds the same requests as {inputs[first]} (identical content): each "
                "would be sent and paid for twice; give one of them"
            )


def dry_run_plan(
    inputs: list[Path], reports: list[dict[str, Any]], options: Options, path: Path
) -> dict[str, Any]:
    """The plan without network calls and without leaving files behind; refusing what a run refuses
    before sending (a copy beside its original: only files of the same size are read for it)."""
    sizes = Counter(p.stat().st_size for p in inputs)
    alike = [p for p in inputs if sizes[p.stat().st_size] > 1]
    refuse_copies(alike, [sha256_file(p) for p in alike])
    shards: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="dwb-dry-run-"))
    try:
        for i, source in enumerate(inputs):
            stats = stats_for(source, reports[i] if reports else None)
            for piece in pieces_of(source, stats, options, tmp / f"{i:03d}"):
                tokens = stats["estimated_input_tokens"] * piece["bytes"] // max(1, stats["bytes"])
                shards.append(
                    {
                        "source": str(source.resolve()),
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
        "manifest": str(path.resolve()),
        "window": options.window or DEFAULT_WINDOW,
        "batches_to_create": len(shards),
        "requests": sum(s["requests"] for s in shards),
        "estimated_input_tokens": sum(s["estimated_input_tokens"] for s in shards),
        "shards": shards,
    }


def changed_inputs(manifest: Manifest, inputs: list[Path]) -> list[int] | None:
    """The positions of the inputs whose content changed since the job was planned; None when the job was
    made for other input files (other paths, another order)."""
    if [i.get("path") for i in manifest.inputs] != [str(p.resolve()) for p in inputs]:
        return None
    return [n for n, p in enumerate(inputs) if manifest.inputs[n].get("sha256") != sha256_file(p)]


def input_shards(manifest: Manifest, position: int) -> list[Shard]:
    """The round-1 shards planned from the input at ``position`` (several when it was split)."""
    source = manifest.inputs[position].get("path")
    return [s for s in manifest.first_round.shards if source and s.source == source]


def unsent_input(manifest: Manifest, position: int) -> bool:
    """True when nothing planned from that input can be on the server (its upload was refused, or never
    tried): its content may change and be planned afresh without anything being sent twice."""
    paths = [i.get("path") for i in manifest.inputs]
    shards = input_shards(manifest, position)
    return len(set(paths)) == len(paths) and bool(shards) and all(s.never_sent for s in shards)


def replan_inputs(
    manifest: Manifest,
    inputs: list[Path],
    positions: list[int],
    reports: list[dict[str, Any]],
    options: Options,
) -> None:
    """Plan afresh the changed inputs at ``positions``, none of whose shards was ever sent (a refused file
    the user has since fixed): each one's shards are replaced where they were (input order kept) and its new
    digest recorded; every other shard, sent or not, stays as it is. Saves the manifest."""
    round_ = manifest.first_round
    for k, n in enumerate(positions):
        source, old = inputs[n], input_shards(manifest, n)
        stats = stats_for(source, reports[k] if reports else None)
        fresh = plan_shards(manifest, round_, source, stats, options, shard_dir(manifest.path) / f"{n:03d}")
        at, gone = next(i for i, s in enumerate(round_.shards) if s is old[0]), {id(s) for s in old}
        before = [s for s in round_.shards[:at] if id(s) not in gone]
        round_.shards[:] = before + fresh + [s for s in round_.shards[at:] if id(s) not in gone]
        _remove_stale_pieces(manifest, old, fresh)
        manifest.inputs[n] = {
            "path": str(source.resolve()),
            "sha256": sha256_file(source),
            "bytes": stats["bytes"],
        }
        info(f"{source} changed since it was planned; none of it was sent, so it is sent as it is now")
    manifest.save()


def _remove_stale_pieces(manifest: Manifest, old: list[Shard], fresh: list[Shard]) -> None:
    """The split files of the old plan that the new one does not reuse (only those submit wrote itself, in
    the job's shards folder: never one of the user's files)."""
    folder, kept = shard_dir(manifest.path), {p for s in fresh for p in (s.path, s.rows_path) if p}
    for path in {p for s in old for p in (s.path, s.rows_path) if p} - kept:
        if Path(path).resolve().is_relative_to(folder):
            with contextlib.suppress(OSError):
                os.unlink(path)


def nothing_sent(manifest: Manifest) -> bool:
    """True when no upload or batch creation from this manifest can have reached the server."""
    return all(
        s.upload_state == "pending" and s.create_state == "pending" and not s.file_id for s in manifest.shards
    )


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata expects KEY=VALUE, got {pair!r}")
        if key.strip() in RESERVED_KEYS:
            raise UsageError(f"--metadata key {key.strip()} is reserved for exactly-once submission")
        metadata[key.strip()] = value
    return metadata


def parse_cost(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        cost = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"--max-cost expects an amount in USD, got {value!r}")
    if cost < 0 or not cost.is_finite():
        raise UsageError("--max-cost must be a finite amount, not negative")
    return cost
