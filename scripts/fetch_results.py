#!/usr/bin/env python3
"""Download batch results and errors resumably, then join them with the inputs."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import requests

from doubleword.api import content_response, download_file, get_batch
from doubleword.cli import Progress, info, make_parser, run, seconds, warn
from doubleword.client import ApiClient, ApiError
from doubleword.config import DELETED, UNSUCCESSFUL_STATUSES
from doubleword.errors import BusyError, ExitCode, InputError, ServiceError, UsageError
from doubleword.manifest import (
    Manifest,
    Shard,
    add_target_args,
    client_for,
    exclusive_lock,
    load_targets,
    new_shard,
    record_batch,
)
from doubleword.results import join
from doubleword.status import describe_batch, is_terminal

EXAMPLES = """\
  python3 scripts/fetch_results.py --manifest jobs.jsonl.manifest.json
  python3 scripts/fetch_results.py --manifest jobs.jsonl.manifest.json --follow --timeout 7200
  python3 scripts/fetch_results.py 0b6c5f1e-2a8d-4c1b-9e37-5d2f8a1c4b90 --out results/"""

DESCRIPTION = """\
Download the output and error files of batches into --out DIR (default beside the manifest), resuming
where the last run stopped, even while the batches run (partial results). Writes output.jsonl and
errors.jsonl (raw lines as served, de-duplicated by line id), results.jsonl (one line per input request,
in input order: custom_id, status completed|failed|pending|missing, content or embedding, usage, error)
and retry.jsonl (the original request lines that failed or were never answered, ready for submit.py).
--follow keeps downloading until every batch is terminal (bounded by --timeout). One fetch runs per output
directory at a time: a second one exits 7 at once (poll.py may run alongside)."""

KINDS = {"output": ("output_file_id", "output.jsonl"), "errors": ("error_file_id", "errors.jsonl")}
RUN_LOCK = ".fetch.lock"  # one fetch per output directory: two would append to the same files
COMMIT_LINES = 10_000  # save the cursor at least this often (and at least every COMMIT_SECONDS)
COMMIT_SECONDS = 1.0
STREAM_RETRIES = 5
DOWNLOAD_CHUNK = 1 << 18  # bytes per read of a streamed body
STATE_NAME = "fetch.manifest.json"


def build_parser() -> Any:
    parser = make_parser("fetch_results.py", DESCRIPTION, EXAMPLES, exit_codes=tuple(ExitCode))
    add_target_args(parser)
    parser.add_argument("--out", help="output directory (default: beside the manifest)")
    parser.add_argument(
        "--follow", action="store_true", help="keep downloading until every batch is terminal"
    )
    parser.add_argument(
        "--timeout", type=seconds, default=3600.0, help="with --follow: give up after SECONDS (default 3600)"
    )
    parser.add_argument(
        "--interval", type=seconds, default=10.0, help="with --follow: seconds between checks (default 10)"
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=0,
        metavar="N",
        help="download in pages of N lines (1-100); default 0 = one streamed request per file per check",
    )
    return parser


# --------------------------------------------------------------------------- raw line files


class Sink:
    """An append-only raw line file whose committed length lives in the manifest.

    On open the file is cut back to the committed length (a killed run may have written more), and the
    ids of the lines already on disk are collected for de-duplication.
    """

    def __init__(self, path: Path, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state
        committed = int(state.get("bytes", 0))
        size = path.stat().st_size if path.exists() else 0
        self.reset = False
        if size < committed:  # the file was removed or cut by hand: download it again
            warn(f"{path} is shorter than recorded; downloading it again from the start")
            committed = 0
            self.reset = True
        with open(path, "ab") as handle:
            handle.truncate(committed)
        state["bytes"] = committed
        # Which batch wrote which bytes: [[start byte, batch id], ...]. Lines are joined to inputs per
        # batch, since two batches may use the same custom_ids (a wrong join otherwise).
        segments = state.get("segments")
        state["segments"] = [
            s
            for s in (segments if isinstance(segments, list) else [])
            if isinstance(s, list) and len(s) == 2 and isinstance(s[0], int) and s[0] < committed
        ]
        self.batch_id: str | None = None
        self.seen: set[int | str] = set()
        lines = 0
        with open(path, "rb") as handle:
            for raw in handle:
                lines += 1
                line_id = _line_id(raw)
                if line_id:
                    self.seen.add(_seen_key(line_id))
        state["lines"] = lines
        self.handle = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.pending = 0

    def add(self, raw: bytes, line_id: str | None) -> bool:
        """Append a served line unless its id is already on disk."""
        if line_id is not None:
            key = _seen_key(line_id)
            if key in self.seen:
                return False
            self.seen.add(key)
        data = raw + b"\n"
        segments = self.state["segments"]
        if self.batch_id is not None and (not segments or segments[-1][1] != self.batch_id):
            segments.append(
                [int(self.state.get("bytes", 0)) + self.state.get("pending_bytes", 0), self.batch_id]
            )
        self.handle.write(data)
        self.state["pending_bytes"] = self.state.get("pending_bytes", 0) + len(data)
        self.pending += 1
        return True

    def commit(self) -> None:
        """Make the appended lines durable; the caller then saves the cursor."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.state["bytes"] = int(self.state.get("bytes", 0)) + int(self.state.pop("pending_bytes", 0))
        self.state["lines"] = int(self.state.get("lines", 0)) + self.pending
        self.pending = 0

    def close(self) -> None:
        self.handle.close()
        self.seen = set()  # the ids are not needed after the download: free them before the join


