"""results.jsonl written while in-order answers arrive (doubleword.inorder.ResultsDraft): what is handed
over, in which order, when it stops, and that the file installed is exactly the job's runs."""

from __future__ import annotations

import os

from doubleword import inorder, results
from doubleword.inorder import Ranges, ResultsDraft
from doubleword.results import Run

RECORDS = b"".join(b'{"custom_id":"r%03d","status":"completed"}\n' % i for i in range(40))
LINE = len(RECORDS) // 40


class Tracker:
    """What the draft reads of an order tracker: its ranges, and whether it is still checking."""

    def __init__(self, ranges):
        self.ranges, self.handle, self.complete = Ranges(ranges), object(), False


def lines(first, last):  # records first..last-1 as a record-file range
    return (first * LINE, last * LINE)


def _draft(tmp_path, batch_ids):
    records = tmp_path / "records.jsonl"
    records.write_bytes(RECORDS)
    return ResultsDraft(tmp_path / "results.jsonl", records, batch_ids)


def _temps(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))


def test_batches_are_handed_over_in_job_order_as_they_grow(tmp_path):
    draft = _draft(tmp_path, ["A", "B"])
    read = set()
    trackers = {}
    assert draft.due(trackers, read.__contains__) == []  # nothing downloading yet
    trackers["A"] = Tracker([lines(0, 3)])
    trackers["B"] = Tracker([lines(3, 5)])  # B's answers arrive between A's: they wait for A
    assert draft.due(trackers, read.__contains__) == [lines(0, 3)]
    trackers["A"].ranges.pop()  # the last range grows (as the tracker grows it)
    trackers["A"].ranges.append(lines(0, 4))
    trackers["A"].ranges.append(lines(6, 8))
    assert draft.due(trackers, read.__contains__) == [lines(3, 4), lines(6, 8)]
    read.add("A")  # A read to its end: B's follow
    assert draft.due(trackers, read.__contains__) == [lines(3, 5)]
    assert draft.due(trackers, read.__contains__) == []
    assert draft.sizes == [6 * LINE, 2 * LINE]  # bytes handed over of A (read to its end), of B so far


def test_written_and_completed_it_holds_exactly_the_runs(tmp_path):
    draft = _draft(tmp_path, ["A", "B"])
    trackers = {"A": Tracker([lines(0, 2)]), "B": Tracker([lines(2, 3)])}
    draft.write(draft.due(trackers, lambda b: False))
    trackers["A"].ranges.append(lines(5, 9))
    runs = [
        Run("A", [lines(0, 2), lines(5, 9)], 6, [0, 0, 0], b""),
        Run("B", [lines(2, 3), lines(9, 12)], 4, [0, 0, 0], b""),
    ]
    file = draft.complete(runs)  # what was not handed yet (A's second range, all of B) is added
    assert file is not None
    file.install()
    want = (
        RECORDS[0 : 2 * LINE]
        + RECORDS[5 * LINE : 9 * LINE]
        + RECORDS[2 * LINE : 3 * LINE]
        + RECORDS[9 * LINE : 12 * LINE]
    )
    assert (tmp_path / "results.jsonl").read_bytes() == want
    assert _temps(tmp_path) == []


def test_a_batch_out_of_order_or_untracked_stops_the_draft(tmp_path):
    for stop in ("retired", "untracked"):
        draft = _draft(tmp_path, ["A", "B"])
        trackers = {"A": Tracker([lines(0, 2)]), "B": Tracker([lines(2, 4)])}
        if stop == "retired":
            trackers["B"].handle = None  # it saw an answer out of order
        else:
            trackers["B"] = None  # read from the middle: not checked
        assert draft.due(trackers, lambda b: b == "A") == [lines(0, 2)]
        assert draft.stopped
        trackers["A"].ranges.append(lines(5, 6))
        assert draft.due(trackers, lambda b: b == "A") == []
        draft.discard()
        assert _temps(tmp_path) == []


