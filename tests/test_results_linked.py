"""A job answered whole and in input order: results.jsonl is the fetch's record file under a second name
(a hard link: the answers are on disk once, and nothing is copied at the end). Nothing is written through
it afterwards: a record file that grows gives results.jsonl a copy of its own first, one changed through
results.jsonl is not trusted again, and where the file system cannot link, results.jsonl is a copy."""

from __future__ import annotations

import errno
import json
import os

import pytest

from doubleword.files import LinkedFile
from doubleword.sinks import RecordFile
from doubleword.store import RECORDS_NAME, SHARED_KEY, Store, share_stamp


def _same_file(a, b) -> bool:
    return os.path.samestat(os.stat(a), os.stat(b))


def _fetch(h, env, out, *batch_ids):
    code, doc, err = h.run_script("fetch_results", *batch_ids, "--out", str(out), env=env)
    assert code == 0 and doc["complete"] is True, (code, doc, err)
    return doc


def _check(h, out, lines):
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all(r["status"] == "completed" and r["content"] for r in results)
    return results


def test_in_order_answers_are_on_disk_once_and_a_second_fetch_keeps_them(tmp_path, h, emulator, env):
    emulator.configure(order="input")
    lines = h.chat_lines(30)
    job = h.submit_lines(tmp_path, lines, env)
    h.poll_wait(job.batch_id, env=env)
    out = tmp_path / "out"
    _fetch(h, env, out, job.batch_id)
    first = _check(h, out, lines)
    assert _same_file(out / "results.jsonl", out / RECORDS_NAME)
    assert os.stat(out / "results.jsonl").st_nlink == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    _fetch(h, env, out, job.batch_id)  # nothing new: the same answers, still one copy on disk
    assert _check(h, out, lines) == first
    assert _same_file(out / "results.jsonl", out / RECORDS_NAME)
    assert os.stat(out / "results.jsonl").st_nlink == 2  # those two names, no third
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_answers_in_completion_order_are_copied_into_input_order(tmp_path, h, emulator, env):
    emulator.configure(order="completion")  # (the default) requests running at once finish in any order
    lines = h.chat_lines(40)
    job = h.submit_lines(tmp_path, lines, env)
    h.poll_wait(job.batch_id, env=env)
    out = tmp_path / "out"
    _fetch(h, env, out, job.batch_id)
    arrived = [json.loads(line)["custom_id"] for line in (out / RECORDS_NAME).read_bytes().splitlines()]
    ids = [line["custom_id"] for line in lines]
    assert sorted(arrived) == sorted(ids) and arrived != ids  # every answer once, not in input order
    _check(h, out, lines)
    assert not _same_file(out / "results.jsonl", out / RECORDS_NAME)  # a copy, in input order
    records = {json.loads(line)["custom_id"]: line for line in (out / RECORDS_NAME).read_bytes().splitlines()}
    assert (out / "results.jsonl").read_bytes().splitlines() == [records[line["custom_id"]] for line in lines]


@pytest.mark.parametrize("edit", ["appended", "same size"])
def test_results_changed_in_place_are_not_taken_for_the_answers(tmp_path, h, emulator, env, edit):
    emulator.configure(order="input")
    lines = h.chat_lines(20)
    job = h.submit_lines(tmp_path, lines, env)
    h.poll_wait(job.batch_id, env=env)
    out = tmp_path / "out"
    _fetch(h, env, out, job.batch_id)
    good = (out / "results.jsonl").read_bytes()
    with open(out / "results.jsonl", "r+b") as handle:  # written in place, as some editors do
        if edit == "appended":
            handle.seek(0, os.SEEK_END)
            handle.write(b'{"custom_id":"mine"}\n')
        else:
            handle.seek(good.index(b'"content":"') + len(b'"content":"'))
            handle.write(b"X")
    _fetch(h, env, out, job.batch_id)
    assert (out / "results.jsonl").read_bytes() == good


def test_the_record_file_grows_only_after_results_jsonl_has_its_own_copy(tmp_path):
    """(A folder holds one job, whose answers are all in once linked: growth is a batch run again.)"""
    store = Store(tmp_path)
    records, results = tmp_path / RECORDS_NAME, tmp_path / "results.jsonl"
    old = b'{"custom_id":"a"}\n{"custom_id":"b"}\n'
    records.write_bytes(old)
    store.set_meta("records_bytes", str(len(old)))
    os.link(records, results)
    store.set_meta(SHARED_KEY, share_stamp(records.stat()))
    file = RecordFile(records, store, results)
    assert not file.reset
    file.extend([b'{"custom_id":"c"}'], len(b'{"custom_id":"c"}\n'))
    file.flush()
    file.close()
    store.close()
    assert results.read_bytes() == old
    assert records.read_bytes() == old + b'{"custom_id":"c"}\n'
    assert not _same_file(records, results)


def test_where_links_are_refused_results_jsonl_is_a_copy(tmp_path, h, emulator, env):
    emulator.configure(order="input")
    lines = h.chat_lines(10)
    job = h.submit_lines(tmp_path, lines, env)
    h.poll_wait(job.batch_id, env=env)
    out = tmp_path / "out"
    refuse = (
        "import os\ndef link(*a, **k): raise PermissionError(1, 'Operation not permitted')\nos.link = link"
    )
    code, doc, err = h.run_script("fetch_results", job.batch_id, "--out", str(out), env=env, prelude=refuse)
    assert code == 0 and doc["complete"] is True, (doc, err)
    _check(h, out, lines)
    assert not _same_file(out / "results.jsonl", out / RECORDS_NAME)
    assert os.stat(out / "results.jsonl").st_nlink == 1


def test_a_link_refused_leaves_no_temp_file(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.write_bytes(b"x\n")

    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    assert LinkedFile.make(source, tmp_path / "results.jsonl") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
