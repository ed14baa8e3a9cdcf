"""The input lines of each batch, indexed so results come out in input order.

A shard's input is the local batch file recorded by submit.py when it is still the file that was sent (its
sha256 matches the manifest's), else the server's copy of the input file, downloaded once into the output
folder. Each line is indexed by custom_id (read without parsing the line when it starts with it), where it
is (to copy it into retry.jsonl) and whether it asked for JSON output. A batch whose input can be read
nowhere is listed by what it answered. A first-round shard never sent (no batch: a submit stopped early, or
the server refused its file) has its lines indexed under a key of its own (:func:`input_key`), so its
requests are listed as ``missing`` in their place until a resubmit sends them.
"""

from __future__ import annotations

import json
import re
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


_LEADING_ID = re.compile(rb'\{"custom_id":"([^"\\]*)"')  # the id's string up to its closing quote, no escape


def fast_custom_id(line: bytes) -> str | None:
    """The custom_id of a compact line that starts with it (every line create_batch_file.py writes), read
    in place (one match: this runs for every input line); None for any other layout (then
    :func:`custom_id_of` parses the line)."""
    found = _LEADING_ID.match(line)
    if found is None or not line.endswith(b"}"):
        return None
    try:
        return found.group(1).decode("utf-8")
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


NEVER_SENT = "(never sent) "  # + the shard's index: the key of a never-sent shard's inputs (no batch id has
# a space or parentheses: ids are URL path segments)
MANIFEST_META = "manifest"  # the index's note of the job's manifest (named in a never-sent request's error)


def input_key(shard: Shard) -> str:
    """The key a shard's input lines are indexed under: its batch id, or, for a shard never sent (it has
    none), a key of its own, so that its requests are listed where they belong."""
    return str(shard.batch_id) if shard.batch_id else f"{NEVER_SENT}{shard.index}"


def is_never_sent(key: str | None) -> bool:
    """The key is a never-sent shard's (:func:`input_key`)."""
    return bool(key) and str(key).startswith(NEVER_SENT)


def _name(shard: Shard) -> str:
    return f"batch {shard.batch_id}" if shard.batch_id else f"shard {shard.index} (uploaded, no batch yet)"


def _unread(shard: Shard) -> str:
    return "results list only what was answered" if shard.batch_id else "results list none of its requests"


def unsent_path(client: ApiClient, shard: Shard, out_dir: Path) -> Path | None:
    """The lines a never-sent shard will send: its file as it is now (a file never uploaded is sent as it
    is, even changed since it was planned), or what was uploaded (its batch is made from that)."""
    if shard.file_id:
        return input_path(client, shard, out_dir)
    local, whose = shard.path, f"shard {shard.index} was never sent"
    if not local or not Path(local).is_file():
        warn(f"{whose} and its input file {local} is gone; {_unread(shard)}")
        return None
    with open(local, "rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    if b'"url"' not in first:  # a file submit.py refuses (the first line's url is its endpoint)
        warn(f"{whose} and {local} is not a batch file (no url on its first line); {_unread(shard)}")
        return None
    if shard.sha256 and sha256_file(local, client.interrupted) != shard.sha256:
        info(f"{local} changed since it was planned; never sent, so its requests are listed as they are now")
    return Path(local)


def input_path(client: ApiClient, shard: Shard, out_dir: Path) -> Path | None:
    """The shard's input lines as sent: the recorded file if unchanged, else a copy of the server's."""
    local = shard.path
    if local and Path(local).is_file():
        recorded = shard.sha256
        if not recorded or sha256_file(local, client.interrupted) == recorded:
            return Path(local)
        warn(f"{local} changed since it was submitted; joining results to the server's copy of the input")
    copy = out_dir / f"input-{int(shard.index or 0):03d}.jsonl"
    if copy.is_file():
        return copy
    if not shard.file_id:
        warn(f"{_name(shard)}: its input file is gone; {_unread(shard)}")
        return None
    info(f"{_name(shard)}: downloading its input file to join results in input order")
    try:
        download_file(client, shard.file_id, copy)
    except (ApiError, ServiceError) as exc:  # deleted, or a server that refuses to serve batch inputs
        warn(f"{_name(shard)}: cannot download its input file ({exc}); {_unread(shard)}")
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
    manifest: Path | None = None,
) -> set[str]:
    """Index every shard's input lines once (again when the file changed), then link the rounds.

    ``shards`` in the job's order, never-sent ones of the first round included (their lines are listed as
    missing). The rows are kept in that order: once a shard's lines are indexed anew (after the later
    shards' were), the later shards' are indexed again behind them. With ``files_only`` only the shards
    whose input can be read are indexed (this may run while the downloads do: the lock is held one slice
    of rows at a time); the others, listed by what they answered, and the rounds' links are left for a
    call without it, after the downloads (``skip``: the batches the first call indexed). ``manifest``:
    the job's, named in the never-sent requests' advice. Returns the keys whose input file is indexed."""
    indexed: set[str] = set()
    keys = {input_key(shard) for shard in shards}
    with lock:  # inputs listed while never sent, of a shard sent since (or planned afresh): not the job's now
        for src, key in store.source_keys():
            if is_never_sent(key) and key not in keys:
                store.drop_source(src)
    moved = False  # a shard's rows were (re)built behind later shards': those are indexed again after it
    for position, shard in enumerate(shards):
        key = input_key(shard)
        if key in skip and not moved:
            indexed.add(key)
            continue
        round_number = position + 1 if by_content else int(shard.round or 1)
        with lock:
            known = store.source(key)
        path = input_path(client, shard, out_dir) if shard.batch_id else unsent_path(client, shard, out_dir)
        if path is not None:
            indexed.add(key)
            moved = _index_file(store, lock, key, round_number, path, known, again=moved) or moved
        elif not shard.batch_id:  # never sent, and unreadable (said why): nothing to list
            if known:
                with lock:
                    store.drop_source(known[0])
        elif not files_only:  # what was answered, in custom_id order: rebuilt when more has arrived
            with lock:
                answered = [(c, None, -1, 0, 0, 0) for c in store.answered(key)]
                if known and known[4] and known[2] == len(answered) and not moved:
                    continue  # as listed before, in its place (its size holds how many it lists)
                if known:
                    store.drop_source(known[0])
                store.add_source(key, round_number, None, len(answered), 0, answered)
            moved = moved or bool(answered)
    if not files_only:
        with lock:
            if manifest is not None:
                store.set_meta(MANIFEST_META, str(manifest.resolve()))
            store.link_rounds(by_content)
            store.commit()
    return indexed


def _index_file(
    store: Store,
    lock: Any,
    key: str,
    round_number: int,
    path: Path,
    known: tuple[int, str | None, int, int, int] | None,
    *,
    again: bool,
) -> bool:
    """Index one input file's lines (unless indexed already as it is, and ``again`` is false); returns
    whether it was indexed now (its rows are then behind every other source's)."""
    stat = path.stat()
    if not again and known and known[1] == str(path) and known[2:4] == (stat.st_size, stat.st_mtime_ns):
        return False
    with lock:
        if known:
            store.drop_source(known[0])
        # size -1 until every row is in: a commit by the downloads meanwhile, then a kill, leaves
        # a source that the next run sees as changed and indexes again
        src = store.add_source(key, round_number, str(path), -1, 0, ())
    rows = _rows(path)
    while True:
        part = list(islice(rows, INSERT_ROWS))
        with lock:
            if not part:
                store.finish_source(src, stat.st_size, stat.st_mtime_ns)
                return True
            store.add_inputs(src, key, round_number, part)
