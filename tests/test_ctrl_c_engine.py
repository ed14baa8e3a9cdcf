"""Ctrl-C (KeyboardInterrupt) inside the fetch engine: what it leaves on disk, and how long it takes to exit.

A KeyboardInterrupt is raised where a signal handler can raise: between any two bytecodes of the main
thread. These tests raise it at chosen points, deterministically, from a test-side prelude (the same code
path as a Ctrl-C landing there) or inside an in-process Engine, and check the two promises of an
interrupted fetch: the manifest names nothing the files and cursors do not hold (a re-run resumes exactly),
and the exit comes at once, whatever the download threads and the committer were doing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from doubleword import committer, download
from doubleword.client import ApiClient
from doubleword.files import exclusive_lock
from doubleword.manifest import Manifest

# The second reply's lines reach the index only after output.jsonl took them: a Ctrl-C right after
# interrupts the reply half taken (its raw lines appended, their index rows and the cursor not yet).
KI_IN_SECOND_TAKE = """
import doubleword.sinks as sinks
_extend, _calls = sinks.Sink.extend, []
def _interrupting(self, lines, size):
    _extend(self, lines, size)
    if lines:
        _calls.append(len(lines))
        if len(_calls) == 2:
            raise KeyboardInterrupt
sinks.Sink.extend = _interrupting
"""


def _saved(manifest: Path, out: Path) -> tuple[int, int, int]:
    """(lines the manifest counts in output.jsonl, the batch's output cursor, lines in those bytes)."""
    state = json.loads(manifest.read_text())
    saved = state["fetch"]["files"]["output"]
    skip = state["shards"][0]["downloads"]["output"]["skip"]
    return saved["lines"], skip, (out / "output.jsonl").read_bytes()[: saved["bytes"]].count(b"\n")


def test_ctrl_c_inside_a_reply_saves_only_what_the_cursor_covers(emulator, env, tmp_path, h):
    job = h.submit_lines(tmp_path, h.chat_lines(30), env)
    h.poll_wait("--manifest", job.manifest, env=env)
    manifest, out = Path(job.manifest), tmp_path / "jobs.results"
    fetch = ("--manifest", job.manifest, "--page-size", "10")
    code, doc, err = h.run_script("fetch_results", *fetch, env=env, prelude=KI_IN_SECOND_TAKE)
    assert code == 130 and doc["error"]["type"] == "interrupted", (doc, err)
    # the first page is committed; the half-taken second one is not named by the manifest
    assert _saved(manifest, out) == (10, 10, 10)

    code, doc, err = h.run_script("fetch_results", *fetch, env=env)
    assert code == 0 and doc["complete"], err
    assert "downloading it again" not in err  # resumed from the cursor, not from the start
    ids = [line["id"] for line in h.read_jsonl(out / "output.jsonl")]
    assert len(ids) == len(set(ids)) == 30
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in job.lines]


# -- the committer on a slow disk (in-process: its syncs held until the test lets them go)


