"""Ctrl-C (KeyboardInterrupt) inside the fetch engine: what it leaves on disk, and how long it takes to exit.

A KeyboardInterrupt is raised where a signal handler can raise: between any two bytecodes of the main
thread. These tests raise it at chosen points, deterministically, from a test-side prelude (the same code
path as a Ctrl-C landing there) or inside an in-process Engine, and check the two promises of an
interrupted fetch: the manifest names nothing the files and cursors do not hold (a re-run resumes exactly),
and the exit comes at once, whatever the download threads and the committer were doing.
"""

from __future__ import annotations

import json
from pathlib import Path

# The second reply's lines reach the index only after output.jsonl took them: a Ctrl-C there
# interrupts the reply half taken (its raw lines appended, their index rows and the cursor not yet).
KI_IN_SECOND_TAKE = """
import doubleword.sinks as sinks
_extend, _calls = sinks.RecordFile.extend, []
def _interrupting(self, lines, size):
    if lines:
        _calls.append(len(lines))
        if len(_calls) == 2:
            raise KeyboardInterrupt
    return _extend(self, lines, size)
sinks.RecordFile.extend = _interrupting
"""


def _saved(manifest: Path, out: Path) -> tuple[int, int, int]:
    """(lines the manifest counts in output.jsonl, the batch's output cursor, lines in those bytes)."""
    state = json.loads(manifest.read_text())
    saved = state["fetch"]["files"]["output"]
    skip = state["shards"][0]["downloads"]["output"]["skip"]
    return saved["lines"], skip, (out / "output.jsonl").read_bytes()[: saved["bytes"]].count(b"\n")


def test_ctrl_c_inside_a_reply_saves_only_what_the_cursor_covers(emulator, env, tmp_path, h):
    job = h.submit_lines(tmp_path, h.chat_lines(30), env)
    h.poll_wait("--manifest", job.manifest, env=env)
    manifest, out = Path(job.manifest), tmp_path / "jobs.results"
    fetch = ("--manifest", job.manifest, "--page-size", "10")
    code, doc, err = h.run_script("fetch_results", *fetch, env=env, prelude=KI_IN_SECOND_TAKE)
    assert code == 130 and doc["error"]["type"] == "interrupted", (doc, err)
    # the first page is committed; the half-taken second one is not named by the manifest
    assert _saved(manifest, out) == (10, 10, 10)

    code, doc, err = h.run_script("fetch_results", *fetch, env=env)
    assert code == 0 and doc["complete"], err
    assert "downloading it again" not in err  # resumed from the cursor, not from the start
    ids = [line["id"] for line in h.read_jsonl(out / "output.jsonl")]
    assert len(ids) == len(set(ids)) == 30
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in job.lines]
