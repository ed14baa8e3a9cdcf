"""Submission: send a planned round's shards exactly once, under one submit per job, with a cost guard.

The exactly-once rule (SPEC section 3) is one step used for both creating calls, the upload and the
batch creation: before sending, the shard is marked ``sending`` in the manifest with a marker chosen at
planning time (the upload's unique filename, the batch's ``dwb_marker`` metadata). A reply that is lost,
ambiguous or without an id, and a run killed after sending, are resolved by looking the object up by
that marker, patiently, since the server's lists may lag a few seconds behind its writes; only when the
lookup finds nothing after that is the call sent again. Nothing here ever advises ``--force``.

Shards are pipelined: each shard's batch is created as soon as its upload finished, so the server starts
on the first shard while the next uploads (except under ``--max-cost``, which needs every estimate first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from doubleword import cli
from doubleword.api import (
    JOB_KEY,
    MARKER_KEY,
    ROUND_KEY,
    cost_estimate,
    create_batch,
    decimal_cost,
    find_batch_by_marker,
    find_file_by_name,
    upload_file,
)
from doubleword.cli import as_done, info, warn
from doubleword.client import ApiClient
from doubleword.config import COMPLETION_WINDOWS
from doubleword.errors import AmbiguousRequest, ApiError, CliError, InputError, ServiceError
from doubleword.fingerprint import recall_valid, validate_file
from doubleword.manifest import Manifest, Shard, exclusive_lock, record_batch, sha256_file
from doubleword.planning import DEFAULT_WINDOW, Options, complete_plan
from doubleword.rounds import check_command

MAX_ATTEMPTS = 3
LIST_LAG_S = 8.0  # how long after a send a lookup may still miss the new object (lists lag behind writes)
LOOKUP_PAUSES = (0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------- the submit lock


@contextlib.contextmanager
def submit_lock(manifest_path: Path) -> Iterator[None]:
    """One submit per job at a time: a second one (an agent retrying a command that looked stuck) waits
    for the first, then finds its batches in the manifest and reports them instead of creating more.

    The lock file lives in the temp folder, keyed by the manifest's absolute path, so that a submit that
    stops early (invalid input, no key) leaves nothing beside the user's files.
    """
    key = hashlib.sha256(str(manifest_path.resolve()).encode()).hexdigest()[:24]
    lock = Path(tempfile.gettempdir()) / f"doubleword-batches-{_user()}" / f"submit-{key}.lock"
    with exclusive_lock(lock, wait=False) as mine:
        if mine:
            yield
            return
    info(f"another submit.py is working on {manifest_path.resolve()}; waiting for it to finish")
    with exclusive_lock(lock):
        yield


def _user() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid else "user"


def check_shard_file(manifest: Manifest, shard: Shard, *, validate: bool = True) -> None:
    """A shard file still to upload must exist with the content that was planned (its digest); a never-sent
    one changed since (a refused file, fixed in place) is validated again (``validate``) and sent as it is."""
    assert shard.path is not None
    sent = sum(1 for s in manifest.shards if s.upload_state != "pending")
    consequence = (
        f"; {sent} other shard(s) of this job were already sent and keep running, so submitting the "
        "inputs again under another --manifest would pay for those requests twice"
        if sent
        else ""
    )
    if not Path(shard.path).is_file():
        raise InputError(
            f"shard {shard.path} (recorded in manifest {manifest.path.resolve()}) is missing; nothing was "
            f"uploaded for it: restore the file and run the same command again{consequence}"
        )
    if sha256_file(shard.path) != shard.sha256:
        if shard.never_sent:  # nothing of it is on the server (a refused upload, fixed): plan it afresh
            report = (
                validate_file(shard.path, max_bytes=sys.maxsize, max_requests=sys.maxsize) if validate else {}
            )
            if validate and not report.get("valid"):
                from doubleword.validation import invalid_summary

                message = f"{invalid_summary([report])}; nothing was uploaded for it"
                raise InputError(message, details={"shard": shard.path, "validation": [report]})
            shard.sha256 = shard.requests = shard.bytes = shard.upload_filename = shard.marker = None
            info(
                f"shard {shard.index}: {shard.path} changed since it was planned; never sent, so sent as it is"
            )
            complete_plan(manifest, shard)
            return
        raise InputError(
            f"shard {shard.path} changed since it was planned (manifest {manifest.path.resolve()}); "
            f"restore its planned content and run the same command again{consequence}"
        )


# --------------------------------------------------------------------------- the exactly-once step


@dataclass
class Step:
    """One creating call of a shard (upload or batch creation) and how to find what it may have made."""

    shard: Shard
    what: str  # "upload" or "batch"
    marker: str  # the unique name/marker the object carries
    send: Callable[[], dict[str, Any]]
    find: Callable[[], dict[str, Any] | None]
    adopt: Callable[[dict[str, Any]], None]

    @property
    def state_key(self) -> str:
        return "upload_state" if self.what == "upload" else "create_state"

    @property
    def state(self) -> str:
        return str(getattr(self.shard, self.state_key))

    def mark(self, manifest: Manifest, state: str) -> None:
        setattr(self.shard, self.state_key, state)
        if state == "sending":
            self.shard.extra[f"{self.what}_sent_at"] = time.time()
        manifest.save()


def look_up(step: Step) -> dict[str, Any] | None:
    """The object the step may have made: looked up by its marker until the lists can be trusted to show it
    (LIST_LAG_S after the send), so a list that lags behind writes does not cause a second object."""
    sent_at = step.shard.extra.get(f"{step.what}_sent_at")
    found = step.find()
    for pause in LOOKUP_PAUSES:
        if found or not isinstance(sent_at, (int, float)) or time.time() >= sent_at + LIST_LAG_S:
            break
        time.sleep(min(pause, max(0.0, sent_at + LIST_LAG_S - time.time())))
        found = step.find()
    return found


def ensure_once(manifest: Manifest, step: Step, before_send: Callable[[], None] | None = None) -> bool:
    """Make the step's object exist exactly once; True if it was made or adopted by this call."""
    if step.state == "done":
        return False
    if step.state == "sending":
        found = look_up(step)
        if found:
            info(f"shard {step.shard.index}: found the earlier {step.what} {found['id']} ({step.marker})")
            step.adopt(found)
            return True
    if before_send is not None:
        before_send()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        step.mark(manifest, "sending")
        unanswered = False
        try:
            made = step.send()
        except AmbiguousRequest as exc:
            warn(f"{exc}; looking for the {step.what} by its marker {step.marker}")
            made, unanswered = {}, exc.unanswered
        except ApiError:
            step.mark(manifest, "pending")  # a definite refusal: nothing was stored
            raise
        if not isinstance(made, dict) or not made.get("id"):
            found = look_up(step)  # a reply without an id: the object may exist all the same
            if found:
                step.adopt(found)
                return True
            if unanswered:  # sent whole, never answered: the server may still be making it
                raise ServiceError(
                    f"shard {step.shard.index}: the server received the whole {step.what} but never answered "
                    f"and no {step.what} marked {step.marker} is listed yet (it may still be storing it); it "
                    "was not sent again, so that it cannot exist twice. Run the same command again in a few "
                    "minutes: it looks the object up by its marker before sending anything"
                )
            if attempt < MAX_ATTEMPTS:
                continue
            raise ServiceError(
                f"shard {step.shard.index}: the server's replies to the {step.what} left its outcome unknown "
                f"and no {step.what} marked {step.marker} can be found; nothing was recorded as sent. Run "
                "the same command again later: it looks the object up again before sending anything"
            )
        step.adopt(made)
        return True
    raise ServiceError("unreachable")  # pragma: no cover


