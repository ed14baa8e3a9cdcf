"""``submit.py --resubmit``: the job's next round, with every input that has no usable answer yet.

The order of work makes it exactly-once and honest:

1. A round already planned but not wholly sent (a killed or failed run) is finished, never planned again:
   a re-run creates no new round.
2. Every batch of the job not yet seen finished is asked about; while any runs, nothing is sent (exit 7).
3. The download engine brings the job's results up to date; the inputs without a usable answer are read
   from them (best across rounds), and the request lines of those chosen, as last sent (an earlier
   round's changes, such as a raised max_tokens, carry over), are written, adjusted, into the round's file. The round is recorded in the manifest before anything is sent.
4. The round's shards are sent by the same exactly-once step as the first round, their batches carrying
   the job and round in their metadata.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doubleword.api import get_batch
from doubleword.cli import info, warn
from doubleword.cli import summary as closing_line
from doubleword.client import ApiClient
from doubleword.errors import BusyError, CliError, ExitCode, InputError, UsageError
from doubleword.files import atomic_writer
from doubleword.manifest import Manifest, Round, client_for
from doubleword.planning import Options, add_shards, stats_for
from doubleword.rounds import InputRecord, check_command, job_records, read_results, refused, signature
from doubleword.status import is_terminal
from doubleword.submission import CostLimit, cost_refusal, round_window, send_shards, summary, with_notes

RESUBMITTABLE = ("failed", "missing", "truncated", "invalid")


class JobRunning(BusyError):
    kind = "not_finished"


@dataclass
class Adjustments:
    """Which unanswered inputs a round takes, and what it changes in their bodies."""

    statuses: tuple[str, ...] = RESUBMITTABLE
    max_tokens: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    skip_persistent: bool = False
    system: str | None = None  # added to each request's system prompt (after any it has)
    skip_refused: bool = False

    @classmethod
    def parse(
        cls,
        only: str | None,
        max_tokens: int | None,
        sets: list[str],
        *,
        skip_persistent: bool,
        system: str | None = None,
        skip_refused: bool = False,
    ) -> Adjustments:
        statuses = tuple(s.strip() for s in only.split(",") if s.strip()) if only else RESUBMITTABLE
        wrong = [s for s in statuses if s not in RESUBMITTABLE]
        if wrong or not statuses:
            raise UsageError(f"--only takes statuses among {', '.join(RESUBMITTABLE)}, got {only!r}")
        if max_tokens is not None and max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        from doubleword.sources import parse_set  # the same --set as create_batch_file.py's

        if system is not None and not system.strip():
            raise UsageError("--system needs a text (the instructions to add)")
        return cls(statuses, max_tokens, parse_set(sets), skip_persistent, system, skip_refused)

    def skips(self) -> str:
        """The skip flags given, as they read after --only (for messages)."""
        flags = [
            f
            for f, on in (("--skip-persistent", self.skip_persistent), ("--skip-refused", self.skip_refused))
            if on
        ]
        return "".join(f", {f}" for f in flags)

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of the round's changes."""
        out: dict[str, Any] = dict(self.body)
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if self.system is not None:
            out["system"] = self.system
        return out

    def apply(self, raw: bytes) -> bytes:
        """A request line with the round's body changes (byte for byte when there are none)."""
        if not self.body and self.max_tokens is None and self.system is None:
            return raw.rstrip(b"\r\n") + b"\n"
        request = json.loads(raw)
        body = request.setdefault("body", {})
        body.update(self.body)
        if self.max_tokens is not None:
            body[_max_tokens_key(str(request.get("url", "")), body)] = self.max_tokens
        if self.system is not None:
            _add_system(str(request.get("url", "")), body, self.system)
        return json.dumps(request, ensure_ascii=False).encode("utf-8") + b"\n"