def _finish_stamp(batch: dict[str, Any]) -> str:
    """When and how a batch finished; it changes only if the batch runs again (a /retry) and re-finishes."""
    return "|".join(f"{key}={batch.get(key)}" for key in ("completed_at", "failed_at", "cancelled_at"))


_ID_HEAD = b'{"id":"'
_REQUEST_ID = re.compile(r"batch_req_([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})")


def _seen_key(line_id: str) -> int | str:
    """The id as held in the de-duplication set: Doubleword's ``batch_req_<uuid>`` as its 128-bit number
    (44 bytes instead of 95; the set is what grows with the batch), any other id as it is. Exact: a
    number and a string never compare equal, and only the canonical lower-case form is converted."""
    match = _REQUEST_ID.fullmatch(line_id)
    return int("".join(match.groups()), 16) if match else line_id


def _line_id(raw: bytes) -> str | None:
    # Servers write the id first ({"id":"batch_req_...",...}): read it without parsing the whole line,
    # which was most of the download's CPU time. Anything else (escapes, other layouts) is parsed.
    if raw.startswith(_ID_HEAD):
        end = raw.find(b'"', len(_ID_HEAD))
        if end > 0 and b"\\" not in raw[len(_ID_HEAD) : end] and raw.rstrip().endswith(b"}"):
            try:
                return raw[len(_ID_HEAD) : end].decode("utf-8")
            except UnicodeDecodeError:
                pass
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    value = line.get("id") if isinstance(line, dict) else None
    return str(value) if value is not None else None


# --------------------------------------------------------------------------- downloading


