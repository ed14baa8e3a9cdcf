"""The fetch index is a cache of the raw files: a damaged one is rebuilt, never a failure."""

from __future__ import annotations


def test_a_damaged_fetch_index_is_rebuilt_and_the_results_are_the_same(emulator, env, tmp_path, h):
    lines = h.chat_lines(60)
    batch = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
    code, doc, err = h.run_script("submit", str(batch), env=env)
    assert code == 0, err
    manifest = doc["manifest"]
    code, _, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
    assert code == 0, err
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
