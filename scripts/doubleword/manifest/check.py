"""The one check of a manifest's JSON, where it is loaded: what is wrong with it, or None.

A manifest is the scripts' memory of what was sent; a damaged or hand-edited one must be a clear error,
never a reason to send anything again.
"""

from __future__ import annotations

from typing import Any

FORMAT = "doubleword-batches/manifest"
VERSION = 2
READABLE_VERSIONS = (1, 2)
STATES = ("pending", "sending", "done")


def problem(data: Any) -> str | None:
    """What is wrong with a loaded manifest, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"'format' is not {FORMAT!r}"
    if data.get("version") not in READABLE_VERSIONS:
        return f"unsupported version {data.get('version')!r} (this tool reads versions 1 and 2)"
    shards = data.get("shards")
    if not isinstance(shards, list):
        return "'shards' is not a list"
    if not isinstance(data.get("metadata", {}), dict):
        return "'metadata' is not an object"
    if data.get("written_at") is not None and not isinstance(data["written_at"], str):
        return "'written_at' is not a path"
    if data.get("base_url") is not None and not isinstance(data["base_url"], str):
        return "'base_url' is not a string"
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        return "'inputs' is not a list of objects"
    if inputs and not shards:
        return "'shards' is empty although the manifest has inputs"
    numbers = [1]
    if data["version"] >= 2:
        rounds = data.get("rounds")
        if not isinstance(rounds, list) or not rounds or not all(isinstance(r, dict) for r in rounds):
            return "'rounds' is not a list of objects"
        numbers = [r.get("number") for r in rounds]
        if numbers != list(range(1, len(rounds) + 1)):
            return "'rounds' are not numbered 1, 2, ..."
        for r in rounds:
            if r.get("statuses") is not None and not isinstance(r["statuses"], list):
                return f"rounds[{r['number'] - 1}].statuses is not a list"
            if not isinstance(r.get("adjust") or {}, dict):
                return f"rounds[{r['number'] - 1}].adjust is not an object"
            if not isinstance(r.get("left_behind") or 0, int):
                return f"rounds[{r['number'] - 1}].left_behind is not a number"
    for i, shard in enumerate(shards):
        problem = _shard_problem(f"shards[{i}]", shard, data["version"], numbers)
        if problem:
            return f"{problem}{_which(shard)}"
    return _fetch_problem(data.get("fetch"))


def never_sent(shard: dict[str, Any]) -> bool:
    """Nothing of this shard can be on the server: no upload or batch creation was ever sent (a missing
    state counts as ``pending``). Such a shard may lack any field planning had not filled in (an older
    version recorded a file it then refused without an endpoint); submit fills them in before sending."""
    return (
        not shard.get("file_id")
        and not shard.get("batch_id")
        and shard.get("upload_state") in (None, "pending")
        and shard.get("create_state") in (None, "pending")
    )


def _which(shard: Any) -> str:
    """The shard's file and batch, so that the user can find it in the manifest and on the server."""
    if not isinstance(shard, dict):
        return ""
    known = [f"{key} {shard[key]}" for key in ("path", "batch_id") if isinstance(shard.get(key), str)]
    return f"; that shard has {' and '.join(known)}" if known else ""


def batch_ids_in(data: Any) -> list[str]:
    """The batch ids a (perhaps damaged) manifest records, for the advice of its error."""
    shards = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(shards, list):
        return []
    return [s["batch_id"] for s in shards if isinstance(s, dict) and isinstance(s.get("batch_id"), str)]


def _shard_problem(where: str, shard: Any, version: int, rounds: list[Any]) -> str | None:
    if not isinstance(shard, dict):
        return f"{where} is not an object"
    if not isinstance(shard.get("index"), int) or isinstance(shard.get("index"), bool):
        return f"{where}.index is not a number"
    if version >= 2 and shard.get("round") not in rounds:
        return f"{where}.round is not one of the manifest's rounds"
    if not isinstance(shard.get("times", {}), dict):
        return f"{where}.times is not an object"
    unsent = never_sent(shard)
    needed = []
    if shard.get("upload_state") != "done" and not unsent:
        needed += ["path", "sha256", "upload_filename"]
    if shard.get("create_state") != "done" and not unsent:
        needed += ["marker", "endpoint"]
    for key in needed:
        if not isinstance(shard.get(key), str) or not shard[key]:
            return f"{where}.{key} is missing (needed to finish submitting this shard)"
    for key in ("upload_state", "create_state"):
        if shard.get(key) not in STATES and not (unsent and shard.get(key) is None):
            return f"{where}.{key} is {shard.get(key)!r}, expected one of {', '.join(STATES)}"
    for key in (
        "path",
        "rows_path",
        "file_id",
        "batch_id",
        "upload_filename",
        "marker",
        "status",
        "endpoint",
    ):
        if shard.get(key) is not None and not isinstance(shard[key], str):
            return f"{where}.{key} is not a string"
    if shard.get("create_state") == "done" and shard.get("batch_id") is None:
        return f"{where} says its batch was created but has no batch_id"
    if shard.get("upload_state") == "done" and shard.get("file_id") is None:
        return f"{where} says it was uploaded but has no file_id"
    # the other way round, a send would make a second file or batch
    if shard.get("upload_state") == "pending" and shard.get("file_id"):
        return f"{where} says it was never uploaded but has a file_id"
    if shard.get("create_state") == "pending" and shard.get("batch_id"):
        return f"{where} says its batch was never created but has a batch_id"
    downloads = shard.get("downloads", {})
    if not isinstance(downloads, dict):
        return f"{where}.downloads is not an object"
    for kind, cursor in downloads.items():
        if not isinstance(cursor, dict) or not isinstance(cursor.get("skip", 0), int):
            return f"{where}.downloads.{kind} is not a valid cursor"
        if cursor.get("skip", 0) < 0:
            return f"{where}.downloads.{kind}.skip is negative"
    return None


def _fetch_problem(fetch: Any) -> str | None:
    if fetch is None:
        return None
    if not isinstance(fetch, dict) or not isinstance(fetch.get("files", {}), dict):
        return "'fetch' is not an object"
    if not isinstance(fetch.get("out_dir"), str) or not fetch["out_dir"]:
        return "fetch.out_dir is not a path"
    for kind, info in fetch.get("files", {}).items():
        if not isinstance(info, dict) or not isinstance(info.get("bytes", 0), int) or info["bytes"] < 0:
            return f"fetch.files.{kind} has no valid byte count"
    return None