class Fetcher:
    def __init__(self, client: ApiClient, manifest: Manifest, out_dir: Path, page_size: int) -> None:
        self.client = client
        self.manifest = manifest
        self.out_dir = out_dir
        self.page_size = page_size
        fetch = manifest.fetch
        if not isinstance(fetch, dict) or fetch.get("out_dir") != str(out_dir):
            if fetch:
                info(f"downloading into a new directory {out_dir}; starting the downloads afresh")
            fetch = {"out_dir": str(out_dir), "files": {}}
            for shard in manifest.shards:
                shard["downloads"] = {}
            manifest.fetch = fetch
        out_dir.mkdir(parents=True, exist_ok=True)
        self.sinks: dict[str, Sink] = {}
        for kind, (_, name) in KINDS.items():
            state = fetch["files"].setdefault(kind, {"path": name, "bytes": 0, "lines": 0})
            state.pop("pending_bytes", None)
            sink = Sink(out_dir / name, state)
            if sink.reset:
                for shard in manifest.shards:
                    shard.get("downloads", {}).pop(kind, None)
            self.sinks[kind] = sink
        manifest.save()

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def save(self) -> None:
        self.manifest.save()

    def refresh(self, shard: Shard) -> dict[str, Any]:
        try:
            batch = get_batch(self.client, shard["batch_id"])
        except ApiError as exc:
            # A batch deleted on the server keeps its output and error files: fetch what it produced.
            if exc.status != 404 or not (shard.get("output_file_id") or shard.get("error_file_id")):
                raise
            if shard.get("status") != DELETED:
                warn(
                    f"batch {shard['batch_id']} no longer exists on the server (deleted?); downloading "
                    "the output and error files recorded in the manifest"
                )
            shard["status"] = DELETED
            return {
                "id": shard["batch_id"],
                "status": DELETED,
                "output_file_id": shard.get("output_file_id"),
                "error_file_id": shard.get("error_file_id"),
                "request_counts": shard.get("request_counts"),
            }
        record_batch(shard, batch)
        return batch

    def download(self, shard: Shard, kind: str, batch: dict[str, Any]) -> None:
        """Bring one file of one batch up to date from its cursor."""
        id_key, _ = KINDS[kind]
        file_id = batch.get(id_key)
        terminal = is_terminal(batch.get("status"))
        downloads = shard.setdefault("downloads", {})
        cursor = downloads.get(kind)
        if not isinstance(cursor, dict) or cursor.get("file_id") != file_id:
            cursor = {"file_id": file_id, "skip": 0, "complete": False}
            downloads[kind] = cursor
        finished = _finish_stamp(batch) if terminal else None
        if finished and cursor.get("finished") not in (None, finished):
            # The batch finished again since we last saw it finished: a /retry ran in between. Failed
            # rows left the error file and new ones were appended, so positions shifted under the cursor.
            cursor["complete"] = False
            if kind == "errors":
                info(f"batch {shard['batch_id']}: finished again after a retry; re-reading its error file")
                cursor["skip"] = 0
        if finished:
            cursor["finished"] = finished
        counts = batch.get("request_counts") or {}
        served = counts.get("completed" if kind == "output" else "failed")
        if not terminal or (isinstance(served, int) and served != cursor["skip"]):
            # Still running, or the counts moved since (a /retry ran, perhaps already finished).
            cursor["complete"] = False
        if cursor["complete"]:
            return
        if not file_id:  # OpenAI: no file yet, or never (output of an all-failed batch)
            cursor["complete"] = terminal
            return
        if kind == "errors" and isinstance(served, int) and cursor["skip"] > served:
            info(f"batch {shard['batch_id']}: the error file shrank (a retry?); reading it again from 0")
            cursor["skip"] = 0
        headers_seen = self.manifest.fetch.get("server_headers")
        if terminal and batch.get("status") != "cancelled" and served == cursor["skip"] and headers_seen:
            # Everything the counts promise is on disk and the batch cannot add lines any more.
            cursor["complete"] = True
            return
        if not terminal and headers_seen and served == cursor["skip"]:
            return  # still running, but the counts promise no line past the cursor: no request yet
        for _ in range(10_000):  # pages; a bound against a server that never ends a file
            more = self._fetch_once(shard, kind, cursor, terminal)
            if not more:
                return

    def _fetch_once(self, shard: Shard, kind: str, cursor: dict[str, Any], terminal: bool) -> bool:
        """One content request from the cursor; True if another request should follow right away."""
        sink = self.sinks[kind]
        attempts = 0
        while True:
            start = cursor["skip"]
            response = content_response(self.client, cursor["file_id"], start, self.page_size or None)
            incomplete_header = response.headers.get("X-Incomplete")
            if incomplete_header is None and not terminal:
                # A server without the headers (OpenAI): download once, after the batch is terminal.
                response.close()
                return False
            if incomplete_header is not None:
                self.manifest.fetch["server_headers"] = True
            try:
                received = self._stream(response, sink, cursor, start, str(shard["batch_id"]))
                break
            except (requests.exceptions.RequestException, OSError) as exc:
                attempts += 1
                if attempts > STREAM_RETRIES:
                    raise ServiceError(f"downloading {kind} of batch {shard['batch_id']} kept failing: {exc}")
                warn(f"download of {kind} interrupted ({exc}); resuming from line {cursor['skip']}")
                time.sleep(min(10.0, 0.5 * 2**attempts))
            finally:
                response.close()
        if incomplete_header is None:
            cursor["complete"] = True  # terminal, and there are no headers to say more
            self.save()
            return False
        incomplete = incomplete_header.strip().lower() == "true"
        if not incomplete and terminal:
            cursor["complete"] = True
            self.save()
            return False
        if self.page_size:
            return received >= self.page_size  # a full page: there may be more right now
        return False

    def _stream(
        self, response: requests.Response, sink: Sink, cursor: dict[str, Any], start: int, batch_id: str
    ) -> int:
        """Append the body's lines, committing the cursor every so often; returns lines received."""
        received = 0
        buffer = b""
        last_commit = time.monotonic()
        sink.batch_id = batch_id

        def commit() -> None:
            nonlocal last_commit
            sink.commit()
            cursor["skip"] = start + received
            self.save()
            last_commit = time.monotonic()

        try:
            for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    raw = raw.rstrip(b"\r")
                    if not raw.strip():
                        continue
                    received += 1
                    line_id = _line_id(raw)
                    sink.add(raw, line_id)
                    if sink.pending >= COMMIT_LINES or time.monotonic() - last_commit >= COMMIT_SECONDS:
                        commit()
            tail = buffer.strip()
            if tail:
                try:  # a last line without "\n" counts only if it is whole JSON
                    json.loads(tail.decode("utf-8", "replace"))
                except ValueError:
                    raise requests.exceptions.ChunkedEncodingError("the body ended inside a line")
                received += 1
                sink.add(tail, _line_id(tail))
        finally:
            commit()
        return received


