"""`make bench` keeps working as the commands change: the scale benchmark at toy sizes, end to end.

Only the shape of what it measures is checked here (every phase ran, through its own process, and each
row has its target); whether a target is met is for `make bench` on a quiet machine, not for the suite.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def bench_scale(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("bench_scale")
    monkeypatch.setattr(module, "SIZES", (300, 3_000))
    monkeypatch.setattr(module, "MEMORY_PAIRS", ((300, 3_000, ("create", "fetch")),))
    monkeypatch.setattr(module, "SHARD_LINES", 400)
    monkeypatch.setattr(module, "POLL_SIZES", (100, 300))
    monkeypatch.setattr(module, "POLL_RATE", 1_000)
    monkeypatch.setattr(module, "NEXT_CHECK_S", 4.0)
    monkeypatch.setattr(module, "BARE_LOOP_REQUESTS", 2_000)
    yield module
    for name in ("bench_scale", "harness", "bare_loop"):
        sys.modules.pop(name, None)


def test_growth_rows_cover_every_phase_with_memory_and_calls(bench_scale, tmp_path: Path) -> None:
    rows, runs = bench_scale.growth_rows(tmp_path)
    phases = [(row["requests"], row["phase"]) for row in rows]
    for size in ("300", "3,000"):
        for phase in ("create", "validate", "submit", "(emulator)", "fetch"):
            assert (size, phase) in phases
    for (size, phase), run in runs.items():
        if phase != "(emulator)":
            assert run["peak_rss_kib"] > 1024, (size, phase)
    submit = next(r for r in rows if r["phase"] == "submit")
    assert "upload" in submit["API calls"] and "create" in submit["API calls"]
    memory = bench_scale.memory_rows(runs)
    assert [row["benchmark"].split(":")[0] for row in memory] == ["create", "fetch"]
    assert all(isinstance(row["ok"], bool) and row["ratio"] > 0 for row in memory)
    assert "/s in " in bench_scale.emulator_row(runs)["measured"]  # wall rate, then its CPU figures
    versus = bench_scale.emulator_vs_bare_row(runs)
    assert versus["ratio"] > 0 and versus["baseline"].startswith("bare loop ")


def test_first_batch_and_poll_rows_measure_the_emulator_side(bench_scale, tmp_path: Path) -> None:
    first = bench_scale.first_batch_rows(tmp_path)
    assert first[0]["target"] == "before the last upload" and isinstance(first[0]["ok"], bool)
    (poll,) = bench_scale.poll_rows(tmp_path)
    counts = poll["measured"].split(": ")[1].split(", ")
    assert len(counts) == 2 and all(int(c) >= 0 for c in counts)
    assert bench_scale.next_check_row(tmp_path)["benchmark"].startswith("poll once at")
