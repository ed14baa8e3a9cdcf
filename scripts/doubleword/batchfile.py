"""Writing batch files: request lines checked, encoded and written into shards (``OUT.jsonl``, or
``OUT-001.jsonl``, ``OUT-002.jsonl``, ... when a limit would be passed; a line is never split), each with its
source-rows file ``OUT.rows.jsonl`` when rows are given; every file written to a temporary file and renamed
into place only when the whole write succeeded.

Public API (also re-exported by :mod:`doubleword.build`):
    write_batch(requests, out_path, *, max_requests=..., max_bytes=...) -> list of shard dicts
    BatchWriter(out_path, *, rows=False, duplicates="error", ...): add(request, row, where), finish()
    shard_file(path, out_prefix, *, max_requests=..., max_bytes=...) -> list of shard dicts
    shard_paths(out_path, count), rows_path(batch_path)

A shard dict is ``{"path": str, "requests": int, "bytes": int}``, plus ``"rows_path"`` when a rows file
was written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from doubleword import fastjson
from doubleword.config import MAX_CUSTOM_ID_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from doubleword.endpoints import endpoint_for_url
from doubleword.errors import InputError, UsageError
from doubleword.files import remove_stale_temps, temp_file_beside
from doubleword.fingerprint import note_written
from doubleword.idset import IdSet
from doubleword.validation import MAX_BODY_BYTES, endpoint_checker, inspect_line, plain_line

_UMASK = os.umask(0)
os.umask(_UMASK)
# Compact, UTF-8 kept as is: the smallest lines, and the fastest encoder (the C one).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def encode_line(obj: Any) -> bytes:
    """``obj`` as one compact UTF-8 JSON line. orjson, when installed (:mod:`doubleword.fastjson`), writes
    the same bytes about five times faster (small floats aside: ``1e-7`` for ``1e-07``). It writes NaN
    and infinities as ``null``, which the standard library refuses, so a line holding ``null`` (rare in
    a request) and anything orjson refuses (non-string keys, integers past 64 bits, lone surrogates)
    take the plain path, which decides; a refusal raises TypeError or ValueError."""
    fast = fastjson.dumps
    if fast is not None:
        try:
            line = fast(obj)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        else:
            if b"null" not in line:
                return line + b"\n"
    return (_encode(obj) + "\n").encode("utf-8")


def shard_paths(out_path: str | os.PathLike[str], count: int) -> list[Path]:
    """``OUT.jsonl`` for one shard, else ``OUT-001.jsonl`` ... ``OUT-NNN.jsonl``."""
    out = Path(out_path)
    if count == 1:
        return [out]
    suffix = out.suffix or ".jsonl"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    width = max(3, len(str(count)))
    return [out.with_name(f"{stem}-{i:0{width}d}{suffix}") for i in range(1, count + 1)]


def check_output_path(out_path: str | os.PathLike[str], given: dict[str, str | None]) -> None:
    """A usage error when ``-o`` names a folder, or when the batch file, a shard of it or a rows file beside
    it would be written over one of the files the command reads (``given``: flag -> path): the data would
    be replaced by requests."""
    if Path(out_path).is_dir():
        raise UsageError(
            f"-o {out_path} is a folder; give the batch file's name, e.g. {Path(out_path) / 'batch.jsonl'}"
        )
    out = Path(out_path).resolve()
    suffix = out.suffix or ".jsonl"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    ours = re.compile(rf"{re.escape(stem)}(-\d{{3,}})?(\.rows)?{re.escape(suffix)}")
    for flag, name in given.items():
        if not name or name == "-":
            continue
        path = Path(name).resolve()
        if path.parent == out.parent and ours.fullmatch(path.name):
            raise UsageError(
                f"-o {out_path} would write over {flag} {name} (the batch file, a shard or a rows file beside "
                f"it has that name), replacing your data; give -o another name, e.g. {stem}-requests.jsonl"
            )


def written_as_shards(out_path: str | os.PathLike[str]) -> str:
    """For a batch file that does not exist: how create_batch_file.py wrote it instead, as numbered shards
    (``OUT-001.jsonl`` ...), with a shell pattern matching them and not their rows files; else ""."""
    out = Path(out_path)
    suffix = out.suffix or ".jsonl"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    numbered = re.compile(rf"{re.escape(stem)}-(\d{{3,}}){re.escape(suffix)}")
    try:
        found = sorted(p.name for p in out.parent.iterdir() if numbered.fullmatch(p.name))
    except OSError:
        return ""
    if not found:
        return ""
    width = len(numbered.fullmatch(found[-1]).group(1))  # type: ignore[union-attr]
    pattern = out.with_name(f"{stem}-{'[0-9]' * width}{suffix}")
    return f": it was written as {len(found)} shard(s), {found[0]} ... {found[-1]}; pass them all: {pattern}"


def rows_path(batch_path: str | os.PathLike[str]) -> Path:
    """Where a batch file's source rows are recorded: ``X.jsonl`` -> ``X.rows.jsonl``."""
    path = Path(batch_path)
    suffix = path.suffix or ".jsonl"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.rows{suffix}")


