"""The manifest: the job. One JSON file that ties every round's shards to their uploads, batches and downloads.

It is the scripts' memory between runs, written atomically after every state change, so a crash at
any point leaves a manifest from which the next run carries on (nothing created twice, downloads
resumed). It is loaded into typed records (:class:`Manifest`, :class:`Round`, :class:`Shard`) and
checked once, in :meth:`Manifest.load`; nothing else looks at the raw JSON.

Layout (version 2; a version-1 file, which had no rounds, loads as one round)::

    {"format": "doubleword-batches/manifest", "version": 2, "job_id": "dwj-...",
     "created_at": ..., "updated_at": ..., "base_url": "https://api.doubleword.ai/v1",
     "inputs": [{"path", "sha256", "bytes"}], "window": "24h", "metadata": {...},
     "rounds": [{"number": 1, "created_at", "statuses": null, "adjust": {}, "source": null}, ...],
     "shards": [{"index", "round", "source", "path", "rows_path", "sha256", "requests", "bytes",
                 "endpoint", "upload_filename", "upload_state", "file_id",   # pending | sending | done
                 "marker", "create_state", "batch_id",                        # pending | sending | done
                 "status", "request_counts", "output_file_id", "error_file_id", "times": {...},
                 "downloads": {...}, "final_counts": {...}}],
     "fetch": {"out_dir", "files": {...}}}

Shards are stored flat (each names its ``round``) so that a shard keeps its place whatever rounds
follow; :attr:`Round.shards` is the view by round. ``*_state = "sending"`` means the request may have
reached the server: the next run looks the object up by its marker (upload filename / ``dwb_marker``
metadata) before sending again. ``downloads`` and ``fetch`` belong to the download engine and are kept
as given (only their shape is checked). Keys this version does not know are kept as they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doubleword.cli import warn
from doubleword.errors import InputError
from doubleword.files import atomic_write_text, exclusive_lock, json_text, read_json_file
from doubleword.manifest.check import FORMAT, VERSION, batch_ids_in, never_sent, problem

DOWNLOAD_KINDS = ("output", "errors")


def default_manifest_path(first_input: str | os.PathLike[str]) -> Path:
    """``<first input>.manifest.json`` (SPEC section 4)."""
    return Path(f"{first_input}.manifest.json")


# --------------------------------------------------------------------------- records


@dataclass
class Shard:
    """One uploaded file and its batch. Attributes mirror the JSON keys."""

    index: int
    round: int = 1
    source: str | None = None
    path: str | None = None
    rows_path: str | None = None
    sha256: str | None = None
    requests: int | None = None
    bytes: int | None = None
    endpoint: str | None = None
    estimated_input_tokens: int | None = None
    upload_filename: str | None = None
    upload_state: str = "pending"
    file_id: str | None = None
    marker: str | None = None
    create_state: str = "pending"
    batch_id: str | None = None
    status: str | None = None
    request_counts: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, Any] = field(default_factory=dict)
    downloads: dict[str, Any] = field(default_factory=dict)
    final_counts: dict[str, Any] | None = None
    cost_estimate: dict[str, Any] | None = None
    checked_at: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys written by a newer version, kept

    @property
    def never_sent(self) -> bool:
        """Nothing of this shard can be on the server (no upload or batch creation was ever sent)."""
        return never_sent(self.to_json())

    def to_json(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in _SHARD_FIELDS}
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        known = {k: v for k, v in data.items() if k in _SHARD_FIELDS}
        for key in ("times", "downloads", "upload_state", "create_state"):  # None: the default
            if known.get(key) is None:
                known.pop(key, None)
        shard = cls(**known)
        shard.extra = {k: v for k, v in data.items() if k not in _SHARD_FIELDS}
        return shard


_SHARD_FIELDS = tuple(f.name for f in dataclasses.fields(Shard) if f.name != "extra")


@dataclass
class Round:
    """One submission of the job: round 1 is the inputs as submitted, later rounds what lacked an answer."""

    number: int
    shards: list[Shard] = field(default_factory=list)
    created_at: int | None = None
    statuses: list[str] | None = None  # the result statuses this round resubmitted (None: round 1)
    adjust: dict[str, Any] = field(default_factory=dict)  # body changes applied, e.g. {"max_tokens": 512}
    source: str | None = None  # the file of the request lines this round sent (adjusted), for later rounds
    left_behind: int = 0  # inputs without a usable answer that this round chose not to resend
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {
            "number": self.number,
            "created_at": self.created_at,
            "statuses": self.statuses,
            "adjust": self.adjust,
            "source": self.source,
            "left_behind": self.left_behind,
        }
        data.update(self.extra)
        return data

    @property
    def submitted(self) -> bool:
        """Every shard of the round has its batch."""
        return bool(self.shards) and all(s.create_state == "done" for s in self.shards)


def new_shard(index: int, **fields: Any) -> Shard:
    """A shard record (None until known)."""
    return Shard(index=index, **fields)


class Manifest:
    """A manifest in memory; :meth:`save` writes it atomically (under the manifest's lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        now = int(time.time())
        self.job_id = f"dwj-{uuid.uuid4().hex[:12]}"
        self.created_at: int = now
        self.updated_at: int = now
        self.base_url = ""  # the server the job was submitted to ("" when not recorded, version 1)
        self.inputs: list[dict[str, Any]] = []
        self.window: str | None = None
        self.metadata: dict[str, str] = {}
        self.rounds: list[Round] = [Round(1, created_at=now)]
        self.fetch: dict[str, Any] = {}  # the download engine's state ({} until a fetch ran)
        self.loaded_version = VERSION
        self.extra: dict[str, Any] = {}

    # -- construction

    @classmethod
    def new(cls, path: str | os.PathLike[str], **fields: Any) -> Manifest:
        manifest = cls(path)
        for key, value in fields.items():
            if not hasattr(manifest, key):
                raise TypeError(f"Manifest has no field {key!r}")
            setattr(manifest, key, value)
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and check a manifest; a damaged or hand-edited one is a clear input error."""
        data = _read_manifest(Path(path))
        wrong = problem(data)
        if wrong:
            raise InputError(damaged(Path(path), wrong, batch_ids_in(data)))
        manifest = cls(path)
        manifest._fill(data)
        return manifest

    def _fill(self, data: dict[str, Any]) -> None:
        self.loaded_version = int(data["version"])
        self.created_at = data.get("created_at") or self.created_at
        self.updated_at = data.get("updated_at") or self.updated_at
        self.base_url = data.get("base_url") or ""
        self.inputs = list(data.get("inputs") or [])
        self.window = data.get("window")
        self.metadata = dict(data.get("metadata") or {})
        self.fetch = dict(data.get("fetch") or {})
        shards = [Shard.from_json(s) for s in data.get("shards") or []]
        rounds = [
            Round(
                number=r["number"],
                created_at=r.get("created_at"),
                statuses=r.get("statuses"),
                adjust=dict(r.get("adjust") or {}),
                source=r.get("source"),
                left_behind=int(r.get("left_behind") or 0),
                extra={k: v for k, v in r.items() if k not in _ROUND_KEYS},
            )
            for r in data.get("rounds") or [{"number": 1, "created_at": self.created_at}]
        ]
        by_number = {r.number: r for r in rounds}
        for shard in shards:
            by_number[shard.round].shards.append(shard)
        self.rounds = rounds
        # A version-1 manifest has no job id: derive a stable one from its first marker.
        first_marker = next((s.marker for s in shards if s.marker), None)
        self.job_id = data.get("job_id") or (
            f"dwj-{first_marker.removeprefix('dwb-')}" if first_marker else self.job_id
        )
        self.extra = {k: v for k, v in data.items() if k not in _MANIFEST_KEYS}
        written_at = data.get("written_at")
        if isinstance(written_at, str) and written_at != str(self.path.resolve()):
            self._moved_from(Path(written_at))

    def _moved_from(self, old: Path) -> None:
        """The job folder was moved (the manifest is no longer where it was written): every path recorded
        under the old folder follows it, so nothing is looked for, or written, at the old place."""
        if old.exists():
            return  # a copy, not a move: the paths still name the original files
        old_dir, new_dir = str(old.parent), str(self.path.resolve().parent)

        def follow(value: str | None) -> str | None:
            if value and (value == old_dir or value.startswith(old_dir + os.sep)):
                return new_dir + value[len(old_dir) :]
            return value

        for item in self.inputs:
            item["path"] = follow(item.get("path"))
        for shard in self.shards:
            shard.source, shard.path, shard.rows_path = map(
                follow, (shard.source, shard.path, shard.rows_path)
            )
        for round_ in self.rounds:
            round_.source = follow(round_.source)
        for key in ("out_dir", "export"):  # the results folder, and the export the next commands name
            if isinstance(self.fetch.get(key), str):
                self.fetch[key] = follow(self.fetch[key])
        warn(f"the job moved from {old_dir} to {new_dir}; the manifest's paths follow it")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "job_id": self.job_id,
            "written_at": str(self.path.resolve()),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "base_url": self.base_url or None,
            "inputs": self.inputs,
            "window": self.window,
            "metadata": self.metadata,
            "rounds": [r.to_json() for r in self.rounds],
            "shards": [s.to_json() for s in self.shards],
            "fetch": self.fetch or None,
        }
        data.update(self.extra)
        return data

    @classmethod
    def exists(cls, path: str | os.PathLike[str]) -> bool:
        return Path(path).is_file()

    # -- access

    @property
    def shards(self) -> list[Shard]:
        """Every shard of every round, in order (a new list: add shards with :meth:`add_shard`)."""
        return [shard for r in self.rounds for shard in r.shards]

    @property
    def first_round(self) -> Round:
        return self.rounds[0]

    @property
    def last_round(self) -> Round:
        return self.rounds[-1]

    def add_shard(self, shard: Shard) -> Shard:
        """Append a shard to its round (the last round when its number is not one yet)."""
        target = next((r for r in self.rounds if r.number == shard.round), None)
        if target is None:
            target = self.last_round
            shard.round = target.number
        target.shards.append(shard)
        return shard

    def new_round(self, **fields: Any) -> Round:
        """Start the next round (recorded by the next :meth:`save`)."""
        round_ = Round(self.last_round.number + 1, created_at=int(time.time()), **fields)
        self.rounds.append(round_)
        return round_

    def next_shard_index(self) -> int:
        return max((s.index for s in self.shards), default=-1) + 1

    @property
    def dir(self) -> Path:
        return self.path.resolve().parent

    def batch_ids(self) -> list[str]:
        return [s.batch_id for s in self.shards if s.batch_id]

    def unsent(self) -> list[Shard]:
        """The latest round's shards that have no batch yet (a submit stopped before it made them: refused,
        failed or killed): their requests are in no batch, so no download can answer them."""
        return [s for s in self.last_round.shards if not s.batch_id]

    def unsent_report(self) -> dict[str, int] | None:
        """:meth:`unsent` for poll's and fetch's JSON (None when every shard has its batch), and on stderr
        what to do about it."""
        shards = self.unsent()
        if not shards:
            return None
        counts = [unsent_requests(s) for s in shards]
        requests_count = sum(n or 0 for n in counts)
        known = f" ({requests_count:,} requests)" if all(n is not None for n in counts) else ""
        warn(
            f"{len(shards)} shard(s) of round {self.last_round.number}{known} were never sent (a submit "
            "stopped before their batches were made); send them with: submit.py --resubmit --manifest "
            f"{self.path.resolve()}"
        )
        return {"shards": len(shards), "requests": requests_count}

    def shard_for_batch(self, batch_id: str) -> Shard | None:
        return next((s for s in self.shards if s.batch_id == batch_id), None)

    def save(self) -> None:
        with exclusive_lock(self._lock_path):
            self._write()

    def snapshot(self) -> str:
        """The manifest as :meth:`save` would write it now, to be written later (:meth:`save_snapshot`)."""
        self.updated_at = int(time.time())
        return json_text(self.to_json())

    def save_snapshot(self, text: str) -> None:
        with exclusive_lock(self._lock_path):
            atomic_write_text(self.path, text)

    def reload(self) -> None:
        """Read the file again (what other runs saved meanwhile) into this object."""
        self._fill(Manifest.load(self.path).to_json())

    def record_batches(self, batches: list[dict[str, Any]]) -> None:
        """Record what the server says about these batches, keeping what other runs saved meanwhile.

        poll and cancel may run while fetch_results is downloading on the same manifest: they re-read
        the file under the lock and change only the batch fields, so fetch's cursors are never lost.
        """
        try:
            with exclusive_lock(self._lock_path):
                if self.path.is_file():
                    self.reload()
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

    @property
    def submit_lock_path(self) -> Path:
        """Held by a submit for its whole run, so two submits of one job never send at once."""
        return self.path.with_name(f".{self.path.name}.submit.lock")

    def _write(self) -> None:
        self.updated_at = int(time.time())
        atomic_write_text(self.path, json_text(self.to_json()))


_ROUND_KEYS = ("number", "created_at", "statuses", "adjust", "source", "left_behind", "shards")
_MANIFEST_KEYS = (
    "format",
    "version",
    "job_id",
    "created_at",
    "updated_at",
    "base_url",
    "written_at",
    "inputs",
    "window",
    "metadata",
    "rounds",
    "shards",
    "fetch",
)


def damaged(path: Path, wrong: str, batch_ids: list[str]) -> str:
    """The error of a manifest that fails its check: the file, what is wrong (naming the shard), what to do."""
    text = (
        f"manifest {path.resolve()} is damaged or was edited by hand: {wrong}. Restore it from a backup, or "
        "put back what is missing"
    )
    if not batch_ids:
        return f"{text}; nothing of it can be adopted from a damaged file"
    shown = ", ".join(batch_ids[:5]) + (f" and {len(batch_ids) - 5} more" if len(batch_ids) > 5 else "")
    return (
        f"{text}. Its batches ({shown}) keep running on the server: poll.py BATCH_ID and fetch_results.py "
        "BATCH_ID --out DIR work without the manifest; submitting its inputs again under another --manifest "
        "would pay for those batches twice"
    )


def record_batch(shard: Shard, batch: dict[str, Any]) -> None:
    """Copy what the server says about a batch into its shard record."""
    shard.batch_id = _str(batch.get("id")) or shard.batch_id
    shard.status = _str(batch.get("status"))
    counts = batch.get("request_counts")
    shard.request_counts = counts if isinstance(counts, dict) else None
    for key in ("output_file_id", "error_file_id"):
        value = _str(batch.get(key))
        if value:
            setattr(shard, key, value)
    if batch.get("input_file_id") and not shard.file_id:
        shard.file_id = _str(batch["input_file_id"])
    if batch.get("endpoint") and not shard.endpoint:
        shard.endpoint = _str(batch["endpoint"])
    for key, value in batch.items():
        if key.endswith("_at") and isinstance(value, (int, float)) and not isinstance(value, bool):
            shard.times[key] = value
    shard.checked_at = int(time.time())


def _str(value: Any) -> str | None:
    """A server value stored as a string (an odd type must not make the manifest unreadable later)."""
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _read_manifest(path: Path) -> Any:
    """The manifest's JSON; a file that is not a manifest at all (the batch file itself, a rows or results
    file, another JSON file) is named as such, with the manifest to give instead, not called damaged."""
    if path.is_dir():
        raise InputError(_not_a_manifest(path, "a folder"))
    try:
        data = read_json_file(path, "manifest")
    except InputError:
        if not path.is_file() or path.name.endswith(".manifest.json") or FORMAT.encode() in _head(path):
            raise  # missing, or a manifest damaged: its own words
        if _jsonl(path):
            raise InputError(_not_a_manifest(path, "a JSON-lines file (batch, rows or results lines)"))
        raise InputError(_not_a_manifest(path, "not JSON at all"))
    if isinstance(data, dict) and "format" not in data and "shards" not in data:
        raise InputError(_not_a_manifest(path, "a JSON file of another kind"))
    return data


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(4096)
    except OSError:
        return b""


def _jsonl(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return isinstance(json.loads(handle.readline()), dict)
    except (OSError, ValueError, RecursionError):
        return False


def _not_a_manifest(path: Path, kind: str) -> str:
    beside = Path(f"{path}.manifest.json")
    hint = f"; this one's is {beside}" if beside.is_file() else ""
    return (
        f"{path} is {kind}, not a manifest: give --manifest the file submit.py wrote (its stdout's "
        f"`manifest`, by default <first input>.manifest.json), or for a new job a path no file has{hint}"
    )


def unsent_requests(shard: Shard) -> int | None:
    """The requests a never-sent shard will send: a file never uploaded goes as it is now (its lines, as
    fetch lists them); an uploaded one, or a file gone or that is no batch file, as planned."""
    if shard.file_id or not shard.path:
        return shard.requests
    count, first = 0, b""
    try:
        with open(shard.path, "rb") as handle:
            for line in handle:
                if line.strip():
                    first, count = first or line, count + 1
    except OSError:
        return shard.requests
    return count if b'"url"' in first else shard.requests


def fetch_state(manifest: Manifest) -> dict[str, Any]:
    """The manifest's ``fetch`` member (the fetch engine's own state)."""
    if not isinstance(manifest.fetch, dict):
        manifest.fetch = {}
    return manifest.fetch