def _add_system(url: str, body: dict[str, Any], text: str) -> None:
    """``text`` after the request's own system prompt (a paragraph of its own), or as its system prompt."""
    from doubleword.endpoints import endpoint_for_url

    endpoint = endpoint_for_url(url)
    field = endpoint.system_field if endpoint is not None else None
    if field is None:
        raise UsageError(f"--system does not apply to {url} requests (they have no system prompt)")
    if field == "messages":
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise UsageError("--system: a resent request has no messages list")
        first = messages[0] if messages else None
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            first["content"] = _joined(first.get("content"), text)
        else:
            messages.insert(0, {"role": "system", "content": text})
        return
    body[field] = _joined(body.get(field), text)


def _joined(existing: Any, text: str) -> Any:
    if existing is None or existing == "":
        return text
    if existing == text or (isinstance(existing, str) and existing.endswith(f"\n\n{text}")):
        return existing  # added by an earlier round (its lines are what is resent): not added twice
    if isinstance(existing, list) and existing and existing[-1] == {"type": "text", "text": text}:
        return existing
    if isinstance(existing, list):  # content parts (or Anthropic system blocks)
        return [*existing, {"type": "text", "text": text}]
    return f"{existing}\n\n{text}"


def _max_tokens_key(url: str, body: dict[str, Any]) -> str:
    from doubleword.endpoints import endpoint_for_url

    endpoint = endpoint_for_url(url)
    field = endpoint.max_tokens_field if endpoint is not None else "max_tokens"
    if field is None:
        raise UsageError(f"--max-tokens does not apply to {url} requests")
    return "max_completion_tokens" if "max_completion_tokens" in body else field


def resubmit(args: Any, options: Options, adjust: Adjustments) -> tuple[dict[str, Any], int]:
    """The command: finish a half-sent round, or refuse while the job runs, or plan and send the next one.

    ``--window`` applies to the new round (recorded in it); ``--metadata`` and, for a round already
    planned, ``--window`` are ignored with a warning (on stderr and in the JSON's ``warnings``)."""
    manifest = Manifest.load(args.manifest)
    client = client_for(args, manifest)
    notes: list[str] = []
    if options.metadata and options.metadata != manifest.metadata:
        notes.append("--metadata is ignored with --resubmit: a round's batches carry the job's metadata")
    options.metadata = manifest.metadata
    last = manifest.last_round
    if not last.submitted and options.window and options.window != round_window(manifest, last.number):
        notes.append(
            f"round {last.number} was planned with --window {round_window(manifest, last.number)}; --window "
            f"{options.window} was ignored (the round is finished as planned)"
        )
    if not last.submitted and adjust != Adjustments():
        notes.append(
            f"round {last.number} is not wholly sent: it is finished as planned, and --only, --max-tokens, "
            "--set, --system and --skip-persistent were ignored; they apply to the next --resubmit"
        )
    for note in notes:
        warn(note)
    result, code = _resubmit(args, manifest, client, options, adjust)
    return with_notes(result, notes), code


def _resubmit(
    args: Any, manifest: Manifest, client: ApiClient, options: Options, adjust: Adjustments
) -> tuple[dict[str, Any], int]:
    last = manifest.last_round
    dry_run = bool(getattr(args, "dry_run", False))
    if not last.submitted and dry_run:
        result = summary(manifest, last.shards, created=0)
        result.update(dry_run=True, batches_to_create=sum(1 for s in last.shards if s.create_state != "done"))
        return result, int(ExitCode.OK)
    if not last.submitted:  # planned, perhaps partly sent, by an earlier run: finish it, plan nothing
        info(f"round {last.number} of {manifest.path.resolve()} was not wholly sent; finishing it")
        try:
            created = send_shards(client, manifest, last.shards, options)
        except CostLimit as exc:
            return cost_refusal(manifest, last.shards, options, exc), int(ExitCode.INVALID_INPUT)
        return _sent(manifest, last, client, created, None), int(ExitCode.OK)
    refuse_while_running(client, manifest)
    view = job_view(args, manifest)
    manifest.reload()  # the download saved its cursors: keep them
    options.window = options.window or round_window(manifest, 1)  # the new round's: asked, else the job's
    return next_round(client, manifest, view, options, adjust, dry_run=dry_run)