# --------------------------------------------------------------------------- the command


def main(argv: list[str]) -> tuple[dict[str, Any], int]:
    args = build_parser().parse_args(argv)
    if not 0 <= args.page_size <= 100:
        raise UsageError("--page-size must be between 1 and 100 (or 0 for streamed downloads)")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    manifest, ids = load_targets(args)
    client = client_for(args, manifest)
    if manifest is None:
        manifest, out_dir = manifest_for_ids(client, ids, args.out)
    else:
        out_dir = Path(args.out) if args.out else default_out_dir(manifest)
    out_dir = out_dir.resolve()
    with exclusive_lock(out_dir / RUN_LOCK, wait=False) as mine:
        if not mine:
            raise BusyError(
                f"another fetch_results.py is already downloading into {out_dir}; let it finish "
                "(or stop it), then run this again; it resumes where the other stopped"
            )
        return fetch(args, client, manifest, out_dir)


def fetch(args: Any, client: ApiClient, manifest: Manifest, out_dir: Path) -> tuple[dict[str, Any], int]:
    """The download loop, run while holding the output directory's lock."""
    fetcher = Fetcher(client, manifest, out_dir, args.page_size)
    progress = Progress() if args.follow else None
    deadline = time.monotonic() + max(0.0, args.timeout)
    shards = [s for s in manifest.shards if s.get("batch_id")]  # a partly submitted manifest
    try:
        while True:
            checked_at = time.monotonic()
            batches = {}
            for shard in shards:
                batches[shard["batch_id"]] = fetcher.refresh(shard)
            fetcher.save()
            for shard in shards:
                for kind in KINDS:
                    fetcher.download(shard, kind, batches[shard["batch_id"]])
            fetcher.save()
            complete = all(
                is_terminal(batches[s["batch_id"]].get("status"))
                and all(s["downloads"].get(k, {}).get("complete") for k in KINDS)
                for s in shards
            )
            if progress is not None:
                lines = {k: fetcher.sinks[k].state.get("lines", 0) for k in KINDS}
                progress.update(
                    f"{lines['output']} output and {lines['errors']} error lines on disk; "
                    f"{sum(is_terminal(b.get('status')) for b in batches.values())}/{len(batches)} batches terminal"
                )
            if complete or not args.follow or time.monotonic() >= deadline:
                break
            # One check every --interval (not --interval after each check's downloads): a line is on
            # disk at most one interval after it completed.
            now = time.monotonic()
            time.sleep(max(0.0, min(checked_at + args.interval - now, deadline - now)))
    finally:
        fetcher.close()
        if progress is not None:
            progress.done()
    summary = write_results(client, manifest, out_dir, batches)
    statuses = [b.get("status") for b in batches.values()]
    if not complete:
        code = ExitCode.NOT_FINISHED
    elif any(s in UNSUCCESSFUL_STATUSES for s in statuses):
        code = ExitCode.BATCH_UNSUCCESSFUL
    else:
        code = ExitCode.OK
    result: dict[str, Any] = {"ok": True, "complete": complete, **summary}
    result["batches"] = [
        {k: v for k, v in describe_batch(b).items() if k not in ("metadata", "in_progress_at")}
        for b in batches.values()
    ]
    result["manifest"] = str(manifest.path)
    result["api_calls"] = client.calls
    if args.follow and not complete:
        info(f"fetch_results.py: --timeout {args.timeout:g}s reached before every batch finished")
    return result, int(code)