def test_a_draft_that_is_not_the_beginning_of_the_runs_is_discarded(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(b"the old results\n")
    for case in ("other ranges", "a copy lost"):
        draft = _draft(tmp_path, ["A"])
        draft.write(draft.due({"A": Tracker([lines(0, 3)])}, lambda b: True))
        if case == "a copy lost":
            os.ftruncate(draft.file.fd, LINE)
            runs = [Run("A", [lines(0, 3)], 3, [0, 0, 0], b"")]
        else:
            runs = [Run("A", [lines(1, 3)], 2, [0, 0, 0], b"")]
        assert draft.complete(runs) is None, case
        assert _temps(tmp_path) == [] and (tmp_path / "results.jsonl").read_bytes() == b"the old results\n"


def test_a_batch_that_grew_after_it_was_handed_over_is_not_drafted(tmp_path):
    """A batch read to its end that gets more answers later (a /retry ran it again): the draft went on to
    the next batch, so its file is not the job's runs; the join writes results.jsonl."""
    draft = _draft(tmp_path, ["A", "B"])
    trackers = {"A": Tracker([lines(0, 2)]), "B": Tracker([lines(2, 3)])}
    draft.write(draft.due(trackers, lambda b: b == "A"))
    trackers["A"].ranges.append(lines(3, 4))  # A again, after B's first answers
    runs = [
        Run("A", trackers["A"].ranges, 3, [0, 0, 0], b""),
        Run("B", trackers["B"].ranges, 1, [0, 0, 0], b""),
    ]
    assert draft.complete(runs) is None
    assert _temps(tmp_path) == []


def test_ranges_in_input_order_that_go_back_in_the_record_file_are_handed_over_whole(tmp_path):
    """Answers in completion order: a batch's ranges (in input order) can start before the last one."""
    draft = _draft(tmp_path, ["A", "B"])
    trackers = {"A": Tracker([lines(6, 7), lines(2, 3)]), "B": Tracker([])}
    draft.write(draft.due(trackers, lambda b: False))
    trackers["A"].ranges.pop()  # the last range grows
    trackers["A"].ranges.extend([lines(2, 4), lines(0, 1), lines(5, 6)])
    assert draft.due(trackers, lambda b: False) == [lines(3, 4), lines(0, 1), lines(5, 6)]
    draft.write([lines(3, 4), lines(0, 1), lines(5, 6)])
    runs = [
        Run("A", trackers["A"].ranges, 5, [0, 0, 0], b""),
        Run("B", [lines(8, 10), lines(7, 8)], 3, [0, 0, 0], b""),
    ]
    file = draft.complete(runs)
    assert file is not None
    file.install()
    order = [6, 2, 3, 0, 5, 8, 9, 7]
    assert (tmp_path / "results.jsonl").read_bytes() == b"".join(
        RECORDS[i * LINE : (i + 1) * LINE] for i in order
    )


def test_ranges_handed_over_are_released_and_the_runs_still_written_whole(tmp_path, monkeypatch):
    """A batch of any size holds only the ranges since the last hand-over: those before are dropped
    from its tracker (counted as released bytes), and the file completed to the runs is still exactly
    them, released beginnings included."""
    monkeypatch.setattr(inorder, "RELEASE_AT", 1)
    draft = _draft(tmp_path, ["A", "B"])
    trackers = {"A": Tracker([lines(6, 7), lines(2, 3), lines(0, 1)]), "B": Tracker([lines(8, 9)])}
    draft.write(draft.due(trackers, lambda b: False))
    a = trackers["A"].ranges
    assert list(a) == [lines(0, 1)] and a.released == 2 * LINE  # the last range kept: it may grow
    a.pop()
    a.extend([lines(0, 2), lines(4, 5)])
    draft.write(draft.due(trackers, lambda b: b == "A"))
    assert a.released == 4 * LINE and sum(end - start for start, end in a) == LINE  # (the rest released)
    runs = [Run("A", a, 5, [0, 0, 0], b"", a.released), Run("B", trackers["B"].ranges, 1, [0, 0, 0], b"")]
    file = draft.complete(runs)
    assert file is not None
    file.install()
    order = [6, 2, 0, 1, 4, 8]
    assert (tmp_path / "results.jsonl").read_bytes() == b"".join(
        RECORDS[i * LINE : (i + 1) * LINE] for i in order
    )
    assert not results.whole_file(runs, len(RECORDS))  # released: the join cannot tell, so it copies