def upload_step(client: ApiClient, manifest: Manifest, shard: Shard) -> Step:
    name = str(shard.upload_filename)

    def send() -> dict[str, Any]:
        info(f"shard {shard.index}: uploading {shard.path} ({shard.requests} requests)")
        return upload_file(client, str(shard.path), name)

    def adopt(file_obj: dict[str, Any]) -> None:
        shard.file_id = str(file_obj["id"])
        shard.upload_state = "done"
        manifest.save()

    return Step(shard, "upload", name, send, lambda: find_file_by_name(client, name), adopt)


def batch_metadata(manifest: Manifest, shard: Shard) -> dict[str, str]:
    """The user's metadata plus the markers naming the shard, the job and the round."""
    return {
        **manifest.metadata,
        MARKER_KEY: str(shard.marker),
        JOB_KEY: manifest.job_id,
        ROUND_KEY: str(shard.round),
    }


def round_window(manifest: Manifest, number: int | None) -> str:
    """The completion window of a round's batches: the round's own (recorded when --resubmit was given
    --window), else the job's."""
    round_ = next((r for r in manifest.rounds if r.number == number), None)
    window = round_.extra.get("window") if round_ is not None else None
    if window not in COMPLETION_WINDOWS:
        window = manifest.window if manifest.window in COMPLETION_WINDOWS else DEFAULT_WINDOW
    return str(window)


def create_step(client: ApiClient, manifest: Manifest, shard: Shard) -> Step:
    marker = str(shard.marker)
    window = round_window(manifest, shard.round)

    def send() -> dict[str, Any]:
        metadata = batch_metadata(manifest, shard)
        return create_batch(client, str(shard.file_id), str(shard.endpoint), window, metadata)

    def adopt(batch: dict[str, Any]) -> None:
        record_batch(shard, batch)
        shard.create_state = "done"
        manifest.save()
        info(f"shard {shard.index}: batch {shard.batch_id} ({shard.status})")

    return Step(shard, "batch", marker, send, lambda: find_batch_by_marker(client, marker), adopt)