def refuse_while_running(client: ApiClient, manifest: Manifest) -> None:
    """Exit 7, sending nothing, while any batch of the job is not finished."""
    todo = [s.batch_id for s in manifest.shards if s.batch_id and not is_terminal(s.status)]
    batches = [get_batch(client, batch_id) for batch_id in todo]
    if batches:
        manifest.record_batches(batches)
    running = [b for b in batches if not is_terminal(b.get("status"))]
    if running:
        path = manifest.path.resolve()
        ids = ", ".join(str(b.get("id")) for b in running)
        raise JobRunning(
            f"{len(running)} batch(es) of the job are still running ({ids}); nothing was sent. Check with: "
            f"{check_command(manifest)}; resubmit once they "
            "finish (resubmitting now could pay twice for requests that are still going to be answered)",
            details={"running": [b.get("id") for b in running], "manifest": str(path)},
        )


@dataclass
class JobView:
    """The job as the download engine left it: a record per input, its failure groups, and retry.jsonl
    (the original round-1 request lines of every input without a usable answer)."""

    records: list[InputRecord]
    groups: list[dict[str, Any]]
    retry: Path | None


def job_view(args: Any, manifest: Manifest) -> JobView:
    """Bring the job's results up to date with the download engine: one record per input, and the
    engine's failure groups (with its judgement of whether resubmitting helps)."""
    import fetch_results  # the download engine's command; scripts/ is on sys.path when submit.py runs

    argv = ["--manifest", str(manifest.path)]
    if getattr(args, "base_url", None):
        argv += ["--base-url", args.base_url]
    if getattr(args, "allow_insecure", False):
        argv.append("--allow-insecure")
    try:
        fetched, code = fetch_results.main(argv)
    except CliError as exc:
        raise type(exc)(f"downloading the job's results before resubmitting failed: {exc.message}")
    if code == int(ExitCode.NOT_FINISHED):
        raise JobRunning(
            "the job's results are not all downloaded yet (a batch is still running); nothing was sent"
        )
    records = job_records(manifest, read_results(Path(fetched["files"]["results"])))
    retry = (fetched.get("files") or {}).get("retry")
    return JobView(records, list(fetched.get("failure_groups") or []), Path(retry) if retry else None)


def _refused(record: InputRecord) -> bool:
    """The server refused this input's request for what it is (rounds.refused): resent, refused again."""
    error = record.error or {}
    return refused(record.status, error.get("type"), error.get("status"))


def persistent_ids(manifest: Manifest, unanswered: list[InputRecord]) -> set[str]:
    """Inputs that failed the same way in the latest round as in the round before it."""
    last = manifest.last_round
    if last.number < 2 or not last.source:
        return set()
    causes = _causes_path(Path(last.source))
    if not causes.is_file():
        return set()
    latest = {r.custom_id: signature(r.error) for r in unanswered if r.round == last.number and r.error}
    same: set[str] = set()
    with open(causes, encoding="utf-8") as handle:
        for line in handle:
            cause = json.loads(line)
            before = cause.get("signature")
            if before is not None and latest.get(cause.get("custom_id")) == before:
                same.add(cause["custom_id"])
    return same


