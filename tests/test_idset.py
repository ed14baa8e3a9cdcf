"""The flat-memory custom_id set: answers are the same before and after ids move to its SQLite table."""

from __future__ import annotations

from doubleword.idset import IdSet


def test_ids_are_found_across_flushes_and_new_ids_are_not():
    ids = IdSet()
    for number in range(120_000):  # more than two flushes
        assert ids.get(f"id-{number}") is None
        ids.add(f"id-{number}", number)
    assert ids.get("id-0") == (0, b"")  # in SQLite
    assert ids.get("id-119999") == (119999, b"")  # still in memory
    assert all(ids.get(f"new-{n}") is None for n in range(5_000))
    ids.close()


def test_digests_are_kept_when_asked_for():
    ids = IdSet(digests=True)
    for number in range(60_000):
        ids.add(f"k{number}", number, bytes([number % 256]) * 16)
    assert ids.get("k7") == (7, bytes([7]) * 16)
    assert ids.get("k59999") == (59999, bytes([59999 % 256]) * 16)
    assert ids.get("nope") is None
    ids.close()
