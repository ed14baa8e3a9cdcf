"""Typed calls to the files and batches routes, on top of the one HTTP client.

Every function takes an :class:`http_client.ApiClient`. Creating calls (upload, batch creation) come
with a lookup by a unique marker, so a caller that got :class:`http_client.AmbiguousRequest` (or that
crashed between sending and recording) can adopt the object instead of creating a second one
(doubleword-api.md, client pitfall 9).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests

from doubleword.cli import warn
from doubleword.client import ApiClient, upload_reply_wait
from doubleword.errors import AmbiguousRequest, ServiceError

MARKER_KEY = "dwb_marker"  # batch metadata: the shard's unique marker (exactly-once lookups)
JOB_KEY = "dwb_job"  # batch metadata: the job (manifest) the batch belongs to
ROUND_KEY = "dwb_round"  # batch metadata: the round of the job
RESERVED_KEYS = (MARKER_KEY, JOB_KEY, ROUND_KEY)
LIST_PAGE = 100  # the server clamps to 1..101; the docs promise 100
MAX_LIST_PAGES = 500  # --all stops after this many pages (50,000 batches) of a list that never ends
MAX_CONTENT_PAGE = 100
UPLOAD_LOOK_PAUSE = 2.0  # seconds between lookups of an upload the server has not answered


def _id(value: str) -> str:
    """Ids are opaque strings (OpenAI prefixes them); quote them for the path."""
    return quote(str(value), safe="")


# --------------------------------------------------------------------------- files


def upload_file(client: ApiClient, path: str | os.PathLike[str], filename: str) -> dict[str, Any]:
    """Upload a JSONL file with ``purpose=batch`` (streamed from disk). A creating call.

    When the whole file was sent but no reply came within the (size-scaled) wait, the server may still be
    storing it: it is looked for by its unique name for as long again before the upload is called
    ambiguous, so a slow server does not get the same file twice."""
    try:
        return client.upload_file(path, filename, {"purpose": "batch"})
    except AmbiguousRequest as exc:
        if not exc.unanswered:
            raise
        found = _wait_for_upload(client, filename, upload_reply_wait(os.path.getsize(path)))
        if found is None:
            raise
        return found


def _wait_for_upload(client: ApiClient, filename: str, patience: float) -> dict[str, Any] | None:
    """The file named ``filename`` once the server lists it, looking for up to ``patience`` seconds."""
    until = time.monotonic() + patience
    if client.deadline is not None:
        until = min(until, client.deadline - 1.0)
    warn(f"the server has not answered the upload of {filename}; looking for it for up to {patience:.0f}s")
    while True:
        found = find_file_by_name(client, filename)
        if found is not None or time.monotonic() >= until:
            return found
        time.sleep(max(0.0, min(UPLOAD_LOOK_PAUSE, until - time.monotonic())))


def find_file_by_name(client: ApiClient, filename: str) -> dict[str, Any] | None:
    """The uploaded file whose filename is exactly ``filename`` (a unique marker), or None."""
    page = client.get_json("files", params={"search": filename, "limit": LIST_PAGE})
    matches = [f for f in page.get("data") or [] if f.get("filename") == filename]
    return _oldest(matches, f"uploads named {filename}")


def get_file(client: ApiClient, file_id: str) -> dict[str, Any]:
    return _the_one_asked(client.get_json(f"files/{_id(file_id)}"), file_id, "file")


def cost_estimate(client: ApiClient, file_id: str, window: str) -> dict[str, Any]:
    """The server's cost estimate for an uploaded file (Doubleword extension)."""
    return client.get_json(f"files/{_id(file_id)}/cost-estimate", params={"completion_window": window})


def decimal_cost(value: Any) -> Decimal:
    """A cost as sent by the server (a decimal string, sometimes a number) as a Decimal."""
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def content_response(
    client: ApiClient, file_id: str, skip: int, limit: int | None = None
) -> requests.Response:
    """An open, streamed response for a file's content from line ``skip`` (never ``offset``)."""
    params: dict[str, Any] = {"skip": max(0, int(skip))}
    if limit:
        params["limit"] = max(1, min(MAX_CONTENT_PAGE, int(limit)))
    return client.request("GET", f"files/{_id(file_id)}/content", params=params, stream=True)


