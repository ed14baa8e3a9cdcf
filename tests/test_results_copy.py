"""results.jsonl's runs are copied from the record file by the system (copy_file_range) where it can; the
copy in pieces takes over wherever that is refused, even part-way, and the bytes are the same."""

from __future__ import annotations

import errno
import os

import pytest

from doubleword import files, results
from doubleword.store import RECORDS_NAME

RECORDS = b"".join(b'{"custom_id":"req-%05d","status":"completed"}\n' % i for i in range(3000))


def _copy(tmp_path, ranges, grouped=False):
    (tmp_path / RECORDS_NAME).write_bytes(RECORDS)
    source = results._Requests({}, tmp_path / RECORDS_NAME)
    out = tmp_path / "results.jsonl"
    try:
        with open(out, "wb") as handle:
            handle.write(b"before\n")  # buffered, not yet flushed when the copy starts
            for group in ranges if grouped else [[r] for r in ranges]:
                source.copy(group, handle)
            handle.write(b"after\n")
    finally:
        source.close()
    return out.read_bytes()


RANGES = [(0, 4500), (9000, 9000), (20_000, len(RECORDS) - 7), (100, 200)]
EXPECTED = b"before\n" + b"".join(RECORDS[a:b] for a, b in RANGES) + b"after\n"


def test_the_system_copy(tmp_path):
    if not hasattr(os, "copy_file_range"):
        pytest.skip("this platform has no copy_file_range (the piece-wise copy is tested below)")
    assert _copy(tmp_path, RANGES) == EXPECTED


def test_the_piecewise_copy_without_copy_file_range(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    assert _copy(tmp_path, RANGES) == EXPECTED


@pytest.mark.parametrize("after_bytes", [0, 1000])
def test_a_system_copy_refused_part_way_goes_on_in_pieces(tmp_path, monkeypatch, after_bytes):
    real = getattr(os, "copy_file_range", None)
    if real is None:
        pytest.skip("this platform has no copy_file_range")
    done = {"bytes": 0}

    def refusing(src, dst, count, offset_src=None, offset_dst=None):
        if done["bytes"] >= after_bytes:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        copied = real(src, dst, min(count, after_bytes - done["bytes"]), offset_src)
        done["bytes"] += copied
        return copied

    monkeypatch.setattr(os, "copy_file_range", refusing)
    assert _copy(tmp_path, RANGES) == EXPECTED


def test_a_record_file_shorter_than_the_run_is_an_error(tmp_path):
    with pytest.raises(OSError, match="ended at byte"):
        _copy(tmp_path, [(0, len(RECORDS) + 10)])


LINE = len(RECORDS) // 3000
SHUFFLED = [[(i * LINE, (i + 1) * LINE) for i in (7, 3, 2999, 0, 5, 5, 1500)] + [(0, len(RECORDS))]]


@pytest.mark.parametrize("system", [True, False])
def test_ranges_given_together_in_any_order_are_copied_in_turn(tmp_path, monkeypatch, system):
    """Answers put in input order from a stretch in completion order: many small ranges in one call
    (each read on its own, their bytes written together), one whole-file range after them."""
    if not system:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    want = b"before\n" + b"".join(RECORDS[a:b] for a, b in SHUFFLED[0]) + b"after\n"
    assert _copy(tmp_path, SHUFFLED, grouped=True) == want
    far = [[(0, LINE), (len(RECORDS) - LINE, len(RECORDS)), (LINE, 2 * LINE)]]
    monkeypatch.setattr(files, "COPY_SPAN", 1000)  # written every 1,000 bytes, longer ranges by the system
    assert (
        _copy(tmp_path, far, grouped=True)
        == b"before\n" + b"".join(RECORDS[a:b] for a, b in far[0]) + b"after\n"
    )


def test_ranges_given_together_past_the_end_are_an_error(tmp_path):
    with pytest.raises(OSError, match="ended at byte"):
        _copy(tmp_path, [[(0, LINE), (len(RECORDS) - LINE, len(RECORDS) + 10)]], grouped=True)