class _ShardWriter:
    """Writes byte lines into temporary shard files, starting a new one when a limit would be passed; with
    ``rows``, each shard gets a companion rows file written in step (line i describes line i)."""

    def __init__(
        self, out_path: Path, max_requests: int, max_bytes: int, *, rows: bool = False, digests: bool = False
    ) -> None:
        if max_requests < 1 or max_bytes < 2:
            raise UsageError("--max-requests and --max-bytes must be positive")
        self.out_path = out_path
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.rows = rows
        self.digests = digests  # hash each shard as it is written (its sha256 in the shard dict)
        self._sha: Any = None
        self.shards: list[dict[str, Any]] = []  # {"tmp", "rows_tmp", "requests", "bytes", "sha256", "stat"}
        self._handle: IO[bytes] | None = None
        self._rows_handle: IO[bytes] | None = None
        self.requests = self.bytes = 0  # of the current shard
        out_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_path)  # shards a killed run was writing

    def _open(self) -> IO[bytes]:
        fd, tmp = temp_file_beside(self.out_path)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a batch file is an ordinary file
        self.shards[-1]["tmp" if "tmp" not in self.shards[-1] else "rows_tmp"] = tmp
        return os.fdopen(fd, "wb", buffering=1024 * 1024)

    def _new_shard(self) -> None:
        self._close_current()
        self.shards.append({"requests": 0, "bytes": 0})
        self._handle = self._open()
        if self.rows:
            self._rows_handle = self._open()
        self._sha = hashlib.sha256() if self.digests else None
        self.requests = self.bytes = 0

    def _close_current(self) -> None:
        if self.shards:
            self.shards[-1].update(requests=self.requests, bytes=self.bytes)
        for handle in (self._handle, self._rows_handle):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
        if self._sha is not None and self._handle is not None:
            self.shards[-1].update(sha256=self._sha.hexdigest(), stat=os.stat(self.shards[-1]["tmp"]))
        self._handle = self._rows_handle = None

    def write(self, line: bytes, where: str | None, row_line: bytes = b"", number: int = 0) -> None:
        """Write one line (with its trailing newline), and its rows line; ``where`` (or request
        ``number``) names it in errors."""
        size = len(line)
        if self._handle is None or self.requests >= self.max_requests or self.bytes + size > self.max_bytes:
            if size > self.max_bytes:
                raise InputError(
                    f"{where or f'request {number}'} is {size:,} bytes, more than the {self.max_bytes:,}-byte "
                    "file limit"
                )
            self._new_shard()
        self._handle.write(line)  # type: ignore[union-attr]
        if self._sha is not None:
            self._sha.update(line)
        if self._rows_handle is not None:
            self._rows_handle.write(row_line)
        self.requests += 1
        self.bytes += size

    def finish(self, *, numbered: bool) -> list[dict[str, Any]]:
        """Rename the temporary files into place; the shard list with final paths."""
        self._close_current()
        if not self.shards:
            raise InputError("there are no requests to write")
        count = len(self.shards)
        paths = shard_paths(self.out_path, count)
        if numbered and count == 1:
            paths = [shard_paths(self.out_path, 2)[0]]
        result = []
        for shard, path in zip(self.shards, paths, strict=True):
            entry = {"path": str(path), "requests": shard["requests"], "bytes": shard["bytes"]}
            if "rows_tmp" in shard:
                os.replace(shard["rows_tmp"], rows_path(path))
                entry["rows_path"] = str(rows_path(path))
            os.replace(shard["tmp"], path)
            if "sha256" in shard:  # known without reading the shard again (unless it changes)
                entry["sha256"] = shard["sha256"]
                note_written(path, shard["sha256"], shard["stat"])
            result.append(entry)
        return result

    def abort(self) -> None:
        for handle in (self._handle, self._rows_handle):
            with contextlib.suppress(OSError):
                if handle is not None:
                    handle.close()
        for shard in self.shards:
            for key in ("tmp", "rows_tmp"):
                with contextlib.suppress(OSError, KeyError):
                    os.unlink(shard[key])