def download_file(client: ApiClient, file_id: str, dest: str | os.PathLike[str]) -> int:
    """Stream a whole file's content to ``dest`` (atomically); returns the byte count."""
    from doubleword.files import atomic_writer

    response = client.request("GET", f"files/{_id(file_id)}/content", stream=True)
    total = 0
    try:
        with atomic_writer(dest) as handle:
            for chunk in response.iter_content(chunk_size=1 << 16):
                handle.write(chunk)
                total += len(chunk)
    except (requests.exceptions.RequestException, OSError) as exc:
        raise ServiceError(f"downloading file {file_id} failed: {exc}")
    finally:
        response.close()
    return total


# --------------------------------------------------------------------------- batches


def create_batch(
    client: ApiClient, file_id: str, endpoint: str, window: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """Create one batch. A creating call: AmbiguousRequest means look it up by its marker."""
    body = {
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": window,
        "metadata": metadata,
    }
    return client.post_json("batches", body, creates=True)


def find_batch_by_marker(client: ApiClient, marker: str) -> dict[str, Any] | None:
    """The batch whose metadata carries ``dwb_marker=<marker>``, or None."""
    page = client.get_json("batches", params={"search": marker, "limit": LIST_PAGE})
    matches = [
        b for b in page.get("data") or [] if str((b.get("metadata") or {}).get(MARKER_KEY, "")) == marker
    ]
    return _oldest(matches, f"batches with marker {marker}")


def _oldest(matches: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    """The object to adopt after an ambiguous create: the first one made (normally the only one)."""
    if len(matches) > 1:
        warn(f"{len(matches)} {what} exist; adopting the oldest")
    if not matches:
        return None
    return min(matches, key=lambda o: (o.get("created_at") or 0, str(o.get("id"))))


def get_batch(client: ApiClient, batch_id: str) -> dict[str, Any]:
    return never_to_run(_the_one_asked(client.get_json(f"batches/{_id(batch_id)}"), batch_id, "batch"))


def never_to_run(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch cancelled while it was still validating is never populated: Doubleword reports it
    ``cancelling`` for good (section 6 of the reference), so nothing of it will ever run. It is taken as
    ``cancelled`` (terminal), or its job could never finish: poll and fetch would say 7 and --resubmit
    refuse for ever. A ``cancelling`` batch whose requests were populated (``in_progress_at``) waits."""
    cancelled = batch.get("cancelled_at") or batch.get("cancelling_at")
    if batch.get("status") == "cancelling" and cancelled and not batch.get("in_progress_at"):
        return {**batch, "status": "cancelled"}
    return batch


def _the_one_asked(body: dict[str, Any], wanted: str, kind: str) -> dict[str, Any]:
    """The object asked for, never another one (a cache that mixes up paths): else exit 5."""
    got = body.get("id")
    if got is not None and str(got) != str(wanted):
        raise ServiceError(f"asked for {kind} {wanted}, the server sent {kind} {got}; not using it")
    return body


def cancel_batch(client: ApiClient, batch_id: str) -> dict[str, Any]:
    return client.post_json(f"batches/{_id(batch_id)}/cancel")


def iter_batches(
    client: ApiClient, *, limit: int = 20, status: str | None = None, all_pages: bool = False
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Yield ``(batch, has_more_after_this_page)``, following ``after`` until ``limit`` (or the end).

    An unknown ``after`` silently restarts from the first page, so a page that repeats ids already
    seen ends the walk (client pitfall 17), and so does a list still saying ``has_more`` after
    MAX_LIST_PAGES pages.
    """
    seen: set[str] = set()
    after: str | None = None
    remaining = None if all_pages else max(1, limit)
    for _ in range(MAX_LIST_PAGES):
        page_size = LIST_PAGE if all_pages else min(LIST_PAGE, remaining or LIST_PAGE)
        params: dict[str, Any] = {"limit": page_size}
        if status:
            params["status"] = status
        if after:
            params["after"] = after
        page = client.get_json("batches", params=params)
        data = page.get("data") or []
        fresh = [b for b in data if str(b.get("id")) not in seen]
        if data and not fresh:
            warn("the server repeated a page of batches; stopping the listing there")
            return
        has_more = bool(page.get("has_more"))
        for batch in fresh:
            seen.add(str(batch.get("id")))
            yield batch, has_more
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    return
        if not has_more or not data:
            return
        after = str(page.get("last_id") or data[-1].get("id"))
    warn(f"the server still says has_more after {MAX_LIST_PAGES} pages; stopping the listing there")
