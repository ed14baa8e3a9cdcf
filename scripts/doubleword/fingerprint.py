"""Content fingerprints: a file's sha256, read once per run, and a memory of content already validated.

Submitting reads each input several times over (the input's digest, each shard's digest, the check that
a shard is unchanged before its upload); the digest of a file whose size, mtime and inode have not
changed since it was hashed in this run is taken from memory. A file whose content passed validation
(by ``validate_batch_file.py`` or an earlier submit) is not validated again: the validated digest is
remembered in the temp folder, keyed by the content and by the validation rules' own files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from doubleword.files import atomic_write_json

_DIGESTS: dict[tuple[str, int, int, int], str] = {}
_RULES = Path(__file__).resolve().parent / "validation"
_SCHEMAS = Path(__file__).resolve().parent.parent.parent / "references" / "schemas"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 (hex); read once per run while the file stays as it was."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _rules_stamp() -> str:
    """Changes whenever the validation code or a schema changes, so a remembered verdict never outlives them."""
    stamps = []
    for folder in (_RULES, _SCHEMAS):
        if folder.is_dir():
            stamps += [
                f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(folder.iterdir())
            ]
    return hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]


def _memory(digest: str) -> Path:
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return (
        Path(tempfile.gettempdir()) / f"doubleword-batches-{user}" / f"valid-{_rules_stamp()}-{digest}.json"
    )


def remember_valid(path: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """Remember that this content passed validation (with its stats and warnings), best effort."""
    if not report.get("valid") or str(path) == "-":
        return
    memory = _memory(sha256_file(path))
    kept = {"stats": report.get("stats") or {}, "warnings": report.get("warnings") or []}
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(memory, kept)
    except OSError:
        pass  # only a saving: validation simply runs again next time


def recall_valid(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The report of an earlier validation of exactly this content under the same rules, or None."""
    memory = _memory(sha256_file(path))
    try:
        kept = json.loads(memory.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not isinstance(kept.get("stats"), dict):
        return None
    return {"file": str(path), "valid": True, "stats": kept["stats"], "warnings": kept.get("warnings") or []}