def next_round(
    client: ApiClient,
    manifest: Manifest,
    view: JobView,
    options: Options,
    adjust: Adjustments,
    *,
    dry_run: bool = False,
) -> tuple[dict[str, Any], int]:
    records, groups = view.records, view.groups
    unanswered = [r for r in records if r.status != "completed"]
    persistent = persistent_ids(manifest, unanswered)
    chosen = [
        r
        for r in unanswered
        if r.status in adjust.statuses
        and not (adjust.skip_persistent and r.custom_id in persistent)
        and not (adjust.skip_refused and _refused(r))
    ]
    base = {
        "manifest": str(manifest.path.resolve()),
        "inputs": len(records),
        "unanswered": len(unanswered),
        "failure_groups": groups,
    }
    if not unanswered:
        closing_line("every input of the job has a usable answer; nothing to resubmit")
        return {"ok": True, "complete": True, "resubmitted": 0, **base}, int(ExitCode.OK)
    if not chosen:
        message = (
            f"{len(unanswered)} input(s) lack a usable answer but none matches this round's choice "
            f"(--only {','.join(adjust.statuses)}{adjust.skips()}); "
            "nothing was sent (see failure_groups)"
        )
        closing_line(message)  # (the download's closing line would otherwise end this run)
        error = {"type": "nothing_to_resubmit", "message": message}
        return {"ok": False, "complete": False, "resubmitted": 0, "error": error, **base}, int(
            ExitCode.BATCH_UNSUCCESSFUL
        )
    if dry_run:
        by_status = dict(Counter(r.status for r in chosen))
        closing_line(
            f"dry run: round {manifest.last_round.number + 1} would resend {len(chosen)} request(s) "
            f"({', '.join(f'{n:,} {s}' for s, n in by_status.items())}); nothing sent"
        )
        plan: dict[str, Any] = {"dry_run": True, "round": manifest.last_round.number + 1}
        plan["window"] = options.window
        plan["would_resubmit"] = len(chosen)
        plan.update(by_status=by_status, left_behind=len(unanswered) - len(chosen), adjust=adjust.record())
        _check_dry_run(manifest, chosen, adjust, options, view.retry)
        return {"ok": True, **plan, **base}, int(ExitCode.OK)
    round_ = plan_round(manifest, chosen, unanswered, adjust, options, view.retry)
    manifest.save()  # the round exists before anything is sent: a re-run finishes it, never plans another
    info(f"round {round_.number}: resubmitting {len(chosen)} of {len(unanswered)} unanswered input(s)")
    try:
        created = send_shards(client, manifest, round_.shards, options)
    except CostLimit as exc:
        refused = cost_refusal(manifest, round_.shards, options, exc)
        return {**refused, **base, "ok": False}, int(ExitCode.INVALID_INPUT)
    result = _sent(manifest, round_, client, created, groups)
    result.update(base)
    return result, int(ExitCode.OK)


def plan_round(
    manifest: Manifest,
    chosen: list[InputRecord],
    unanswered: list[InputRecord],
    adjust: Adjustments,
    options: Options,
    retry: Path | None = None,
) -> Round:
    """Write the round's request file (each line as last sent, adjusted) and plan its shards
    (:func:`_round_lines` says where the lines come from)."""
    folder = manifest.path.resolve().parent / f"{_stem(manifest.path)}.rounds"
    number = manifest.last_round.number + 1
    source = folder / f"round-{number:03d}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    with atomic_writer(source) as out, atomic_writer(_causes_path(source)) as causes:
        for raw, record in _round_lines(manifest, chosen, retry):
            out.write(adjust.apply(raw))
            cause = {
                "custom_id": record.custom_id,
                "status": record.status,
                "signature": signature(record.error),
            }
            causes.write(json.dumps(cause, ensure_ascii=False).encode("utf-8") + b"\n")
            written += 1
    report = _checked(source, adjust, options)
    round_ = manifest.new_round(
        statuses=list(adjust.statuses),
        adjust=adjust.record(),
        source=str(source),
        left_behind=len(unanswered) - written,
        extra={"window": options.window or round_window(manifest, 1)},
    )
    stats = stats_for(source, report)
    add_shards(manifest, round_, source, stats, options, folder / f"round-{number:03d}")
    return round_


def _check_dry_run(
    manifest: Manifest, chosen: list[InputRecord], adjust: Adjustments, options: Options, retry: Path | None
) -> None:
    """A dry run checks the round's adjusted lines as the real run would, in a file removed afterwards."""
    if not options.validate or not (adjust.body or adjust.max_tokens is not None):
        return
    with tempfile.TemporaryDirectory(prefix="dwb-dry-run-") as tmp:
        trial = Path(tmp) / "round.jsonl"
        with open(trial, "wb") as out:
            for raw, _record in _round_lines(manifest, chosen, retry):
                out.write(adjust.apply(raw))
        _checked(trial, adjust, options)


