"""The order tracker: answers checked against the input file as they arrive (doubleword.inorder)."""

from __future__ import annotations

import json

import pytest

from doubleword.inorder import OrderTracker, Ranges


def _inputs(tmp_path, ids, *, json_for=(), blank_after=()):
    path = tmp_path / "jobs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for custom_id in ids:
            body = {"model": "m", "messages": [{"role": "user", "content": custom_id}]}
            if custom_id in json_for:
                body["response_format"] = {"type": "json_object"}
            handle.write(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}, separators=(",", ":")) + "\n")  # fmt: skip
            if custom_id in blank_after:
                handle.write("\n  \n")
    return path


def _rows(answers, start=0):
    """Index rows (kind, off, line_id, batch, custom_id, status, p, c, t, et, es, rec_off, rec_len)."""
    rows, offset = [], start
    for custom_id, status in answers:
        rows.append((0, 0, f"l-{custom_id}", "B", custom_id, status, 1, 2, 3, None, None, offset, 9))
        offset += 10
    return rows


def test_answers_in_input_order_make_one_range_and_the_totals(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"], blank_after=["a"]))
    rows = _rows([("a", "completed"), ("b", "completed"), ("c", "completed")])
    tracker.take(rows[:2])
    tracker.take(rows[2:])
    assert tracker.finished() and tracker.complete
    assert tracker.ranges == [(0, 30)] and tracker.count == 3 and tracker.tokens == [3, 6, 9]


def test_records_of_other_batches_in_between_make_several_ranges(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"]))
    tracker.take(_rows([("a", "completed")], start=0))
    tracker.take(_rows([("b", "completed")], start=100))  # another batch's records were appended between
    assert tracker.finished() and tracker.ranges == [(0, 10), (100, 110)]


def test_anything_else_retires_the_tracker(tmp_path):
    cases = {
        "a failure": [("a", "failed")],
        "a cut-off answer": [("a", "truncated")],
        "more answers than inputs": [
            ("a", "completed"),
            ("b", "completed"),
            ("c", "completed"),
            ("d", "completed"),
        ],
        "an answer without an id": [(None, "completed")],
        "an answer twice": [("b", "completed"), ("b", "completed"), ("a", "completed"), ("c", "completed")],
        "an answer of another batch": [("b", "completed"), ("x", "completed"), ("a", "completed")],
    }
    for why, answers in cases.items():
        tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"]))
        tracker.take(_rows(answers))
        assert not tracker.finished() and not tracker.complete, why


def test_a_request_asking_for_json_or_an_unanswered_input_needs_the_join(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"], json_for=["b"]))
    tracker.take(_rows([("a", "completed"), ("b", "completed")]))
    assert not tracker.finished()  # the JSON answer must be checked against the request's schema
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"]))
    tracker.take(_rows([("a", "completed")]))
    assert not tracker.finished()  # b has no answer (yet): the join lists it as pending or missing


def test_ids_written_with_escapes_or_in_another_layout_are_still_matched(tmp_path):
    """The quick match reads the id where create_batch_file.py writes it; any other line is parsed."""
    ids = ['say "hi"', "back\\slash", "café", "東京", "plain"]
    path = tmp_path / "jobs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i, custom_id in enumerate(ids):
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": {}}
            if i == 4:  # the id not first, spaces after the separators
                line = {"method": "POST", "custom_id": custom_id, "url": "/v1/chat/completions", "body": {}}
            handle.write(json.dumps(line, ensure_ascii=i % 2 == 0) + "\n")
    tracker = OrderTracker("B", path)
    tracker.take(_rows([(custom_id, "completed") for custom_id in ids]))
    assert tracker.finished() and tracker.count == 5


def test_a_prefix_of_the_next_id_or_a_format_word_in_the_text_is_not_a_match(tmp_path):
    path = tmp_path / "jobs.jsonl"
    lines = [
        {"custom_id": "req-10", "body": {"messages": [{"content": 'reply in "format" words'}]}},
        {"custom_id": "req-11", "body": {}},
    ]
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines), encoding="utf-8")
    tracker = OrderTracker("B", path)
    tracker.take(_rows([("req-10", "completed")]))
    assert tracker.handle is not None  # a quoted word "format" in a prompt is not a response format
    tracker.take(_rows([("req-1", "completed")]))  # req-1 is a prefix of req-11, not its id
    assert tracker.ahead and not tracker.finished()


def test_answers_in_completion_order_are_put_in_input_order(tmp_path):
    """Requests that ran at once finish in any order: each answer waits for the input lines before it,
    and the ranges come out in input order (each answer's own where their records are not in order)."""
    ids = [f"r{i}" for i in range(8)]
    arrival = ["r2", "r0", "r1", "r5", "r3", "r4", "r7", "r6"]
    rows = _rows([(custom_id, "completed") for custom_id in arrival])
    offset_of = {row[4]: row[11] for row in rows}
    tracker = OrderTracker("B", _inputs(tmp_path, ids, blank_after=["r3"]))
    tracker.take(rows[:4])
    assert sorted(tracker.ahead) == ["r5"] and tracker.count == 3  # r0-r2 done; r5 waits for r3, r4
    tracker.take(rows[4:])
    assert tracker.finished() and tracker.complete and tracker.count == 8
    # every answer's record once, in input order (a record here is 9 bytes and its newline)
    covered = [offset for start, end in tracker.ranges for offset in range(start, end, 10)]
    assert covered == [offset_of[i] for i in ids]
    assert tracker.ranges == [(10, 30), (0, 10), (40, 60), (30, 40), (70, 80), (60, 70)]  # neighbours merged
    assert tracker.tokens == [8, 16, 24]


def test_a_window_past_its_bound_retires_the_tracker(tmp_path, monkeypatch):
    monkeypatch.setattr(OrderTracker, "WINDOW", 3)
    ids = [f"r{i}" for i in range(6)]
    tracker = OrderTracker("B", _inputs(tmp_path, ids))
    tracker.take(_rows([(i, "completed") for i in ["r3", "r2", "r1", "r0", "r4", "r5"]]))
    assert tracker.finished() and tracker.count == 6  # three waited: within the bound
    tracker = OrderTracker("B", _inputs(tmp_path, ids))
    tracker.take(_rows([(i, "completed") for i in ["r4", "r3", "r2", "r1", "r0", "r5"]]))
    assert tracker.handle is None and not tracker.finished()  # a fourth would wait: the join takes over


def test_a_waiting_answer_whose_request_asks_for_json_retires_the_tracker(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"], json_for=["b"]))
    tracker.take(_rows([("b", "completed"), ("c", "completed")]))
    assert tracker.handle is not None
    tracker.take(_rows([("a", "completed")]))
    assert tracker.handle is None and not tracker.finished()


def test_the_ranges_are_a_sequence_of_pairs():
    ranges = Ranges()
    assert len(ranges) == 0 and not ranges and list(ranges) == []
    for pair in [(0, 10), (20, 35), (40, 41)]:
        ranges.append(pair)
    assert len(ranges) == 3 and ranges[0] == (0, 10) and ranges[-1] == (40, 41)
    assert ranges[1:] == [(20, 35), (40, 41)] and ranges == [(0, 10), (20, 35), (40, 41)]
    assert ranges.pop() == (40, 41) and list(ranges) == [(0, 10), (20, 35)]
    with pytest.raises(IndexError):
        ranges[2]
