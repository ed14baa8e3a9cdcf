"""What fetch asks the server besides the downloads: the real cost, and deleting the job's files.

``cost`` comes from ``GET /batches/{id}/analytics`` (a Doubleword extension; costs are decimal strings, all
zeros until the server's aggregation has run), summed per job with :class:`~decimal.Decimal` so nothing is
lost to floats. A server without the route (OpenAI and most compatible servers) gives no cost, not an error.

``--delete-remote`` deletes every input, output and error file of the job on the server, for privacy and
storage, but only once every result is on disk and no batch runs: deleting earlier would lose answers
(deleting an input file also cancels the batches still running on it).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from doubleword.cli import info, warn
from doubleword.client import ApiClient
from doubleword.errors import ApiError, ServiceError
from doubleword.manifest import Shard

_TOKEN_KEYS = ("total_prompt_tokens", "total_completion_tokens", "total_reasoning_tokens", "total_tokens")


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def early_analytics(client: ApiClient, shards: list[Shard]) -> dict[str, Any]:
    """Each batch's analytics, asked beside other work (fetch asks while it writes the results);
    :func:`job_cost` uses one only if it already counts every request of its batch."""
    early: dict[str, Any] = {}
    for shard in shards:
        if isinstance(shard.extra.get("analytics"), dict):
            continue  # final figures kept from an earlier run
        try:
            early[str(shard.batch_id)] = _analytics(client, str(shard.batch_id))
        except (ApiError, ServiceError):
            pass  # asked again at the end, where the error counts
    return early


def _analytics(client: ApiClient, batch_id: str) -> Any:
    """The batch's analytics; None when the server has none (not an error)."""
    try:
        return client.get_json(f"batches/{quote(batch_id, safe='')}/analytics")
    except (ApiError, ServiceError) as exc:
        if getattr(exc, "status", None) in (400, 404, 405, 501):
            return None  # no analytics on this server (or for this batch)
        raise


def job_cost(
    client: ApiClient, shards: list[Shard], settled: set[str], early: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """``{"total", "list_total", "tokens": {...}, "per_batch": [...]}`` from the server, or None.

    A batch in ``settled`` (finished and downloaded) whose analytics were already complete (they count
    every request of the batch) is not asked again: its figures are kept in its shard (``analytics``).
    ``early`` (:func:`early_analytics`) answers for a batch when complete."""
    per_batch = []
    total, listed = Decimal(0), Decimal(0)
    tokens = dict.fromkeys(_TOKEN_KEYS, 0)
    early = early or {}
    for shard in shards:
        batch_id = str(shard.batch_id)
        requested = (shard.request_counts or {}).get("total")
        analytics = shard.extra.get("analytics") if batch_id in settled else None
        if not isinstance(analytics, dict):
            if batch_id in early and early[batch_id] is None:
                continue  # the server has no analytics for it
            analytics = early.get(batch_id)
            if not _counts_all(analytics, requested) or batch_id not in settled:
                analytics = _analytics(client, batch_id)
            if batch_id in settled and _counts_all(analytics, requested):
                shard.extra["analytics"] = analytics  # kept in the manifest, as read
        if not isinstance(analytics, dict):
            continue
        cost, list_cost = _decimal(analytics.get("total_cost")), _decimal(analytics.get("total_list_cost"))
        entry: dict[str, Any] = {
            "batch_id": batch_id,
            "total_cost": None if cost is None else str(cost),
            "total_list_cost": None if list_cost is None else str(list_cost),
        }
        for key in _TOKEN_KEYS:
            value = analytics.get(key)
            if isinstance(value, int):
                entry[key] = value
                tokens[key] += value
        total += cost or 0
        listed += list_cost or 0
        per_batch.append(entry)
    if not per_batch:
        return None
    return {
        "total": str(total),
        "list_total": str(listed),
        "currency": "USD",
        "tokens": tokens,
        "per_batch": per_batch,
    }


def _counts_all(analytics: Any, requested: Any) -> bool:
    return isinstance(analytics, dict) and analytics.get("total_requests") == requested


def delete_remote(client: ApiClient, shards: list[Shard], finished: bool) -> dict[str, Any]:
    """Delete the job's files on the server when ``finished`` (every result on disk, nothing running)."""
    if not finished:
        reason = (
            "not every batch has finished and been downloaded to its end; nothing was deleted "
            "(run again with --delete-remote once fetch reports finished: true)"
        )
        warn(f"--delete-remote refused: {reason}")
        return {"done": False, "reason": reason, "deleted": [], "already_gone": []}
    deleted, gone = [], []
    for shard in shards:
        for key in ("file_id", "output_file_id", "error_file_id"):
            file_id = getattr(shard, key)
            if not file_id or file_id in deleted or file_id in gone:
                continue
            try:
                client.request("DELETE", f"files/{quote(str(file_id), safe='')}").close()
                deleted.append(file_id)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                gone.append(file_id)
    info(f"deleted {len(deleted)} files of the job on the server ({len(gone)} were already gone)")
    return {"done": True, "reason": None, "deleted": deleted, "already_gone": gone}
