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


class _Feed:
    """Answers handed to a tracker as the download does: row heads and records (9 bytes and a newline
    each), appended at the end of a record file whose length this keeps; ``appended``: in what order."""

    def __init__(self, tracker):
        self.tracker, self.end, self.appended = tracker, 0, []

    def take(self, answers, gap=0):
        self.end += gap  # another batch's records appended in between
        heads = [(0, 0, f"l-{c}", "B", c, status, 1, 2, 3, None, None) for c, status in answers]
        records = [f"{c}".encode().rjust(9)[:9] for c, _ in answers]
        rows, out = self.tracker.take(heads, records, self.end)
        assert [f"{row[4]}".encode().rjust(9)[:9] for row in rows] == out  # each row with its own record
        for row, record in zip(rows, out, strict=True):
            assert row[11] == self.end and row[12] == len(record) == 9  # appended in the order given
            self.end += 10
            self.appended.append(row[4])
        return rows


def test_answers_in_input_order_make_one_range_and_the_totals(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"], blank_after=["a"]))
    feed = _Feed(tracker)
    feed.take([("a", "completed"), ("b", "completed")])
    feed.take([("c", "completed")])
    assert tracker.finished() and tracker.complete
    assert tracker.ranges == [(0, 30)] and tracker.count == 3 and tracker.tokens == [3, 6, 9]
    assert feed.appended == ["a", "b", "c"]


def test_records_of_other_batches_in_between_make_several_ranges(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"]))
    feed = _Feed(tracker)
    feed.take([("a", "completed")])
    feed.take([("b", "completed")], gap=90)  # another batch's records were appended between
    assert tracker.finished() and tracker.ranges == [(0, 10), (100, 110)]


def test_anything_else_retires_the_tracker_and_hands_back_every_answer(tmp_path):
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
        feed = _Feed(tracker)
        feed.take(answers)
        assert tracker.handle is not None or sorted(feed.appended, key=str) == sorted(
            (c for c, _ in answers), key=str
        ), why
        if tracker.handle is not None:  # (ends with answers waiting: the caller retires it)
            assert not tracker.finished(), why
            tracker.retire()
        assert not tracker.complete, why


def test_a_request_asking_for_json_or_an_unanswered_input_needs_the_join(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"], json_for=["b"]))
    feed = _Feed(tracker)
    feed.take([("a", "completed"), ("b", "completed")])
    assert tracker.handle is None and not tracker.finished()  # the JSON answer must be checked
    assert feed.appended == ["a", "b"]
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b"]))
    _Feed(tracker).take([("a", "completed")])
    assert not tracker.finished()  # b has no answer (yet): the join lists it as pending or missing


def test_an_answer_still_waiting_is_handed_back_when_the_tracker_retires(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"]))
    feed = _Feed(tracker)
    assert feed.take([("c", "completed"), ("a", "completed")])[0][4] == "a"  # c waits for b
    assert not tracker.finished() and list(tracker.ahead) == ["c"]
    (waiting,) = tracker.retire()
    assert waiting[0][4] == "c" and waiting[1] == b"        c" and not tracker.ahead


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
    _Feed(tracker).take([(custom_id, "completed") for custom_id in ids])
    assert tracker.finished() and tracker.count == 5


def test_a_prefix_of_the_next_id_or_a_format_word_in_the_text_is_not_a_match(tmp_path):
    path = tmp_path / "jobs.jsonl"
    lines = [
        {"custom_id": "req-10", "body": {"messages": [{"content": 'reply in "format" words'}]}},
        {"custom_id": "req-11", "body": {}},
    ]
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines), encoding="utf-8")
    tracker = OrderTracker("B", path)
    feed = _Feed(tracker)
    feed.take([("req-10", "completed")])
    assert tracker.handle is not None  # a quoted word "format" in a prompt is not a response format
    feed.take([("req-1", "completed")])  # req-1 is a prefix of req-11, not its id
    assert tracker.ahead and not tracker.finished()


def test_answers_in_completion_order_are_appended_in_input_order(tmp_path):
    """Requests that ran at once finish in any order: each answer waits for the input lines before it
    and is handed back, with its record, once they are answered: the batch's records are one stretch."""
    ids = [f"r{i}" for i in range(8)]
    arrival = ["r2", "r0", "r1", "r5", "r3", "r4", "r7", "r6"]
    tracker = OrderTracker("B", _inputs(tmp_path, ids, blank_after=["r3"]))
    feed = _Feed(tracker)
    feed.take([(c, "completed") for c in arrival[:4]])
    assert sorted(tracker.ahead) == ["r5"] and tracker.count == 3  # r0-r2 done; r5 waits for r3, r4
    assert feed.appended == ["r0", "r1", "r2"]
    feed.take([(c, "completed") for c in arrival[4:]])
    assert tracker.finished() and tracker.complete and tracker.count == 8
    assert feed.appended == ids and tracker.ranges == [(0, 80)]
    assert tracker.tokens == [8, 16, 24]


@pytest.mark.parametrize(
    "bound", [("WINDOW", 3), ("WINDOW_BYTES", 20)]
)  # answers, or records' bytes (9 each)
def test_a_window_past_its_bound_retires_the_tracker(tmp_path, monkeypatch, bound):
    monkeypatch.setattr(OrderTracker, *bound)
    ids = [f"r{i}" for i in range(6)]
    tracker = OrderTracker("B", _inputs(tmp_path, ids))
    _Feed(tracker).take([(i, "completed") for i in ["r3", "r2", "r1", "r0", "r4", "r5"]])
    assert tracker.finished() and tracker.count == 6  # three waited: within the bound
    tracker = OrderTracker("B", _inputs(tmp_path, ids))
    feed = _Feed(tracker)
    feed.take([(i, "completed") for i in ["r4", "r3", "r2", "r1", "r0", "r5"]])
    assert tracker.handle is None and not tracker.finished()  # a fourth would wait: the join takes over
    assert sorted(feed.appended) == ids  # every answer handed back, none twice


def test_a_waiting_answer_whose_request_asks_for_json_retires_the_tracker(tmp_path):
    tracker = OrderTracker("B", _inputs(tmp_path, ["a", "b", "c"], json_for=["b"]))
    feed = _Feed(tracker)
    feed.take([("b", "completed"), ("c", "completed")])
    assert tracker.handle is not None and not feed.appended
    feed.take([("a", "completed")])
    assert tracker.handle is None and not tracker.finished()
    assert feed.appended[0] == "a" and sorted(feed.appended) == ["a", "b", "c"]


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