DUPLICATES = ("error", "number", "skip")


class BatchWriter:
    """Checks, encodes and writes request lines into shards (see :func:`write_batch`), with the source row
    of each line when ``rows`` is set. Use it as a context manager; :meth:`finish` puts the files in place.

    Duplicate custom_ids (kept in a flat-memory :class:`IdSet`): ``duplicates="error"`` (the default) refuses
    them; ``"number"`` renames a repeat ``ID-2``, ``ID-3``, ...; ``"skip"`` leaves out a line identical to
    an earlier one (same id, same request) and refuses a different request under a used id.
    """

    def __init__(
        self,
        out_path: str | os.PathLike[str],
        *,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_FILE_BYTES,
        check: bool = True,
        rows: bool = False,
        duplicates: str = "error",
    ) -> None:
        if duplicates not in DUPLICATES:
            raise UsageError(f"duplicates={duplicates!r}: use one of {', '.join(DUPLICATES)}")
        self._shards = _ShardWriter(Path(out_path), max_requests, max_bytes, rows=rows)
        self.check = check
        self.duplicates = duplicates
        self.ids = IdSet(digests=duplicates == "skip")
        self.number = 0  # requests offered
        self.renamed = self.skipped = 0
        self.url: str | None = None
        self.fast_check: Any = None

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self._shards.abort()
        self.ids.close()

    def add(self, request: dict[str, Any], row: Any = None, where: str | None = None) -> bool:
        """Check and write one request (``row``: its source row, for the rows file); False if skipped."""
        self.number += 1
        cid = request.get("custom_id") if isinstance(request, dict) else None
        if self.check:
            url = request.get("url") if isinstance(request, dict) else None
            if self.url is None and endpoint_for_url(url) is not None:
                self.url, self.fast_check = url, endpoint_checker(url).fast_check
            if plain_line(request, self.url, self.fast_check) < 0:
                _check_slow(request, self._where(where, cid), self.url)
        try:
            line = encode_line(request)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{self._where(where, cid)} cannot be written as JSON: {exc}")
        if self.check and isinstance(cid, str):
            line = self._unique(request, cid, line, where)
            if not line:
                return False
        if len(line) > MAX_BODY_BYTES:
            raise InputError(
                f"{self._where(where, cid)} is {len(line):,} bytes; a request may be at most "
                f"{MAX_BODY_BYTES:,} (the server's per-line limit): shorten the prompt or send smaller images"
            )
        row_line = b""
        if self._shards.rows:
            row_line = encode_line({"custom_id": request["custom_id"], "row": row})
        self._shards.write(line, where, row_line, self.number)
        return True

    def _where(self, where: str | None, cid: Any) -> str:
        """How errors name the current request: its source row (or number) and its custom_id."""
        label = where or f"request {self.number}"
        return label + (f" (custom_id {cid!r})" if isinstance(cid, str) else "")

    def _unique(self, request: dict[str, Any], cid: str, line: bytes, where: str | None) -> bytes:
        """The line to write (renamed when numbering), or b"" for a skipped exact repeat."""
        digest = hashlib.blake2b(line, digest_size=16).digest() if self.duplicates == "skip" else b""
        first = self.ids.get(cid)
        if first is None:
            self.ids.add(cid, self.number, digest)
            return line
        if self.duplicates == "skip" and first[1] == digest:
            self.skipped += 1
            return b""
        if self.duplicates != "number":
            hint = "" if self.duplicates == "skip" else " (or --duplicates number|skip)"
            raise InputError(
                f"{self._where(where, cid)}: custom_id {cid!r} is already used by request {first[0]}; "
                f"ids must be unique{hint}"
            )
        for n in range(2, self.number + 2):
            candidate = f"{cid[: MAX_CUSTOM_ID_BYTES - 1 - len(str(n))]}-{n}"
            if self.ids.get(candidate) is None:
                break
        self.ids.add(candidate, self.number, digest)
        self.renamed += 1
        request["custom_id"] = candidate
        return encode_line(request)

    def finish(self) -> list[dict[str, Any]]:
        """Put the shards in place; ``[{"path", "requests", "bytes"(, "rows_path")}]``."""
        return self._shards.finish(numbered=False)