def _stalled_fetch(tmp_path, monkeypatch, stop: BaseException) -> tuple[float, Path, threading.Event]:
    """fetch_job whose committer's syncs wait (a disk busy writing back) and whose download loop raises
    ``stop`` at once; returns how long the fetch took to give ``stop`` back, the manifest, and the event
    that lets the syncs go (set by a timer 3 s after the start if the test does not set it first)."""
    release = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "commit":
            release.wait(30)
        real_fsync(fd)

    def loop(engine, options):
        engine.commit()  # a commit whose syncs are under way when the stop comes
        raise stop

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(download, "_download_loop", loop)
    monkeypatch.setattr(committer, "COMMIT_GRACE", 0.3)
    manifest = Manifest.new(tmp_path / "jobs.jsonl.manifest.json")
    manifest.save()
    client = ApiClient("http://127.0.0.1:9", "sk-unused")  # never called: the loop is replaced
    timer = threading.Timer(3.0, release.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(type(stop)):
            download.fetch_job(client, manifest, tmp_path / "out")
        return time.monotonic() - started, manifest.path, release
    finally:
        timer.cancel()


def test_an_interrupted_fetch_does_not_wait_for_a_slow_disk(tmp_path, monkeypatch, capfd):
    took, manifest, release = _stalled_fetch(tmp_path, monkeypatch, KeyboardInterrupt())
    assert took < 1.5, f"the interrupted fetch waited {took:.1f} s for the committer"
    assert "disk was still syncing" in capfd.readouterr().err
    # the commit that was syncing is never recorded, not even once its syncs end: the manifest on disk
    # stays the one written before (older, and naming nothing that is not synced)
    release.set()
    time.sleep(0.3)
    assert json.loads(manifest.read_text())["fetch"] is None


def test_a_fetch_that_stops_otherwise_still_waits_for_its_manifest(tmp_path, monkeypatch):
    took, manifest, _ = _stalled_fetch(tmp_path, monkeypatch, RuntimeError("boom"))
    assert took >= 2.5  # waited for the syncs (released after 3 s), however long they take
    assert json.loads(manifest.read_text())["fetch"]["files"]["output"]["lines"] == 0


def test_a_committer_left_writing_the_manifest_keeps_the_folder_locked_until_it_has(tmp_path, monkeypatch):
    """The Ctrl-C comes while the committer is inside a manifest write (held there by the test) and the
    grace runs out: the interrupted fetch returns at once, but the run lock stays held until that write
    has ended, so no second fetch can start on the folder in between (it would cut the files to the
    older manifest, which the write then replaces)."""
    inside, release = threading.Event(), threading.Event()
    real_save = Manifest.save_snapshot

    def save_snapshot(self, text: str) -> None:
        if threading.current_thread().name == "commit":
            inside.set()
            release.wait(30)
        real_save(self, text)

    def loop(engine, options):
        engine.commit()
        assert inside.wait(30)  # the committer is writing the manifest when the Ctrl-C comes
        raise KeyboardInterrupt

    monkeypatch.setattr(Manifest, "save_snapshot", save_snapshot)
    monkeypatch.setattr(download, "_download_loop", loop)
    monkeypatch.setattr(committer, "COMMIT_GRACE", 0.3)
    manifest = Manifest.new(tmp_path / "jobs.jsonl.manifest.json")
    manifest.save()
    out = tmp_path / "out"
    client = ApiClient("http://127.0.0.1:9", "sk-unused")  # never called: the loop is replaced
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            download.fetch_job(client, manifest, out)
        assert time.monotonic() - started < 1.5
        assert not _run_lock_free(out), "another fetch could start while the manifest is being written"
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while not _run_lock_free(out):  # released by the committer as it ends
        assert time.monotonic() < deadline, "the run lock was never released"
        time.sleep(0.01)
    assert json.loads(manifest.path.read_text())["fetch"]["out_dir"] == str(out.resolve())  # the write ended


def _run_lock_free(out: Path) -> bool:
    """What a second fetch into ``out`` finds first: the run lock free (True) or held (False)."""
    with exclusive_lock(out / download.RUN_LOCK, wait=False) as mine:
        return bool(mine)


# -- several batches downloading at once

# each content request of the download threads answers 0.25 s late: a file of 20 pages takes ~5 s
SLOW_PAGES = """
import time, doubleword.download as d
_content = d.content_response
def _late(*args, **kwargs):
    time.sleep(0.25)
    return _content(*args, **kwargs)
d.content_response = _late
"""


def test_ctrl_c_while_two_batches_download_stops_both_at_once(tmp_path, h):
    with h.start_emulator("--rate", "100000") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(400), env, "--max-requests", "200")
        h.poll_wait("--manifest", job.manifest, env=env)
        manifest, out = Path(job.manifest), tmp_path / "jobs.results"
        fetch = ("--manifest", job.manifest, "--page-size", "10")
        command = [sys.executable, "-c", h.PRELUDE_WRAPPER, SLOW_PAGES, str(h.SCRIPTS / "fetch_results.py")]
        proc = subprocess.Popen([*command, *fetch], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        h.wait_until(lambda: _lines_saved(manifest) > 0, what="the first commit")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
        assert proc.returncode == 130 and json.loads(stdout)["error"]["type"] == "interrupted", stderr
        # the download threads stopped at their next page, not at the end of their files (~5 s)
        assert took < 2.0, f"exit {took:.1f} s after SIGINT"
        saved = _lines_saved(manifest)
        assert 0 < saved < 400
        code, doc, err = h.run_script("fetch_results", *fetch, env=env)
        assert code == 0 and doc["complete"], err
    ids = [line["id"] for line in h.read_jsonl(out / "output.jsonl")]
    assert len(ids) == len(set(ids)) == 400


def _lines_saved(manifest: Path) -> int:
    try:
        state = json.loads(manifest.read_text())
    except ValueError:  # being replaced: read again
        return 0
    return int((((state.get("fetch") or {}).get("files") or {}).get("output") or {}).get("lines", 0))
