"""The fetch index's deferred rows (Store.defer_records): answers that arrive in input order are kept as one
text per reply slice, and become the very rows they stand for, in arrival order, before anything reads them."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from doubleword import fastjson
from doubleword import store as store_module
from doubleword.store import INDEX_NAME, Store


def _rows(batch, start, n, kind=0):
    """Index rows (kind, off, line_id, batch, custom_id, status, p, c, t, et, es, rec_off, rec_len)."""
    return [
        (
            kind,
            10 * (start + i),
            f"line-{batch}-{start + i}",
            batch,
            f"req é東京 {start + i}",
            "completed",
            i,
            2 * i,
            3 * i,
            None,
            None,
            100 * (start + i),
            99,
        )  # fmt: skip
        for i in range(n)
    ]


def _records(path):
    with contextlib.closing(sqlite3.connect(path / INDEX_NAME)) as db:
        return db.execute("SELECT * FROM records ORDER BY rowid").fetchall()


def _deferred(path):
    with contextlib.closing(sqlite3.connect(path / INDEX_NAME)) as db:
        return db.execute("SELECT count(*) FROM deferred").fetchone()[0]


@pytest.mark.parametrize("accelerated", [True, False])
def test_deferred_rows_become_the_same_rows_in_arrival_order(tmp_path, monkeypatch, accelerated):
    if not accelerated:
        monkeypatch.setattr(fastjson, "dumps", None)
    plain, deferring = tmp_path / "plain", tmp_path / "deferring"
    plain.mkdir()
    deferring.mkdir()
    slices = [_rows("A", 0, 5), _rows("B", 0, 3), _rows("A", 5, 4), [(1, 0, "e-1", "A", "x", "failed", 0, 0, 0, "server_error", 500, 0, 9)]]  # fmt: skip
    reference = Store(plain)
    for rows in slices:
        reference.add_records(rows)
    reference.close()

    store = Store(deferring)
    store.defer_records(slices[0])
    store.add_records([])  # a slice of blank lines adds nothing, so nothing has to be indexed before it
    store.defer_records(slices[1])
    store.commit()
    assert _records(deferring) == [] and _deferred(deferring) == 2  # one text per slice, committed
    store.add_records(slices[2])  # an added row comes after the deferred ones
    store.defer_records(slices[3])
    store.close()  # a later run finds them
    store = Store(deferring)
    assert store.known(0, ["line-A-3", "line-B-2", "line-A-8", "nope"]) == {
        "line-A-3",
        "line-B-2",
        "line-A-8",
    }
    store.close()
    assert _records(deferring) == _records(plain) and _deferred(deferring) == 0


def test_a_resumed_run_cuts_deferred_rows_past_the_committed_bytes(tmp_path):
    store = Store(tmp_path)
    store.defer_records(_rows("A", 0, 3))  # offsets 0, 10, 20
    store.defer_records(_rows("A", 3, 3))  # offsets 30, 40, 50 (a killed run's last slice)
    store.close()
    store = Store(tmp_path)
    assert store.cut(0, 30) == 20  # the last row indexed below the committed 30 bytes starts at 20
    assert store.line_count("A") == 3
    store.close()
    assert [row[1] for row in _records(tmp_path)] == [0, 10, 20]


def test_a_fetch_in_input_order_defers_its_rows_and_a_rerun_joins_the_same_results(
    emulator, env, tmp_path, h
):
    lines = h.chat_lines(60)
    manifest = h.submit_lines(tmp_path, lines, env).manifest
    h.poll_wait("--manifest", manifest, env=env)
    out = tmp_path / "out"
    code, first, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=env)
    assert code == 0 and first["complete"] is True, err
    assert _records(out) == [] and _deferred(out) >= 1  # the tracker wrote results.jsonl: no row was needed
    results = (out / "results.jsonl").read_bytes()
    (out / "results.jsonl").unlink()
    code, again, err = h.run_script("fetch_results", "--manifest", manifest, "--out", str(out), env=env)
    assert code == 0 and again["complete"] is True, err
    assert (out / "results.jsonl").read_bytes() == results  # joined from the rows the deferred ones became
    assert again["counts"] == first["counts"]
    indexed = _records(out)
    assert _deferred(out) == 0 and sorted(row[4] for row in indexed) == sorted(x["custom_id"] for x in lines)
    assert len(h.read_jsonl(out / "output.jsonl")) == 60  # nothing downloaded again


def test_rows_past_a_text_bound_are_kept_in_several_texts_in_order(tmp_path, monkeypatch):
    """A slice of thousands of rows (answers a tracker hands back at once) is cut into texts of at most
    TEXT_ROWS rows, each a small block of memory; the rows and the held heads come back whole, in order."""
    monkeypatch.setattr(store_module, "TEXT_ROWS", 2)
    rows = _rows("A", 0, 5)
    store = Store(tmp_path)
    store.defer_records(rows)
    store.hold("A", [row[:11] for row in rows])
    store.commit()
    assert _deferred(tmp_path) == 3
    store.close()
    store = Store(tmp_path)
    assert store.take_held() == [row[:11] for row in rows]
    assert store.known(0, ["line-A-4"]) == {"line-A-4"}
    store.close()
    assert _records(tmp_path) == rows