# --------------------------------------------------------------------------- sending a round


class CostLimit(Exception):
    """The server's estimate is over ``--max-cost``: files uploaded, no batch created. ``tokens``: the input
    tokens the server's estimate counts and the local estimate's (None where unknown)."""

    def __init__(self, total: Decimal, tokens: dict[str, int | None] | None = None) -> None:
        super().__init__(str(total))
        self.total = total
        self.tokens = tokens or {"server": None, "local": None}


def send_shards(client: ApiClient, manifest: Manifest, shards: list[Shard], options: Options) -> int:
    """Upload and create every shard exactly once; returns the batches created (or adopted) now.

    Without a cost guard each batch is created right after its upload (pipelined). With one, every
    shard is uploaded and estimated first, and nothing is created when the total exceeds it.
    """
    for shard in shards:  # every shard still to upload is there and unchanged, before any upload
        if shard.upload_state == "pending":
            complete_plan(manifest, shard)
            check_shard_file(manifest, shard, validate=options.validate)
    guarded = options.max_cost is not None and all(s.create_state == "pending" for s in shards)
    created = 0
    if guarded:
        for _ in uploaded(client, manifest, shards, options.upload_workers):
            pass
        total = estimate_cost(client, manifest, shards)
        assert options.max_cost is not None
        if total > options.max_cost:
            counts = [n for s in shards if isinstance(n := (s.cost_estimate or {}).get("input_tokens"), int)]
            server = sum(counts) if len(counts) == len(shards) else None
            raise CostLimit(total, {"server": server, "local": local_tokens(shards)})
    for shard in uploaded(client, manifest, shards, options.upload_workers):
        with naming_shard(manifest, shard), stopping_uploads(client):
            created += ensure_once(manifest, create_step(client, manifest, shard))
    return created


@contextlib.contextmanager
def naming_shard(manifest: Manifest, shard: Shard) -> Iterator[None]:
    """An error while sending a shard names it and the job in its JSON: the server numbers lines from the
    shard's first line, and the batches already created keep running under that manifest."""
    try:
        yield
    except CliError as exc:
        exc.details.setdefault("shard", shard.path)
        exc.details.setdefault("manifest", str(manifest.path.resolve()))
        _physical_line(exc, shard.path)
        raise


_SERVER_LINE = re.compile(r"(?:^|: )Line (\d+)\b")


def _physical_line(exc: CliError, path: str | None) -> None:
    """The server numbers non-blank lines (blank ones skipped); a file with blank lines puts its "Line N"
    elsewhere. Say which physical line and custom_id that is (``error.line``, ``error.custom_id``)."""
    found = _SERVER_LINE.search(str(getattr(exc, "server_message", "")))
    if found is None or not path or "line" in exc.details:
        return
    wanted = int(found.group(1))
    at = _nth_request_line(path, wanted)
    if at is None:
        return
    number, raw = at
    try:
        custom_id = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError, RecursionError):
        custom_id = None
    exc.details.update(line=number, custom_id=custom_id)
    if number != wanted:
        where = f"line {number} of {path}" + (
            f", custom_id {custom_id!r}" if isinstance(custom_id, str) else ""
        )
        exc.message += f" (the server's line {wanted} counts only non-blank lines: it is {where})"


def _nth_request_line(path: str, wanted: int) -> tuple[int, bytes] | None:
    """(physical line number, text) of the ``wanted``-th non-blank line of a file, or None."""
    count = 0
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                count += bool(raw.strip())
                if count == wanted:
                    return number, raw
    except OSError:
        return None
    return None


@contextlib.contextmanager
def stopping_uploads(client: ApiClient) -> Iterator[None]:
    """A Ctrl-C in the block stops the uploads running in threads at their next piece (a re-run looks each
    up by its marker), so that closing their pool, which waits for them, does not wait for whole files."""
    try:
        yield
    except KeyboardInterrupt:
        client.interrupted.set()
        raise


def _upload(client: ApiClient, manifest: Manifest, shard: Shard) -> Shard:
    resumed = shard.upload_state == "sending"  # its file is checked only if it must be sent again
    check = (lambda: check_shard_file(manifest, shard)) if resumed else None
    with naming_shard(manifest, shard):
        ensure_once(manifest, upload_step(client, manifest, shard), before_send=check)
    return shard


