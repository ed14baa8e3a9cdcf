"""The fetch index is a cache of the raw files: a damaged one is rebuilt, never a failure."""

from __future__ import annotations


def test_a_damaged_fetch_index_is_rebuilt_and_the_results_are_the_same(emulator, env, tmp_path, h):
    manifest = h.submit_lines(tmp_path, h.chat_lines(60), env).manifest
    h.poll_wait("--manifest", manifest, env=env)
    out = tmp_path / "out"
    code, first, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=env)
    assert code == 0, err
    results = (out / "results.jsonl").read_bytes()
    (out / ".fetch-index.sqlite").write_bytes(b"not a database, as after a power loss" * 100)
    for extra in ("-wal", "-shm"):
        (out / f".fetch-index.sqlite{extra}").unlink(missing_ok=True)
    code, again, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=env)
    assert code == 0 and again["complete"] is True, err
    assert (out / "results.jsonl").read_bytes() == results
    assert again["counts"] == first["counts"]
    assert len(h.read_jsonl(out / "output.jsonl")) == 60  # downloaded again, not doubled


FAILING_SYNC = """
import errno, os, threading
_real = os.fsync
def fsync(fd):
    if threading.current_thread().name == "commit":  # only the commits that run beside the download
        raise OSError(errno.EIO, "Input/output error (injected)")
    return _real(fd)
os.fsync = fsync
"""


def test_a_sync_that_fails_in_the_commit_thread_fails_the_fetch_and_a_rerun_completes(
    emulator, env, tmp_path, h
):
    """The files are synced (and the manifest written) in a thread while the download goes on: a disk
    error there must still stop the fetch with the error, never a success, and lose nothing."""
    lines = h.chat_lines(40)
    manifest = h.submit_lines(tmp_path, lines, env).manifest
    h.poll_wait("--manifest", manifest, env=env)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAILING_SYNC)
    out = tmp_path / "out"
    failing = {**env, "PYTHONPATH": str(hook)}
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=failing)
    assert code != 0 and "Input/output error (injected)" in err, (code, err)
    assert not (out / "results.jsonl").exists()
    code, doc, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=env)
    assert code == 0 and doc["complete"] is True, err
    assert [r["custom_id"] for r in h.read_jsonl(out / "results.jsonl")] == [x["custom_id"] for x in lines]
    assert len(h.read_jsonl(out / "output.jsonl")) == 40
