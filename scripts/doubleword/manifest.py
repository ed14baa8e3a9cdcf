"""The manifest: one JSON file that ties every input shard to its upload, batch and downloads.

It is the scripts' memory between runs, written atomically after every state change, so a crash at
any point leaves a manifest from which the next run carries on (nothing created twice, downloads
resumed). Layout (version 1)::

    {"format": "doubleword-batches/manifest", "version": 1, "created_at": ..., "updated_at": ...,
     "inputs": [{"path", "sha256", "bytes"}], "window": "24h", "metadata": {...},
     "shards": [{"index", "source", "path", "sha256", "requests", "bytes", "endpoint",
                 "upload_filename", "upload_state", "file_id",        # pending | sending | done
                 "marker", "create_state", "batch_id",                 # pending | sending | done
                 "status", "request_counts", "output_file_id", "error_file_id", "times": {...},
                 "downloads": {"output": {"file_id", "skip", "complete"}, "errors": {...}},
                 "final_counts": {...}}],
     "fetch": {"out_dir", "files": {"output": {"path", "bytes", "lines"}, "errors": {...}}}}

``*_state = "sending"`` means the request may have reached the server: the next run looks the object
up by its marker (upload filename / ``dwb_marker`` metadata) before sending again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doubleword.cli import warn
from doubleword.errors import InputError
from doubleword.files import atomic_write_json, read_json_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so concurrent runs on one manifest are unguarded
    fcntl = None  # type: ignore[assignment]

FORMAT = "doubleword-batches/manifest"
VERSION = 1
STATES = ("pending", "sending", "done")
DOWNLOAD_KINDS = ("output", "errors")


def default_manifest_path(first_input: str | os.PathLike[str]) -> Path:
    """``<first input>.manifest.json`` (SPEC section 4)."""
    return Path(f"{first_input}.manifest.json")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def new_shard(index: int, **fields: Any) -> dict[str, Any]:
    """A shard record with every field present (None until known)."""
    shard: dict[str, Any] = {
        "index": index,
        "source": None,
        "path": None,
        "sha256": None,
        "requests": None,
        "bytes": None,
        "endpoint": None,
        "upload_filename": None,
        "upload_state": "pending",
        "file_id": None,
        "marker": None,
        "create_state": "pending",
        "batch_id": None,
        "status": None,
        "request_counts": None,
        "output_file_id": None,
        "error_file_id": None,
        "times": {},
        "downloads": {},
        "final_counts": None,
    }
    shard.update(fields)
    return shard


class Manifest:
    """A manifest file in memory; :meth:`save` writes it atomically."""

    def __init__(self, path: str | os.PathLike[str], data: dict[str, Any]) -> None:
        self.path = Path(path)
        self.data = data

    # -- construction

    @classmethod
    def new(cls, path: str | os.PathLike[str], **fields: Any) -> Manifest:
        now = int(time.time())
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": now,
            "updated_at": now,
            "inputs": [],
            "window": None,
            "metadata": {},
            "shards": [],
            "fetch": None,
        }
        data.update(fields)
        return cls(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and check a manifest; a damaged or hand-edited one is a clear input error."""
        data = read_json_file(path, "manifest")
        problem = _problem(data)
        if problem:
            raise InputError(
                f"manifest {path} is damaged or was edited by hand ({problem}); restore it from a "
                "backup, or start afresh with submit.py --force (or another --manifest path)"
            )
        return cls(path, data)

    @classmethod
    def exists(cls, path: str | os.PathLike[str]) -> bool:
        return Path(path).is_file()

    # -- access

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.data["shards"]

    @property
    def dir(self) -> Path:
        return self.path.resolve().parent

    def batch_ids(self) -> list[str]:
        return [s["batch_id"] for s in self.shards if s.get("batch_id")]

    def shard_for_batch(self, batch_id: str) -> dict[str, Any] | None:
        return next((s for s in self.shards if s.get("batch_id") == batch_id), None)

    def save(self) -> None:
        with exclusive_lock(self._lock_path):
            self._write()

    def record_batches(self, batches: list[dict[str, Any]]) -> None:
        """Record what the server says about these batches, keeping what other runs saved meanwhile.

        poll and cancel may run while fetch_results is downloading on the same manifest: they re-read
        the file under the lock and change only the batch fields, so fetch's cursors are never lost.
        """
        try:
            with exclusive_lock(self._lock_path):
                if self.path.is_file():
                    self.data = Manifest.load(self.path).data
                for batch in batches:
                    shard = self.shard_for_batch(batch.get("id", ""))
                    if shard is not None:
                        record_batch(shard, batch)
                self._write()
        except OSError as exc:  # the status is still worth reporting; the manifest is only a cache of it
            warn(f"could not update the manifest {self.path}: {exc.strerror or exc}; its status may be stale")

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    def _write(self) -> None:
        self.data["updated_at"] = int(time.time())
        atomic_write_json(self.path, self.data)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an advisory lock on ``path`` (created if needed); yields False when ``wait`` is False and
    another process holds it. Locks die with their process, so a killed run never blocks the next."""
    if fcntl is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} (cannot create files in {path.parent})", str(path.parent))
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def record_batch(shard: dict[str, Any], batch: dict[str, Any]) -> None:
    """Copy what the server says about a batch into its shard record."""
    shard["batch_id"] = batch.get("id") or shard.get("batch_id")
    shard["status"] = batch.get("status")
    shard["request_counts"] = batch.get("request_counts")
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            shard[key] = batch[key]
    if batch.get("input_file_id") and not shard.get("file_id"):
        shard["file_id"] = batch["input_file_id"]
    if batch.get("endpoint") and not shard.get("endpoint"):
        shard["endpoint"] = batch["endpoint"]
    times = shard.setdefault("times", {})
    for key, value in batch.items():
        if key.endswith("_at") and isinstance(value, (int, float)):
            times[key] = value
    shard["checked_at"] = int(time.time())


def _problem(data: Any) -> str | None:
    """What is wrong with a loaded manifest, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"'format' is not {FORMAT!r}"
    if data.get("version") != VERSION:
        return f"unsupported version {data.get('version')!r} (this tool reads version {VERSION})"
    shards = data.get("shards")
    if not isinstance(shards, list):
        return "'shards' is not a list"
    if not isinstance(data.get("metadata", {}), dict):
        return "'metadata' is not an object"
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        return "'inputs' is not a list of objects"
    if inputs and not shards:
        return "'shards' is empty although the manifest has inputs"
    for i, shard in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(shard, dict):
            return f"{where} is not an object"
        if not isinstance(shard.get("index"), int) or isinstance(shard.get("index"), bool):
            return f"{where}.index is not a number"
        if not isinstance(shard.get("times", {}), dict):
            return f"{where}.times is not an object"
        needed = []
        if shard.get("upload_state") != "done":
            needed += ["path", "sha256", "upload_filename"]
        if shard.get("create_state") != "done":
            needed += ["marker", "endpoint"]
        for key in needed:
            if not isinstance(shard.get(key), str) or not shard[key]:
                return f"{where}.{key} is missing (needed to finish submitting this shard)"
        for key in ("upload_state", "create_state"):
            if shard.get(key) not in STATES:
                return f"{where}.{key} is {shard.get(key)!r}, expected one of {', '.join(STATES)}"
        for key in ("path", "file_id", "batch_id", "upload_filename", "marker", "status", "endpoint"):
            if shard.get(key) is not None and not isinstance(shard[key], str):
                return f"{where}.{key} is not a string"
        if shard.get("create_state") == "done" and shard.get("batch_id") is None:
            return f"{where} says its batch was created but has no batch_id"
        if shard.get("upload_state") == "done" and shard.get("file_id") is None:
            return f"{where} says it was uploaded but has no file_id"
        downloads = shard.get("downloads", {})
        if not isinstance(downloads, dict):
            return f"{where}.downloads is not an object"
        for kind, cursor in downloads.items():
            if not isinstance(cursor, dict) or not isinstance(cursor.get("skip", 0), int):
                return f"{where}.downloads.{kind} is not a valid cursor"
            if cursor.get("skip", 0) < 0:
                return f"{where}.downloads.{kind}.skip is negative"
    fetch = data.get("fetch")
    if fetch is not None:
        if not isinstance(fetch, dict) or not isinstance(fetch.get("files", {}), dict):
            return "'fetch' is not an object"
        if not isinstance(fetch.get("out_dir"), str) or not fetch["out_dir"]:
            return "fetch.out_dir is not a path"
        for kind, info in fetch.get("files", {}).items():
            if not isinstance(info, dict) or not isinstance(info.get("bytes", 0), int) or info["bytes"] < 0:
                return f"fetch.files.{kind} has no valid byte count"
    return None


def add_target_args(parser: Any, *, what: str = "batch") -> None:
    """Positional batch ids and ``--manifest`` (every lifecycle script accepts either)."""
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help=f"{what} id(s)")
    parser.add_argument("--manifest", help="a manifest written by submit.py (instead of batch ids)")


def load_targets(args: Any) -> tuple[Manifest | None, list[str]]:
    """The manifest (if any) and the batch ids to work on, from ``add_target_args`` flags."""
    from doubleword.errors import UsageError

    if args.manifest and args.batch_ids:
        raise UsageError("give batch ids or --manifest, not both")
    if args.manifest:
        manifest = Manifest.load(args.manifest)
        ids = manifest.batch_ids()
        if not ids:
            raise InputError(f"manifest {args.manifest} has no batches yet; run submit.py first")
        return manifest, ids
    if not args.batch_ids:
        raise UsageError("give at least one batch id or --manifest PATH")
    return None, list(dict.fromkeys(args.batch_ids))