def uploaded(client: ApiClient, manifest: Manifest, shards: list[Shard], workers: int) -> Iterator[Shard]:
    """Yield each shard once its file is uploaded, at most ``workers`` uploads at a time, so that its batch
    can be created while the next files upload. Each upload is its own exactly-once step."""
    todo = [s for s in shards if s.upload_state != "done"]
    yield from (s for s in shards if s.upload_state == "done")
    if workers <= 1 or len(todo) <= 1:
        for shard in todo:
            yield _upload(client, manifest, shard)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload") as pool:
        futures = [pool.submit(_upload, client, manifest, shard) for shard in todo]
        try:
            with stopping_uploads(client):
                for future in as_done(futures):
                    yield future.result()
        finally:
            for future in futures:
                future.cancel()  # a failure: start no further upload (running ones finish and are recorded)


def estimate_cost(client: ApiClient, manifest: Manifest, shards: list[Shard]) -> Decimal:
    total = Decimal(0)
    for shard in shards:
        window = round_window(manifest, shard.round)
        cached = shard.cost_estimate
        if not (isinstance(cached, dict) and cached.get("window") == window):
            estimate = cost_estimate(client, str(shard.file_id), window)
            cached = {"window": window, "usd": str(decimal_cost(estimate.get("total_estimated_cost")))}
            tokens = estimate.get("total_estimated_input_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                cached["input_tokens"] = tokens
            shard.cost_estimate = cached
            manifest.save()
        total += Decimal(cached["usd"])
    return total


def local_tokens(shards: list[Shard]) -> int | None:
    """The shards' input tokens as validation counts them (prompt text / 4, an image by its pixel size),
    recalled for content validated before, else counted from the file; None when a file cannot be read."""
    total = 0
    for shard in shards:
        path = str(shard.path)
        try:
            report = recall_valid(path) or validate_file(
                path, max_bytes=sys.maxsize, max_requests=sys.maxsize
            )
        except OSError:
            return None
        tokens = (report.get("stats") or {}).get("estimated_input_tokens")
        if not isinstance(tokens, int):
            return None
        total += tokens
    return total


def cost_refusal(manifest: Manifest, shards: list[Shard], options: Options, exc: CostLimit) -> dict[str, Any]:
    """The JSON of a round stopped by ``--max-cost``: files uploaded, no batch created; the server's
    estimate beside the local count of input tokens (the server counts 4 body bytes as a token, so its
    figure for base64 images is far above what the model counts)."""
    assert options.max_cost is not None
    server, local = exc.tokens["server"], exc.tokens["local"]
    counted = f" (for {server:,} input tokens)" if server is not None else ""
    message = (
        f"the server's cost estimate ${usd(exc.total)}{counted} exceeds --max-cost ${usd(options.max_cost)}; no "
        "batch was created (files are uploaded; re-run with a higher --max-cost to go ahead)"
    )
    if local is not None:
        message += (
            f". The local estimate counts {local:,} input tokens (prompt text / 4, images by pixel size)"
        )
        if server and local * 2 < server:
            message += (
                f", {server / max(local, 1):,.0f}x fewer: the server counts every 4 bytes of a request body "
                "(JSON and base64 images included) as a token, so its figure can be far above the real price"
            )
    info(f"error: {message}")
    result = summary(manifest, shards, created=0)
    result.update(ok=False, error={"type": "cost_limit", "message": message})
    result.update(estimated_cost_usd=usd(exc.total), max_cost_usd=usd(options.max_cost))
    result["estimated_input_tokens"] = {"server": server, "local": local}
    return result


def usd(amount: Decimal) -> str:
    """A plain decimal string (never 1E-7)."""
    return format(amount.normalize(), "f")


# --------------------------------------------------------------------------- output


def summary(manifest: Manifest, shards: list[Shard], *, created: int) -> dict[str, Any]:
    """What submit prints: the manifest (absolute) and each batch of the given shards."""
    batches = [
        {
            "batch_id": s.batch_id,
            "input_file_id": s.file_id,
            "shard": s.path,
            "round": s.round,
            "requests": s.requests,
            "endpoint": s.endpoint,
            "status": s.status or ("not created" if s.create_state != "done" else None),
        }
        for s in shards
    ]
    existing = sum(1 for s in shards if s.create_state == "done") - created
    requests = sum(s.requests or 0 for s in shards)
    number = shards[0].round if shards else manifest.last_round.number
    check = check_command(manifest) if created + existing else None
    cli.summary(
        f"round {number}: {created} batch(es) created, {existing} already there, {requests:,} requests"
        + (f"; check later: {check}" if check else "")
    )
    return {
        "ok": True,
        "manifest": str(manifest.path.resolve()),
        "job_id": manifest.job_id,
        "base_url": manifest.base_url or None,
        "round": number,
        "created": created,
        "existing": existing,
        "window": round_window(manifest, number),
        "batches": batches,
        **({"next": check} if check else {}),
    }


def with_notes(result: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The result with the run's warnings in its ``warnings`` member (when there are any)."""
    if notes:
        result["warnings"] = [*result.get("warnings", []), *notes]
    return result
