"""Content fingerprints: a file's sha256, read once per run, and a memory of content already validated.

Submitting needs each input's digest several times (the input's record, each shard's, the check that a
shard is unchanged before its upload); the digest of a file whose size, mtime and inode have not changed
since it was hashed in this run is taken from memory, and :func:`validate_file` hashes a file in the
same read pass that validates it. So a submit reads each shard twice at most: once to validate and hash
it (or only to hash it, when it was validated before), once to upload it.

A file whose content passed validation (by ``validate_batch_file.py`` or an earlier submit) is not
validated again: the verdict is remembered in the temp folder, keyed by the content's digest and by a
stamp of the validation rules (the validation package, the endpoint table, the limits and the request
schemas), so that a change of any of them invalidates it. Beside it, a hint keyed by the file's path and
stat says which content was validated there: only then does :func:`recall_valid` read the file to hash
it; without a hint the caller validates and hashes in one pass. The hint only chooses which single pass
to make: the verdict is always that of the content's digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any

from doubleword.config import SCHEMA_DIR
from doubleword.errors import Interrupted
from doubleword.files import atomic_write_json

_Key = tuple[str, int, int, int]
_DIGESTS: dict[_Key, str] = {}
_PACKAGE = Path(__file__).resolve().parent


def _key(path: str | os.PathLike[str]) -> _Key:
    stat = os.stat(path)
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def sha256_file(path: str | os.PathLike[str], stop: threading.Event | None = None) -> str:
    """The file's sha256 (hex); read once per run while the file stays as it was. Once ``stop`` is set
    (a Ctrl-C, seen in a thread) the reading ends at the next 1 MB block with :class:`Interrupted`."""
    key = _key(path)
    known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            if stop is not None and stop.is_set():
                raise Interrupted
            digest.update(chunk)
    _note(path, key, digest.hexdigest(), key[1])
    return digest.hexdigest()


def _note(path: str | os.PathLike[str], key: _Key, digest: str, hashed: int) -> None:
    """Keep ``digest`` for the file as ``key`` describes it, if all of it was hashed and it did not
    change meanwhile (a file rewritten while it was read is hashed again next time)."""
    if hashed == key[1] and _key(path) == key:
        _DIGESTS[key] = digest


def note_written(path: str | os.PathLike[str], digest: str, stat: os.stat_result) -> None:
    """A file this run wrote with content of ``digest``, ``stat`` taken when it was complete (before its
    rename into place): its digest is known without reading it again, unless it changes."""
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    _note(path, key, digest, stat.st_size)


class _Hashing:
    """sha256 of the blocks a scan reads, and how many bytes they held."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.bytes = 0

    def update(self, block: bytes) -> None:
        self.sha.update(block)
        self.bytes += len(block)


def validate_file(path: str | os.PathLike[str], **limits: Any) -> dict[str, Any]:
    """Validate a batch file and hash it in the same read pass; a valid verdict is remembered (only when
    the bytes validated are the file as it is: one that changed while it was read is not)."""
    from doubleword.validation import validate_batch_file

    try:
        key = _key(path)
    except OSError:
        return validate_batch_file(str(path), **limits)  # reports the missing or unreadable file
    hashing = _Hashing()
    report = validate_batch_file(str(path), on_block=hashing.update, **limits)
    digest = hashing.sha.hexdigest()
    try:
        _note(path, key, digest, hashing.bytes)
    except OSError:
        return report
    if report.get("valid") and _DIGESTS.get(key) == digest:
        _remember(key, digest, report)
    return report


@cache
def rules_stamp() -> str:
    """A digest of the validation rules' files (their content), so a remembered verdict never outlives a
    change of the validation code, the endpoint table, the limits or a request schema."""
    files = [
        *sorted((_PACKAGE / "validation").glob("*.py")),
        _PACKAGE / "endpoints.py",
        _PACKAGE / "config.py",
        *sorted(Path(SCHEMA_DIR).glob("*.json")),
    ]
    digest = hashlib.sha256()
    for file in files:
        try:
            content = file.read_bytes()
        except OSError:
            content = b"(unreadable)"  # still a stamp of its own: no verdict is shared with a whole install
        digest.update(f"{file.name}\0".encode() + content + b"\0")
    return digest.hexdigest()[:16]


def _folder() -> Path:
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"doubleword-batches-{user}"


def _memory(digest: str) -> Path:
    return _folder() / f"valid-{rules_stamp()}-{digest}.json"


def _hint(key: _Key) -> Path:
    where = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return _folder() / f"seen-{rules_stamp()}-{where}"


def _remember(key: _Key, digest: str, report: dict[str, Any]) -> None:
    """Remember that this content passed validation (with its stats and warnings), best effort."""
    kept = {"stats": report.get("stats") or {}, "warnings": report.get("warnings") or []}
    try:
        _folder().mkdir(parents=True, exist_ok=True)
        atomic_write_json(_memory(digest), kept)
        atomic_write_json(_hint(key), {"sha256": digest})
    except OSError:
        pass  # only a saving: validation simply runs again next time


def recall_valid(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The report of an earlier validation of exactly this content under the same rules, or None.

    The file is read (hashed) only when its digest is known in this run or a hint says that this path,
    as it is now, held validated content; otherwise None at once, and the caller's validation hashes it.
    """
    key = _key(path)
    if key not in _DIGESTS and not _hint(key).is_file():
        return None
    try:
        kept = json.loads(_memory(sha256_file(path)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not isinstance(kept.get("stats"), dict):
        return None
    return {"file": str(path), "valid": True, "stats": kept["stats"], "warnings": kept.get("warnings") or []}