def default_out_dir(manifest: Manifest) -> Path:
    recorded = (manifest.fetch or {}).get("out_dir")
    if recorded:
        return Path(recorded)
    name = manifest.path.name.removesuffix(".json").removesuffix(".manifest").removesuffix(".jsonl")
    return manifest.path.resolve().parent / f"{name}.results"


def manifest_for_ids(client: ApiClient, ids: list[str], out: str | None) -> tuple[Manifest, Path]:
    """For bare batch ids: a small manifest inside the output directory holds the cursors."""
    out_dir = Path(out) if out else Path(f"results-{ids[0]}")
    path = out_dir / STATE_NAME
    if Manifest.exists(path):
        manifest = Manifest.load(path)
        if manifest.batch_ids() != ids:
            raise InputError(
                f"{out_dir} holds results of other batches ({', '.join(manifest.batch_ids())}); "
                "choose another --out"
            )
        return manifest, out_dir
    manifest = Manifest.new(path)
    for batch_id in ids:
        batch = get_batch(client, batch_id)
        shard = new_shard(
            len(manifest.shards),
            batch_id=batch_id,
            upload_state="done",
            create_state="done",
            file_id=batch.get("input_file_id") or "",
        )
        record_batch(shard, batch)
        manifest.add_shard(shard)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.save()
    return manifest, out_dir


def input_for(client: ApiClient, manifest: Manifest, shard: Shard, out_dir: Path) -> Path | None:
    """The shard's input lines: the recorded file, else a downloaded copy of the input file."""
    if shard.get("path") and Path(shard["path"]).is_file():
        return Path(shard["path"])
    copy = out_dir / f"input-{shard['index']:03d}.jsonl"
    if copy.is_file():
        return copy
    if not shard.get("file_id"):
        warn(f"batch {shard['batch_id']}: its input file is gone; results list only what was answered")
        return None
    info(f"batch {shard['batch_id']}: downloading its input file to join results in input order")
    try:
        download_file(client, shard["file_id"], copy)
    except (ApiError, ServiceError) as exc:  # deleted, or a server that refuses to serve batch inputs
        warn(
            f"batch {shard['batch_id']}: cannot download its input file ({exc}); results list only what was answered"
        )
        return None
    return copy


def write_results(
    client: ApiClient, manifest: Manifest, out_dir: Path, batches: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    inputs = [
        (
            s["batch_id"],
            input_for(client, manifest, s, out_dir),
            is_terminal(batches[s["batch_id"]].get("status")),
        )
        for s in manifest.shards
    ]
    paths = {name: out_dir / f"{name}.jsonl" for name in ("output", "errors", "results", "retry")}
    files = manifest.fetch["files"]
    segments = {kind: files.get(kind, {}).get("segments") or [] for kind in KINDS}
    joined = join(inputs, paths["output"], paths["errors"], paths["results"], paths["retry"], segments)
    for shard in manifest.shards:
        if shard.get("batch_id") in batches:
            shard["final_counts"] = joined["per_batch"].get(str(shard["batch_id"]))
    manifest.save()
    return {
        "out_dir": str(out_dir),
        "files": {k: str(v) for k, v in paths.items()},
        "counts": joined["counts"],
        "usage": joined["usage"],
        "failures_by_type": joined["failures_by_type"],
        "failure_groups": joined["failure_groups"],
        "lines_on_disk": {k: manifest.fetch["files"][k].get("lines", 0) for k in KINDS},
    }


if __name__ == "__main__":
    sys.exit(run(main))
