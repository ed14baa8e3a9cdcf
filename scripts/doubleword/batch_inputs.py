"""The input lines of each batch, indexed so results come out in input order.

A shard's input is the local batch file recorded by submit.py when it is still the file that was sent (its
sha256 matches the manifest's), else the server's copy of the input file, downloaded once into the output
folder. Each line is indexed by custom_id (read without parsing the line when it starts with it), where it
is (to copy it into retry.jsonl) and whether it asked for JSON output. A batch whose input can be read
nowhere is listed by what it answered.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from doubleword.api import download_file
from doubleword.cli import info, warn
from doubleword.client import ApiClient, ApiError
from doubleword.errors import ServiceError
from doubleword.manifest import Shard, sha256_file
from doubleword.store import InputRow, Store

JSON_HINTS = (b'"response_format"', b'"format"')  # in a request line that may ask for JSON output


def custom_id_of(raw: bytes) -> str | None:
    """The custom_id of a request line (parsed)."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    found = line.get("custom_id") if isinstance(line, dict) else None
    return found if isinstance(found, str) else None


_ID_HEAD = b'{"custom_id":"'
_ID_START = len(_ID_HEAD)


def fast_custom_id(line: bytes) -> str | None:
    """The custom_id of a compact line that starts with it (every line create_batch_file.py writes), read
    in place; None for any other layout (then :func:`custom_id_of` parses the line)."""
    if not line.startswith(_ID_HEAD):
        return None
    end = line.find(b'"', _ID_START)
    if end < 0 or not line.endswith(b"}") or b"\\" in line[_ID_START:end]:
        return None
    try:
        return line[_ID_START:end].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _rows(path: Path) -> Iterator[InputRow]:
    """Each line's (custom_id, -, offset, length, asks for JSON, crc32), in order."""
    format_hint, response_format_hint = JSON_HINTS[1], JSON_HINTS[0]
    with open(path, "rb") as handle:
        offset = 0
        for raw in handle:
            length = len(raw)
            line = raw.rstrip(b"\r\n")
            if line and not line.isspace():
                custom_id = fast_custom_id(line) or custom_id_of(line) or ""
                wants_json = 1 if format_hint in line or response_format_hint in line else 0
                yield custom_id, None, offset, len(line), wants_json, zlib.crc32(line)
            offset += length


def input_path(client: ApiClient, shard: Shard, out_dir: Path) -> Path | None:
    """The shard's input lines as sent: the recorded file if unchanged, else a copy of the server's."""
    local = shard.path
    if local and Path(local).is_file():
        recorded = shard.sha256
        if not recorded or sha256_file(local) == recorded:
            return Path(local)
        warn(f"{local} changed since it was submitted; joining results to the server's copy of the input")
    copy = out_dir / f"input-{int(shard.index or 0):03d}.jsonl"
    if copy.is_file():
        return copy
    if not shard.file_id:
        warn(f"batch {shard.batch_id}: its input file is gone; results list only what was answered")
        return None
    info(f"batch {shard.batch_id}: downloading its input file to join results in input order")
    try:
        download_file(client, shard.file_id, copy)
    except (ApiError, ServiceError) as exc:  # deleted, or a server that refuses to serve batch inputs
        warn(
            f"batch {shard.batch_id}: cannot download its input file ({exc}); results list only what was answered"
        )
        return None
    return copy


INSERT_ROWS = 5_000  # input rows inserted per hold of the engine's lock (downloads run meanwhile)


def index_inputs(
    client: ApiClient,
    store: Store,
    shards: list[Shard],
    out_dir: Path,
    lock: Any,
    *,
    by_content: bool,
    files_only: bool = False,
    skip: set[str] | frozenset[str] = frozenset(),
) -> set[str]:
    """Index every shard's input lines once (again when the file changed), then link the rounds.

    With ``files_only`` only the shards whose input can be read are indexed (this may run while the
    downloads do: the lock is held one slice of rows at a time); the others, listed by what they answered,
    and the rounds' links are left for a call without it, after the downloads (``skip``: the batches the
    first call indexed). Returns the batches whose input file is indexed."""
    indexed: set[str] = set()
    for position, shard in enumerate(shards):
        batch_id = str(shard.batch_id)
        if batch_id in skip:
            indexed.add(batch_id)
            continue
        round_number = position + 1 if by_content else int(shard.round or 1)
        with lock:
            known = store.source(batch_id)
        path = input_path(client, shard, out_dir)
        if path is not None:
            indexed.add(batch_id)
            stat = path.stat()
            if known and known[1] == str(path) and known[2:4] == (stat.st_size, stat.st_mtime_ns):
                continue
            with lock:
                if known:
                    store.drop_source(known[0])
                # size -1 until every row is in: a commit by the downloads meanwhile, then a kill, leaves
                # a source that the next run sees as changed and indexes again
                src = store.add_source(batch_id, round_number, str(path), -1, 0, ())
            rows = _rows(path)
            while True:
                part = list(islice(rows, INSERT_ROWS))
                with lock:
                    if not part:
                        store.finish_source(src, stat.st_size, stat.st_mtime_ns)
                        break
                    store.add_inputs(src, batch_id, round_number, part)
        elif (
            not files_only
        ):  # what was answered, in custom_id order; rebuilt each run (more may have arrived)
            with lock:
                if known:
                    store.drop_source(known[0])
                answered = [(c, None, -1, 0, 0, 0) for c in store.answered(batch_id)]
                store.add_source(batch_id, round_number, None, 0, 0, answered)
    if not files_only:
        with lock:
            store.link_rounds(by_content)
            store.commit()
    return indexed