def _checked(source: Path, adjust: Adjustments, options: Options) -> dict[str, Any] | None:
    """The round's file validated when --set or --max-tokens changed its lines (the lines themselves passed
    round 1's checks); an invalid round is not planned: its file is removed and nothing is sent."""
    if not options.validate or not (adjust.body or adjust.max_tokens is not None):
        return None
    from doubleword.fingerprint import validate_file
    from doubleword.validation import invalid_summary

    report = validate_file(source, max_bytes=sys.maxsize, max_requests=sys.maxsize)
    if report.get("valid"):
        return report
    for path in (source, _causes_path(source)):
        path.unlink(missing_ok=True)
    raise InputError(
        f"{invalid_summary([report])}; --set or --max-tokens made these lines invalid, so no round was "
        "planned and nothing was sent: change the option and run --resubmit again",
        details={"validation": [report]},
    )


def _round_lines(
    manifest: Manifest, chosen: list[InputRecord], retry: Path | None
) -> Iterator[tuple[bytes, InputRecord]]:
    """Each chosen input's request line as it was last sent: from the newest earlier round that resent it
    (so that round's changes carry over), else its original line (from the engine's retry.jsonl, the
    unanswered as the server received them in round 1, else from the first round's files); an
    InputError if any is gone."""
    wanted = {r.custom_id: r for r in chosen}
    lines = _lines(retry) if retry is not None and retry.is_file() else _first_round_lines(manifest)
    with LastSent(manifest, set(wanted)) as last_sent:
        for raw in lines:
            custom_id = _custom_id(raw)
            record = wanted.pop(custom_id, None) if custom_id else None
            if record is not None:
                yield last_sent.line(record.custom_id) or raw, record
    if wanted:
        raise InputError(
            f"{len(wanted)} unanswered input(s) (e.g. {next(iter(wanted))}) are not in the first round's "
            "input files any more; restore them (the manifest lists their paths) and run the same command again"
        )


class LastSent:
    """Where each of some inputs' latest resent line is: the files of the rounds after the first, newest
    first, indexed as (file, offset, length) per custom_id (no line is held in memory)."""

    def __init__(self, manifest: Manifest, ids: set[str]) -> None:
        self.where: dict[str, tuple[int, int, int]] = {}
        self.handles: list[Any] = []
        for round_ in reversed(manifest.rounds[1:]):
            path = Path(round_.source) if round_.source else None
            if path is None or not path.is_file():
                if path is not None:
                    warn(
                        f"round {round_.number}'s request file {path} is gone: its changes are not carried over"
                    )
                continue
            handle = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.handles.append(handle)
            offset = 0
            for raw in handle:
                custom_id = _custom_id(raw) if raw.strip() else None
                if custom_id in ids and custom_id not in self.where:
                    self.where[custom_id] = (len(self.handles) - 1, offset, len(raw))
                offset += len(raw)

    def line(self, custom_id: str) -> bytes | None:
        spot = self.where.get(custom_id)
        if spot is None:
            return None
        handle = self.handles[spot[0]]
        handle.seek(spot[1])
        return handle.read(spot[2])

    def __enter__(self) -> LastSent:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.close()


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from (raw for raw in handle if raw.strip())


def _first_round_lines(manifest: Manifest) -> Iterator[bytes]:
    for shard in manifest.first_round.shards:
        path = Path(str(shard.path))
        if not path.is_file():
            raise InputError(
                f"the job's input file {path} is gone; it holds the original requests to resend: restore it"
            )
        with open(path, "rb") as handle:
            for raw in handle:
                if raw.strip():
                    yield raw


def _custom_id(raw: bytes) -> str | None:
    try:
        value = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _causes_path(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(".jsonl") + ".causes.jsonl")


def _stem(path: Path) -> str:
    return path.name.removesuffix(".json").removesuffix(".manifest")


def _sent(
    manifest: Manifest, round_: Round, client: ApiClient, created: int, groups: list[dict[str, Any]] | None
) -> dict[str, Any]:
    result = summary(manifest, round_.shards, created=created)
    result["resubmitted"] = sum(s.requests or 0 for s in round_.shards)
    result["left_behind"] = round_.left_behind
    result["api_calls"] = client.calls
    return result
