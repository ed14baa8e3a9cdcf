"""The fetch's committer, and how a Ctrl-C stops the fetch's threads.

A commit of the download engine (:meth:`doubleword.download.Engine.commit`) hands the committer the raw
files' descriptors and a snapshot of the manifest naming their lengths; the committer thread syncs the
files, then writes the manifest, while the download goes on. Interrupted, the fetch waits at most
:data:`COMMIT_GRACE` for it (a slow disk), and a committer left behind writes no manifest from then on.
One it left inside a manifest write finishes that write; so that no other fetch can start on the folder
before it has (and cut the files to an older manifest, which the write would then replace), the run lock
is handed to the committer, which releases it when it ends (or the process's exit does, killing it).

A Ctrl-C reaches the main thread only: the engine's ``interrupted`` event (the client's, so that requests
in flight are cut too, :mod:`doubleword.transport`) tells the download and index threads to stop at their
next chunk, page or slice of rows (:func:`stop_on_interrupt`, :func:`stop_if_interrupted`, :class:`Gate`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from doubleword.cli import SIGNAL_TICK, warn
from doubleword.errors import Interrupted
from doubleword.inorder import Ranges, ResultsDraft
from doubleword.manifest import Manifest

COMMIT_GRACE = 2.0  # seconds an interrupted fetch waits for the committer's syncs (a slow disk: not longer)


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """A Ctrl-C in the block tells the download and index threads to stop at their next chunk, page or
    slice of rows, so that leaving the block (which waits for them) does not wait for whole files."""
    try:
        yield
    except KeyboardInterrupt:
        stop.set()
        raise


def stop_if_interrupted(stop: threading.Event) -> None:
    """Stop this thread's work if the fetch was interrupted."""
    if stop.is_set():
        raise Interrupted


class Gate:
    """The engine's lock as the input indexing takes it (a slice of rows at a time): refused once the
    fetch is interrupted, so the indexing stops there."""

    def __init__(self, lock: Any, stop: threading.Event) -> None:
        self.lock, self.stop = lock, stop

    def __enter__(self) -> None:
        stop_if_interrupted(self.stop)
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class Committer:
    """The thread that syncs what a commit handed it and then writes the manifest (one at a time, the
    newest state only); it shares the engine's ``lock``."""

    def __init__(self, lock: Any, manifest: Manifest) -> None:
        self.lock, self.manifest = lock, manifest
        self._thread: threading.Thread | None = None
        self._to_write: tuple[list[int], str] | None = None  # the newest state not yet being written
        self._to_copy = Ranges()  # results.jsonl's in-order runs to copy into the draft
        self._draft: ResultsDraft | None = None
        self._error: OSError | None = None
        self._abandoned = False  # an interrupted close stopped waiting for the committer
        self._release: contextlib.ExitStack | None = None  # the run lock, left to a committer abandoned

    def hand(self, descriptors: list[int], snapshot: str, copy: Ranges, draft: ResultsDraft | None) -> None:
        """Sync ``descriptors`` (and the draft, after copying ``copy`` into it), then write ``snapshot``:
        right away, or right after the commit being written (the caller holds the lock)."""
        self._to_copy.extend(copy)
        self._draft = draft
        self._to_write = (descriptors, snapshot)
        if self._thread is None:  # started before it is kept (an interrupt between: never joined)
            committer = threading.Thread(target=self._loop, name="commit", daemon=True)
            committer.start()  # it takes the lock first, so it cannot end before it is kept
            self._thread = committer

    def _loop(self) -> None:
        try:
            self._write_all()
        finally:
            with self.lock:
                if self._thread is threading.current_thread():  # ended by something unexpected
                    self._thread = None
                release, self._release = self._release, None
            if release is not None:  # an interrupted fetch left the run lock to this thread: it is done
                release.close()

    def _write_all(self) -> None:
        while True:
            with self.lock:
                if self._to_write is None or self._error is not None:
                    self._thread = None
                    return
                (descriptors, snapshot), self._to_write = self._to_write, None
                copy, self._to_copy, draft = self._to_copy, Ranges(), self._draft
            try:
                if draft is not None and copy:
                    draft.write(copy)
                    descriptors = [*descriptors, draft.file.fd]
                for descriptor in descriptors:
                    os.fsync(descriptor)
                with self.lock:
                    if self._abandoned:  # the fetch was interrupted and no longer waits
                        self._thread = None
                        return
                self.manifest.save_snapshot(snapshot)
            except OSError as exc:
                with self.lock:
                    self._error = exc

    def settle(self, grace: float | None = None) -> None:
        """Wait for the committer to finish what was asked (at most ``grace`` seconds); raise what it met."""
        deadline = None if grace is None else time.monotonic() + grace
        while True:
            with self.lock:
                committer = self._thread
            if committer is None:
                break
            while committer.is_alive() and (deadline is None or time.monotonic() < deadline):
                left = SIGNAL_TICK if deadline is None else min(SIGNAL_TICK, deadline - time.monotonic())
                committer.join(max(0.0, left))  # a tick at a time: a Ctrl-C gets through (cli.result_of)
            if committer.is_alive():
                warn(
                    f"interrupted while the disk was still syncing the newest downloads (waited {grace:g} s); "
                    "not waiting longer: a re-run downloads them again"
                )
                return
        with self.lock:
            self.raise_error()

    def abandon(self, held: contextlib.ExitStack | None = None) -> bool:
        """Stop waiting for a committer still at work: it writes no manifest from then on. True if there
        was one (its files must stay open under it); it then also takes what ``held`` holds (the run
        lock), released when it ends: it may be inside a manifest write, which it finishes."""
        with self.lock:
            self._abandoned = self._thread is not None
            if self._abandoned and held is not None:
                self._release = held.pop_all()
            return self._abandoned

    def take_copy(self) -> Ranges:
        """The runs handed for the draft and not copied yet (the caller holds the lock)."""
        unwritten, self._to_copy = self._to_copy, Ranges()
        return unwritten

    def raise_error(self) -> None:
        """Raise what the committer met (the caller holds the lock)."""
        error, self._error = self._error, None
        if error is not None:
            raise error
