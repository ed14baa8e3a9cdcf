"""The resumable download engine: output and error files page by page, decoded once as the bytes arrive.

Content is read with ``skip`` (never ``offset``) from a cursor per batch and file, kept in the manifest
(``shards[].downloads``); the served lines are appended to ``output.jsonl`` / ``errors.jsonl`` (raw, as
served, de-duplicated by line id) whose committed lengths the manifest also keeps (``fetch.files``). Each
line is decoded once, on arrival, into a row of the fetch index (:mod:`doubleword.store`), so results are
written later without reading the output again. A commit (raw files synced, index committed, manifest saved)
happens every :data:`COMMIT_LINES` lines or :data:`COMMIT_SECONDS`; a run killed at any point resumes exactly:
raw bytes past the committed length are cut, index rows past it are dropped, and re-served lines are
recognised by their id. Separate batches download concurrently (:data:`DOWNLOAD_WORKERS`).

A reply that is not NDJSON of output lines (an HTML page, a wrong content type, lines that are not line
objects) is a fault that moves no cursor and is retried; a server that ignores ``skip`` (repeated pages) is
detected; a finished batch is read until the server has no more, whatever its page size
(``references/api_reference.md``, downloading file content).
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import requests

from doubleword import committer
from doubleword.answers import decode_line, encode_line
from doubleword.api import content_response, get_batch
from doubleword.batch_inputs import index_inputs
from doubleword.cli import Progress, info, result_of, warn
from doubleword.client import ApiClient, ApiError
from doubleword.committer import Committer, Gate, stop_if_interrupted, stop_on_interrupt
from doubleword.config import DELETED
from doubleword.endpoints import endpoint_for_url
from doubleword.errors import BusyError, ExitCode, InputError, Interrupted, ServiceError, UsageError
from doubleword.files import AtomicFile, atomic_write_text
from doubleword.inorder import OrderTracker, Ranges, ResultsDraft, appended
from doubleword.manifest import Manifest, Shard, exclusive_lock, fetch_state, record_batch, sha256_file
from doubleword.remote import delete_remote, early_analytics, job_cost
from doubleword.results import Run, join, whole_file
from doubleword.rounds import check_command, resubmit_command
from doubleword.sinks import BadContent, RecordFile, ReplyReader, Sink, check_content_type, served_lines
from doubleword.status import describe_batch, is_terminal, suggested_check
from doubleword.store import FOLDER_FILES, JOB_MARK, RECORDS_NAME, RESULTS_NAME, RETRY_NAME, Store

KINDS = {"output": ("output_file_id", "output.jsonl", 0), "errors": ("error_file_id", "errors.jsonl", 1)}
STREAM_RETRIES = 5
DOWNLOAD_CHUNK = 1 << 16  # bytes per read of a streamed body (each download holds a few chunks' lines)
DOWNLOAD_WORKERS = 2  # batches downloaded at the same time (each holds its chunks and their decoded lines)
MAX_SERVED_LINE_BYTES = 32 << 20  # an output line past this is a fault (the longest real ones: ~1 MB)
PREFETCH_CHUNKS = 1  # chunks read ahead of the decoding (one is enough to keep the server sending)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def finish_stamp(batch: dict[str, Any]) -> str:
    """When and how a batch finished; it changes only if the batch runs again (a /retry) and re-finishes."""
    return "|".join(f"{key}={batch.get(key)}" for key in ("completed_at", "failed_at", "cancelled_at"))


class Engine:
    """Downloads of one job into one output folder (the caller holds the folder's run lock)."""

    def __init__(
        self, client: ApiClient, manifest: Manifest, out_dir: Path, page_size: int = 0, draft: bool = False
    ) -> None:
        self.client, self.manifest, self.out_dir, self.page_size = client, manifest, out_dir, page_size
        self.lock = threading.RLock()
        state = fetch_state(manifest)
        if state.get("out_dir") != str(out_dir):
            if state.get("out_dir"):
                info(f"downloading into a new directory {out_dir}; starting the downloads afresh")
            state.clear()
            state.update({"out_dir": str(out_dir), "files": {}})
            for shard in manifest.shards:
                shard.downloads = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(out_dir)
        self.store.drop_join_index()
        self.records = RecordFile(out_dir / RECORDS_NAME, self.store, out_dir / RESULTS_NAME)
        self.sinks: dict[str, Sink] = {}
        self.sent = {str(s.batch_id): s for s in manifest.shards if s.batch_id}
        self.committer = Committer(self.lock, manifest)  # syncs and writes each commit (doubleword.committer)
        # set by a Ctrl-C: the other threads stop at their next step (the client's: their requests are cut)
        self.interrupted = client.interrupted
        for kind, (_, name, number) in KINDS.items():
            files = state.setdefault("files", {})
            sink = Sink(out_dir / name, files.setdefault(kind, {"path": name, "bytes": 0, "lines": 0}))
            if sink.reset:
                for shard in manifest.shards:
                    shard.downloads.pop(kind, None)
            if kind == "output":  # before the cut: rows held apart are rows of this file too
                self._rebuild_held(sink)
            last = self.store.cut(number, 0 if self.records.reset else int(sink.state["bytes"]))
            if last < 0 < int(sink.state["bytes"]):
                # Lines on disk that the index does not hold (it was removed, or an older version wrote
                # them): which batch each came from is not known, so this file is downloaded again.
                info(f"{sink.path.name} is not indexed; downloading it again from the start")
                sink.truncate()
                for shard in manifest.shards:
                    shard.downloads.pop(kind, None)
            self.sinks[kind] = sink
        # answers checked against their inputs as they arrive, per batch (None: not checked)
        self.trackers: dict[str, OrderTracker | None] = {}
        self.proofs: dict[str, Future[str]] = {}  # the input digest of each batch to be tracked
        self.one_round = len({int(s.round or 1) for s in manifest.shards}) == 1
        self.disordered = False
        self.on_disorder: Callable[[], Any] = lambda: None
        # results.jsonl written as the in-order answers arrive (the committer copies them). One batch's
        # tracked answers are one stretch of the record file, whatever order they came in, which the join
        # links instead: the draft is for several batches (their records interleave).
        self.draft: ResultsDraft | None = None
        if draft and self.one_round and len(self.sent) > 1:
            self.draft = ResultsDraft(out_dir / RESULTS_NAME, self.records.path, list(self.sent))
        self.last_commit = time.monotonic()
        self.commit()  # while the first requests go out (as are the download's commits)

    def _rebuild_held(self, sink: Sink) -> None:
        """Answers that waited in a tracker (for earlier input lines) when the last run was stopped: their
        rows were held apart (:meth:`doubleword.store.Store.hold`), their records never appended. Those
        records are made again from the raw lines of ``sink`` (output.jsonl), and appended with their rows."""
        if self.records.trimmed:  # rows of records past the committed length: their answers were held
            self.store.cut_records(self.records.committed)
        heads = self.store.take_held()
        if not heads or self.records.reset:  # a record file begun again: the index is rebuilt from nothing
            return
        committed = int(sink.state["bytes"])
        answers = []
        with open(sink.path, "rb") as raw:
            for head in heads:
                if head[1] >= committed:
                    continue  # past what the manifest names: downloaded again
                raw.seek(head[1])
                shard = self.sent.get(str(head[3]))
                item = encode_line(
                    raw.readline().rstrip(b"\r\n"), head[3], endpoint_for_url(shard and shard.endpoint)
                )
                if item is not None:
                    answers.append((head, item[6]))
        rows, records = appended(answers, self.records.end())
        self.records.append(rows, records)
        self.store.add_records(rows)

    def ordered_runs(self, shards: list[Shard]) -> list[Run] | None:
        """The job's results as runs of the record file when every batch came back complete and in input
        order (every tracker saw every input line answered); else None (index and join)."""
        if self.disordered or not self.one_round:
            return None
        runs = []
        for shard in shards:
            tracker = self.trackers.get(str(shard.batch_id))
            proof = self.proofs.get(str(shard.batch_id))
            if tracker is None or proof is None or not _matches(proof, shard.sha256):
                return None
            if not tracker.complete or not shard_finished(shard):
                return None
            ranges = tracker.ranges
            head = self.records_head(ranges[0][0])
            runs.append(Run(tracker.batch_id, ranges, tracker.count, tracker.tokens, head, ranges.released))
        return runs or None

    def records_head(self, offset: int) -> bytes:
        with open(self.records.path, "rb") as handle:
            handle.seek(offset)
            return handle.readline().rstrip(b"\n")

    def close(self, held: contextlib.ExitStack | None = None) -> None:
        """Wait for the last commit (the manifest durable before anything is reported), then close the
        files. Interrupted (Ctrl-C), the wait is bounded by ``committer.COMMIT_GRACE``: a committer still
        syncing then (a slow disk) is left to end with the process, a daemon thread that writes no
        manifest from then on, and the files stay open under it. The manifest on disk is then an earlier
        commit's, naming no more than was synced: a re-run resumes from it. What ``held`` holds (the run
        lock) is then the committer's to release (:meth:`Committer.abandon`)."""
        for tracker in self.trackers.values():
            if tracker is not None:
                tracker.retire()
        try:
            self.committer.settle(committer.COMMIT_GRACE if self.interrupted.is_set() else None)
        finally:
            if not self.committer.abandon(held):
                if self.draft is not None:
                    self.draft.discard()
                with self.lock:
                    for sink in self.sinks.values():
                        sink.close()
                    self.records.close()
                    self.store.close()

    def commit(self) -> None:
        """Record everything appended: handed to the system and counted now (a reader of the files sees
        it), then synced, then the manifest naming the lengths is written, by the committer thread while
        the download goes on (a sync held the reading ~15-25 ms). A commit asked for while one is being
        written is written right after it (only the newest state: its syncs cover the older), so nobody
        waits; :meth:`close` waits for the last, so the manifest is durable before the fetch reports
        anything. The index, a cache, is committed without a sync. What the committer met is raised here,
        or by :meth:`close`."""
        with self.lock:
            self.committer.raise_error()
            descriptors = [sink.flush() for sink in self.sinks.values()]
            descriptors.append(self.records.flush())
            copy = (
                Ranges()
                if self.draft is None
                else self.draft.due(self.trackers, lambda b: shard_finished(self.sent[b]))
            )
            for tracker in self.trackers.values():  # the rows of answers waiting: kept apart
                if tracker is not None and tracker.handle is not None and tracker.ahead:
                    self.store.hold(tracker.batch_id, [head for head, _ in tracker.ahead.values()])
                    tracker.held = True
                elif tracker is not None and tracker.held:
                    self.store.release(tracker.batch_id)
                    tracker.held = False
            self.store.commit()
            self.committer.hand(descriptors, self.manifest.snapshot(), copy, self.draft)
            self.last_commit = time.monotonic()

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        """A Ctrl-C in the block stops the other threads at their next step (:func:`stop_on_interrupt`)."""
        return stop_on_interrupt(self.interrupted)

    def check(self) -> None:
        """Stop this thread's download if the fetch was interrupted."""
        stop_if_interrupted(self.interrupted)

    def drafted(self, ordered: list[Run] | None) -> AtomicFile | None:
        """results.jsonl as written during the download, completed to ``ordered`` (the job's runs), to be
        put in place by the join; None when the join writes it (not every batch came back in order)."""
        self.committer.settle()  # what the committer was handed is written
        with self.lock:
            draft, self.draft = self.draft, None
            unwritten = self.committer.take_copy()  # none: nothing commits now
        if draft is None:
            return None
        if ordered is None or whole_file(ordered, self.records.end()):  # (the join links that file)
            draft.discard()
            return None
        draft.write(unwritten)
        return draft.complete(ordered)

    # -- batches

    def refresh(self, shard: Shard) -> dict[str, Any]:
        """The batch as the server says now (recorded in the shard); a deleted one from the manifest."""
        try:
            batch = get_batch(self.client, str(shard.batch_id))
        except ApiError as exc:
            # A batch deleted on the server keeps its output and error files: fetch what it produced.
            if exc.status != 404 or not (shard.output_file_id or shard.error_file_id):
                raise
            if shard.status != DELETED:
                warn(
                    f"batch {shard.batch_id} no longer exists on the server (deleted?); downloading "
                    "the output and error files recorded in the manifest"
                )
            shard.status = DELETED
            return recorded_batch(shard)
        with self.lock:
            record_batch(shard, batch)
        return batch

    def refresh_all(self, shards: list[Shard]) -> dict[str, dict[str, Any]]:
        return {str(s.batch_id): self.refresh(s) for s in shards}

    def download_all(self, work: list[tuple[Shard, dict[str, Any]]]) -> None:
        """Bring every file of every (shard, batch) up to date, several batches at a time."""
        tasks = [(shard, kind, batch) for shard, batch in work for kind in KINDS]
        if len(work) <= 1:
            for task in tasks:
                self.download(*task)
            return
        with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool, self.interruptible():
            for future in [pool.submit(self.download, *task) for task in tasks]:
                result_of(future)

    def download(self, shard: Shard, kind: str, batch: dict[str, Any]) -> None:
        """Bring one file of one batch up to date from its cursor."""
        cursor = self._cursor(shard, kind, batch)
        if cursor is None:
            return
        if kind == "output":
            self._track(shard)
        for _ in range(10_000):  # requests; a bound against a server that never ends a file
            self.check()
            if not self._fetch_once(shard, kind, cursor, batch):
                return

    def _track(self, shard: Shard) -> None:
        """Check this batch's answers against its input file as they arrive (:mod:`doubleword.inorder`)
        when this run reads the batch from its first line, in a one-round job, with the local input
        unchanged; else the inputs are indexed (started now, beside the downloads). The input's digest
        is taken in a thread while the content request waits for its first byte (:meth:`_tracker`)."""
        batch_id = str(shard.batch_id)
        with self.lock:
            if batch_id in self.trackers or batch_id in self.proofs:
                return
            downloads = shard.downloads or {}
            fresh = all(int((downloads.get(k) or {}).get("high", 0)) == 0 for k in KINDS)
            local = shard.path
            usable = fresh and self.one_round and local and shard.sha256 and Path(local).is_file()
            if not usable:
                self.trackers[batch_id] = None
                self.disorder()
                return
            digest: Future[str] = Future()
            self.proofs[batch_id] = digest
        threading.Thread(target=_digest, args=(digest, local), name="input-digest", daemon=True).start()

    def _tracker(self, shard: Shard) -> None:
        """The batch's tracker, started at once (the first lines are not held up by the digest); a digest
        that is not the manifest's retires it as soon as it is known, and a run is used only once proven."""
        batch_id = str(shard.batch_id)
        with self.lock:
            digest = self.proofs.get(batch_id)
            if digest is None or batch_id in self.trackers:  # not tracked, or started by an earlier reply
                return
            self.trackers[batch_id] = OrderTracker(batch_id, Path(str(shard.path)))
        digest.add_done_callback(partial(self._refuted, batch_id, shard.sha256))

    def _refuted(self, batch_id: str, expected: str | None, digest: Future[str]) -> None:
        if not _matches(digest, expected):
            with self.lock:
                tracker = self.trackers.get(batch_id)
                if tracker is not None:
                    self.stop_tracking(tracker)
                self.trackers[batch_id] = None
                self.disorder()

    def stop_tracking(self, tracker: OrderTracker) -> None:
        """Retire a tracker: the answers waiting in it are appended as they are (the caller holds the lock)."""
        rows, records = appended(tracker.retire(), self.records.end())
        self.records.append(rows, records)
        self.store.add_records(rows)
        self.retired(tracker)

    def retired(self, tracker: OrderTracker) -> None:
        """A tracker gave up (its answers are appended): the join will need the inputs indexed."""
        if tracker.held:
            self.store.release(tracker.batch_id)
            tracker.held = False
        self.disorder()

    def settle_trackers(self) -> None:
        """Once this run's downloads are done: a tracker that saw every input answered in order is
        complete; any other is retired (answers still waiting for an input line are appended, and
        committed)."""
        with self.lock:
            left = [t for t in self.trackers.values() if t is not None and t.handle is not None]
            undone = [tracker for tracker in left if not tracker.finished()]
            for tracker in undone:
                self.stop_tracking(tracker)
        if undone:
            self.commit()

    def disorder(self) -> None:
        """Answers that are not simply in input order (or cannot be checked): the join will need the
        inputs indexed, so that starts now (once; the caller holds the lock)."""
        if not self.disordered:
            self.disordered = True
            self.on_disorder()

    def _cursor(self, shard: Shard, kind: str, batch: dict[str, Any]) -> dict[str, Any] | None:
        """The cursor to download from, or None when nothing can be new."""
        id_key = KINDS[kind][0]
        file_id = batch.get(id_key)
        terminal = is_terminal(batch.get("status"))
        with self.lock:
            downloads = shard.downloads
            cursor = downloads.get(kind)
            if not isinstance(cursor, dict) or cursor.get("file_id") != file_id:
                cursor = downloads[kind] = {"file_id": file_id, "skip": 0, "high": 0, "complete": False}
        finished = finish_stamp(batch) if terminal else None
        if finished and cursor.get("finished") not in (None, finished):
            # Finished again since we last saw it finished: a /retry ran. Failed rows left the error file
            # and new ones were appended, so positions shifted under the cursor.
            cursor["complete"] = False
            if kind == "errors":
                info(f"batch {shard.batch_id}: finished again after a retry; re-reading its error file")
                cursor["skip"] = 0
        if finished:
            cursor["finished"] = finished
        served = served_lines(batch, kind)
        if not terminal or (served is not None and served != cursor["skip"]):
            cursor["complete"] = False
        if cursor["complete"]:
            return None
        if not file_id:  # OpenAI: no file yet, or never (output of an all-failed batch)
            cursor["complete"] = terminal
            return None
        if kind == "errors" and served is not None and cursor["skip"] > served:
            info(f"batch {shard.batch_id}: the error file shrank (a retry?); reading it again from 0")
            cursor["skip"] = 0
        headers_seen = fetch_state(self.manifest).get("server_headers")
        if headers_seen and served == cursor["skip"]:
            if not terminal:
                return None  # still running, but the counts promise no line past the cursor yet
            if batch.get("status") != "cancelled":  # after a cancel, in-flight lines may still arrive
                cursor["complete"] = True
                return None
        return cursor

    def _fetch_once(self, shard: Shard, kind: str, cursor: dict[str, Any], batch: dict[str, Any]) -> bool:
        """One content request from the cursor; True if another should follow right away."""
        terminal = is_terminal(batch.get("status"))
        attempts = 0
        while True:
            start = cursor["skip"]
            response = content_response(self.client, cursor["file_id"], start, self.page_size or None)
            header = response.headers.get("X-Incomplete")
            if header is None and not terminal:
                response.close()  # a server without the headers (OpenAI): download once, when terminal
                return False
            if header is not None:
                fetch_state(self.manifest)["server_headers"] = True
            try:
                check_content_type(response)
                received = self._stream(response, shard, kind, cursor, batch)
                break
            except (requests.exceptions.RequestException, OSError) as exc:
                attempts += 1
                if attempts > STREAM_RETRIES:
                    raise ServiceError(f"downloading {kind} of batch {shard.batch_id} kept failing: {exc}")
                warn(f"download of {kind} interrupted ({exc}); resuming from line {cursor['skip']}")
                if self.interrupted.wait(min(10.0, 0.5 * 2**attempts)):
                    raise Interrupted from None
            finally:
                response.close()
        incomplete = header is not None and header.strip().lower() == "true"
        served = served_lines(batch, kind)
        promised = served is not None and cursor["skip"] < served
        if received == 0:
            done = terminal
        elif terminal:  # read a finished batch until the server has no more
            done = not incomplete and not promised
            if not done:
                return True
        else:
            return promised or bool(self.page_size and received >= self.page_size)
        if done:
            with self.lock:
                cursor["complete"] = True
            self.commit()
        return False

    def _stream(
        self,
        response: requests.Response,
        shard: Shard,
        kind: str,
        cursor: dict[str, Any],
        batch: dict[str, Any],
    ) -> int:
        """Decode and append the body's lines as they arrive; returns the lines received."""
        if kind == "output":
            self._tracker(shard)
        reader = ReplyReader(self, shard, kind, cursor, batch)
        pending: list[bytes] = []  # the start of a line not ended yet (in pieces: never re-scanned)
        size, interrupted = 0, False
        try:
            for chunk in prefetched(response.iter_content(chunk_size=DOWNLOAD_CHUNK), self.interrupted):
                self.check()
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    pending.append(chunk)
                    size += len(chunk)
                    if size > MAX_SERVED_LINE_BYTES:
                        raise BadContent(
                            f"the server sent a line longer than {MAX_SERVED_LINE_BYTES >> 20} MB"
                        )
                    continue
                whole = b"".join((*pending, chunk[:cut])) if pending else chunk[:cut]
                reader.take(whole.split(b"\n"))
                pending, size = [chunk[cut + 1 :]], len(chunk) - cut - 1
            tail = b"".join(pending).strip()
            if tail:  # a last line without "\n" counts only if it is whole JSON
                if decode_line(tail) is None:
                    raise requests.exceptions.ChunkedEncodingError("the body ended inside a line")
                reader.take([tail])
            reader.finish()
        except KeyboardInterrupt:
            # Ctrl-C can land inside a take (lines appended, cursor not moved yet): nothing of this
            # reply is committed then, so the manifest names only what an earlier commit had whole
            interrupted = True
            self.interrupted.set()  # the reader thread's read is cut: the response's close waits for it
            raise
        finally:
            if not interrupted:
                reader.flush()
        return reader.received


_END = object()


def prefetched(
    chunks: Iterator[bytes], interrupted: threading.Event, depth: int = PREFETCH_CHUNKS
) -> Iterator[bytes]:
    """``chunks``, read by a thread up to ``depth`` chunks ahead, so the server goes on sending while the
    lines are decoded (read in turn with the decoding, a connection idles half the time). The reader's
    errors are raised here, in order; memory stays bounded by ``depth``. Once ``interrupted`` is set
    (a Ctrl-C) this stops within a tick even if the reader is still blocked in a read: the watchdog's cut
    should end that read, but the fetch's exit never depends on it (the reader is a daemon thread)."""
    ahead: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def hand(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False  # the consumer has gone (an error): the response is closed under the reader

    def read() -> None:
        try:
            for chunk in chunks:
                if not hand(chunk):
                    return
        except BaseException as exc:  # handed over: the consumer raises it
            hand(exc)
            return
        hand(_END)

    threading.Thread(target=read, name="download-reader", daemon=True).start()
    try:
        while True:
            try:
                item = ahead.get(timeout=0.2)
            except Empty:
                if interrupted.is_set():
                    raise Interrupted from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


_ONE_DIGEST = threading.Lock()  # one input hashed at a time: each read holds a 1 MB block in memory


def _digest(future: Future[str], path: str) -> None:
    try:
        with _ONE_DIGEST:
            future.set_result(sha256_file(path))
    except OSError as exc:
        future.set_exception(exc)


def _matches(digest: Future[str], expected: str | None) -> bool:
    """The input's digest (waited for) is the one recorded when the batch was submitted."""
    try:
        return digest.result() == expected
    except OSError:
        return False


def shard_finished(shard: Shard) -> bool:
    """The batch is terminal and both its files are read to their end."""
    downloads = shard.downloads or {}
    return is_terminal(shard.status) and all((downloads.get(k) or {}).get("complete") for k in KINDS)


# --------------------------------------------------------------------------- a whole job

RUN_LOCK = ".fetch.lock"  # one fetch per output directory: two would append to the same files


@dataclass
class Options:
    """How :func:`fetch_job` runs (the command's flags)."""

    follow: bool = False
    timeout: float = 3600.0
    interval: float = 10.0
    page_size: int = 0
    by_content: bool = False  # batches given by id: a re-sent request is recognised by its content
    export: Path | None = None
    progress: bool = True
    cost: bool = True  # ask the server's analytics for the real cost
    delete_remote: bool = False  # delete the job's files on the server once every result is on disk


def fetch_job(
    client: ApiClient, manifest: Manifest, out_dir: Path, options: Options | None = None
) -> tuple[dict[str, Any], int]:
    """Download every round of a job into ``out_dir`` and write results.jsonl, retry.jsonl (and the export).

    Returns the summary (SPEC section 4: counts per status, usage, failure groups, files, ``complete``) and
    the exit code: 0 when every input has a usable answer, 7 while anything runs, 6 otherwise. Raises
    :class:`BusyError` when another fetch holds the folder.
    """
    options = options or Options()
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the results (it is made if missing)")
    with contextlib.ExitStack() as held:  # the run lock: an abandoned committer may keep it (Engine.close)
        if not held.enter_context(exclusive_lock(out_dir / RUN_LOCK, wait=False)):
            raise BusyError(
                f"another fetch_results.py is already downloading into {out_dir}; let it finish "
                "(or stop it), then run this again; it resumes where the other stopped"
            )
        _claim(out_dir, manifest)
        with naming_full_disk(out_dir):
            summary, batches, finished, short, early = _download_and_join(
                client, manifest, out_dir, options, held
            )
    shards = [s for s in manifest.shards if s.batch_id]
    settled = {str(s.batch_id) for s in shards if shard_finished(s)}
    cost = job_cost(client, shards, settled, result_of(early) if early else None) if options.cost else None
    deleted = delete_remote(client, shards, finished) if options.delete_remote else None
    per_batch = summary.pop("per_batch")
    for shard in manifest.shards:
        if shard.batch_id in batches:
            shard.final_counts = per_batch.get(str(shard.batch_id))
    if options.export:  # the commands this job prints next name the user's export, not a default
        fetch_state(manifest)["export"] = str(options.export.resolve())
    manifest.save()
    counts = summary["counts"]
    unsent = manifest.unsent_report()  # a submit stopped early: those inputs are in no batch
    complete = finished and counts["completed"] == counts["requests"] and not short and not unsent
    code = ExitCode.OK if complete else ExitCode.NOT_FINISHED if not finished else ExitCode.BATCH_UNSUCCESSFUL
    files = {name: str(out_dir / f"{name}.jsonl") for name in ("output", "errors", "results", "retry")}
    if options.export:
        files["export"] = str(options.export.resolve())
    state = fetch_state(manifest)
    result: dict[str, Any] = {"ok": True, "complete": complete, "finished": finished, "out_dir": str(out_dir)}
    # while batches run, when to fetch again (as poll.py says): fetch alone can be the loop
    result["next_check_seconds"] = suggested_check(batches.values())
    result.update(files=files, **summary)
    result["cost"] = cost
    if deleted is not None:
        result["delete_remote"] = deleted
    if short:
        result["unlisted"] = short
    if unsent:
        result["unsent"] = unsent
    result["lines_on_disk"] = {k: state["files"][k].get("lines", 0) for k in KINDS}
    result["batches"] = [
        {k: v for k, v in describe_batch(b).items() if k not in ("metadata", "in_progress_at")}
        for b in batches.values()
    ]
    step = None if options.by_content else next_step(manifest, code, summary["failure_groups"])
    if step:
        result["next"] = step
    result["manifest"] = str(manifest.path.resolve())
    result["api_calls"] = client.calls
    return result, int(code)


def next_step(manifest: Manifest, code: ExitCode, groups: list[dict[str, Any]]) -> str | None:
    """The command to run next for a job sent by submit.py: the same check while it runs, the next
    round once it is finished but incomplete (None when no failure is worth resending), none when done."""
    if code == ExitCode.NOT_FINISHED:
        return check_command(manifest)
    if code == ExitCode.BATCH_UNSUCCESSFUL:
        return resubmit_command(manifest, groups)
    return None


def _download_and_join(
    client: ApiClient, manifest: Manifest, out_dir: Path, options: Options, held: contextlib.ExitStack
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool, int, Any]:
    """The downloads and the results files: (summary, batches, finished, requests unlisted, analytics)."""
    shards = [s for s in manifest.shards if s.batch_id]
    first = manifest.first_round.number  # its never-sent shards' inputs are listed too (as missing)
    listed = [s for s in manifest.shards if s.batch_id or s.round == first]
    # results.jsonl can be the batches' answers alone (written while they arrive, if in input order): not
    # with inputs never sent (the join lists them) nor with --export (it needs every row)
    runs_only = len(listed) == len(shards) and not options.export
    engine = Engine(client, manifest, out_dir, options.page_size, draft=runs_only)
    try:
        index = partial(
            index_inputs,
            client,
            engine.store,
            listed,
            out_dir,
            Gate(engine.lock, engine.interrupted),
            by_content=options.by_content,
        )
        # Answers that come back in input order need no index of the inputs (the trackers check them as
        # they arrive); as soon as that fails for a batch, the input files are indexed beside the
        # downloads. What needs the downloads (batches without a readable input, the rounds' links) comes
        # after them. The analytics are asked while the results are written (the server's counts are
        # final by then, and a server that answers one request at a time is not kept from streaming).
        with ThreadPoolExecutor(max_workers=2) as pool, engine.interruptible():
            indexing: list[Any] = []
            engine.on_disorder = lambda: indexing.append(pool.submit(index, files_only=True))
            batches, finished = _download_loop(engine, options)
            engine.settle_trackers()
            engine.on_disorder = lambda: None
            early = pool.submit(early_analytics, client, shards) if options.cost else None
            running = {b for b, batch in batches.items() if not is_terminal(batch.get("status"))}
            ordered = engine.ordered_runs(shards) if runs_only else None
            written = engine.drafted(ordered)
            if written is None and ordered is not None and any(run.released for run in ordered):
                ordered = None  # the runs' beginnings were only in the discarded draft: the index's join
            if ordered is None:
                index(skip=result_of(indexing[0]) if indexing else set(), manifest=manifest.path)
            extra = []
            if options.export:
                from doubleword.export import Export  # only --export pays for its import

                extra.append(Export(options.export, engine.store, listed))
            results_path, retry_path = out_dir / RESULTS_NAME, out_dir / RETRY_NAME
            summary = join(engine.store, running, results_path, retry_path, extra, ordered, written)
        short = _shortfall(engine.store, shards, batches)
    except KeyboardInterrupt:
        engine.interrupted.set()  # (a Ctrl-C after the threads' block too: close waits a bounded time)
        raise
    finally:
        engine.close(held)
    return summary, batches, finished, short, early


@contextlib.contextmanager
def naming_full_disk(out_dir: Path) -> Iterator[None]:
    """A full disk under the output folder named as such: the fetch index (SQLite) and the appended files
    report it without a path, and the user needs to know where the space ran out."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "disk is full" not in str(exc):
            raise
        raise OSError(errno.ENOSPC, f"no space left for the fetch index ({exc})", str(out_dir)) from exc
    except OSError as exc:
        if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(exc.errno, exc.strerror, str(out_dir)) from exc


def _claim(out_dir: Path, manifest: Manifest) -> None:
    """Refuse a folder holding another job's (or anyone's) result files; mark it as this job's.

    The mark is the job's first batch id (which no other job has, and which moves with a job folder that is
    moved or copied as a whole); any batch id of the job is its mark (a shard never sent, sent since, may
    come before the one that was first)."""
    state = fetch_state(manifest)
    token = (manifest.batch_ids() or ["?"])[0]
    marker = out_dir / JOB_MARK
    recorded = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
    if recorded in (manifest.batch_ids() or [token]):
        return
    present = [name for name in FOLDER_FILES if (out_dir / name).exists()]
    ours = recorded is None and state.get("out_dir") == str(out_dir)  # written before marks existed
    if present and not ours:
        whose = "another job" if recorded else "files this job did not write"
        raise InputError(
            f"{out_dir} already holds {', '.join(present)} from {whose}; choose another --out "
            "(or move those files away)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, token + "\n")


def _download_loop(engine: Engine, options: Options) -> tuple[dict[str, dict[str, Any]], bool]:
    """Check and download until done (or once without --follow); returns the batches and whether every
    batch is terminal with every file read to its end."""
    shards = [s for s in engine.manifest.shards if s.batch_id]  # a partly submitted manifest
    progress = Progress() if options.follow and options.progress else None
    deadline = time.monotonic() + max(0.0, options.timeout)
    early = engine.client.head_start is not None
    try:
        while True:
            checked_at = time.monotonic()
            batches = _head_started(engine, shards) if early else engine.refresh_all(shards)
            early = False
            engine.commit()
            engine.download_all([(s, batches[str(s.batch_id)]) for s in shards])
            engine.commit()  # synced while the results are written (close waits for it)
            finished = all(
                is_terminal(batches[str(s.batch_id)].get("status"))
                and all(s.downloads.get(k, {}).get("complete") for k in KINDS)
                for s in shards
            )
            if progress is not None:
                lines = {k: engine.sinks[k].state.get("lines", 0) for k in KINDS}
                done = sum(is_terminal(b.get("status")) for b in batches.values())
                progress.update(
                    f"{lines['output']} output and {lines['errors']} error lines on disk; "
                    f"{done}/{len(batches)} batches terminal"
                )
            if finished or not options.follow or time.monotonic() >= deadline:
                break
            # One check every --interval: a line is on disk at most one interval after it completed.
            now = time.monotonic()
            time.sleep(max(0.0, min(checked_at + options.interval - now, deadline - now)))
    finally:
        if progress is not None:
            progress.done()
    if options.follow and not finished:
        info(f"fetch_results.py: --timeout {options.timeout:g}s reached before every batch finished")
    return batches, finished


def recorded_batch(shard: Shard) -> dict[str, Any]:
    """The batch as the manifest recorded it (the last status a command saw), in the server's shape."""
    return {
        **shard.times,  # when it finished (the cursor's finish stamp)
        "id": shard.batch_id,
        "status": shard.status,
        "endpoint": shard.endpoint,
        "output_file_id": shard.output_file_id,
        "error_file_id": shard.error_file_id,
        "request_counts": shard.request_counts,
    }


def _head_started(engine: Engine, shards: list[Shard]) -> dict[str, dict[str, Any]]:
    """The first check of a fetch whose first output request went out early (doubleword.headstart): the
    batches the manifest saw finished are read as it recorded them while their statuses are asked, so the
    early reply is read at once instead of after a round trip (a busy server answers a status late while
    it sends). Returns the batches as the server says; the usual pass then reads whatever that changed."""
    finished = [s for s in shards if is_terminal(s.status)]
    with ThreadPoolExecutor(max_workers=1) as pool, engine.interruptible():
        asked = pool.submit(engine.refresh_all, shards)
        engine.download_all([(s, recorded_batch(s)) for s in finished])
        return result_of(asked)


def _shortfall(store: Store, shards: list[Shard], batches: dict[str, dict[str, Any]]) -> int:
    """Requests of batches without a readable input that are in no file (so not listed as missing)."""
    short = 0
    for shard in shards:
        source = store.source(str(shard.batch_id))
        if source is not None and source[4]:
            total = ((batches.get(str(shard.batch_id)) or {}).get("request_counts") or {}).get("total")
            if isinstance(total, int):
                short += max(0, total - store.line_count(str(shard.batch_id)))
    return short