def write_batch(
    requests: Iterable[dict[str, Any]],
    out_path: str | os.PathLike[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
    check: bool = True,
) -> list[dict[str, Any]]:
    """Write request dicts as a batch file, or as numbered shards when a limit would be passed.

    Streams in flat memory (custom_ids are checked for uniqueness in an :class:`IdSet`). With ``check``
    (the default) every line is validated first, so what is written always passes validate_batch_file.py;
    a bad request raises :class:`InputError` naming it, and nothing is written.
    """
    with BatchWriter(out_path, max_requests=max_requests, max_bytes=max_bytes, check=check) as writer:
        for request in requests:
            writer.add(request)
        return writer.finish()


def _check_slow(request: Any, where: str, url0: str | None) -> None:
    errors, _warnings, _ = inspect_line(request)
    if not errors and isinstance(request, dict) and url0 is not None and request.get("url") != url0:
        errors = [
            ("url_mismatch", f"url {request.get('url')!r} differs from {url0!r}; one endpoint per file")
        ]
    if errors:
        details = "; ".join(f"{code}: {message}" for code, message in errors[:3])
        raise InputError(f"{where} is not a valid request line: {details}")


def shard_file(
    path: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[dict[str, Any]]:
    """Split an existing (valid) batch file into numbered shards ``PREFIX-001.jsonl``, ...

    ``out_prefix`` is a path like ``work/jobs.jsonl`` (shards ``work/jobs-001.jsonl``...) or an existing
    directory (shards named after the input file inside it). Lines are copied byte for byte (blank lines
    dropped, a missing final newline added); always numbered, even when one shard suffices. When the input
    has a source-rows file (``X.rows.jsonl``), each shard gets its own. Each shard dict holds its
    ``sha256`` (hashed as it was written).
    """
    source = Path(path)
    prefix = Path(out_prefix)
    if prefix.is_dir():
        prefix = prefix / source.name
    if prefix.resolve() == source.resolve():
        raise UsageError("the shard prefix must differ from the input file name")
    rows_source = rows_path(source)
    rows = rows_source.is_file()
    writer = _ShardWriter(prefix, max_requests, max_bytes, rows=rows, digests=True)
    try:
        with open(source, "rb") as handle, contextlib.ExitStack() as stack:
            # A source-rows file beside the input is split in step (line i describes line i).
            row_lines = iter(stack.enter_context(open(rows_source, "rb")) if rows else ())
            for lineno, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                line = raw if raw.endswith(b"\n") else raw + b"\n"
                row_line = next(row_lines, b"") if rows else b""
                writer.write(line, f"{source} line {lineno}", row_line)
        return writer.finish(numbered=True)
    except FileNotFoundError:
        writer.abort()
        raise InputError(f"{source} does not exist")
    except BaseException:
        writer.abort()
        raise
