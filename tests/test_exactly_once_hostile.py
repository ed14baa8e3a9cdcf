"""Exactly once whatever the reply (issue 16): a lost reply, a reply without an id, and lists that lag behind
writes never make a second upload or batch, and never end in advice to --force.

The emulator is the server; the hostile kit's proxy sits in front of it and damages the replies.
"""

from __future__ import annotations

import json
import time

import pytest
from emulator_server import EmulatorServer

hostile = pytest.importorskip("hostile_server")  # the kit (tests/hostile_server.py)


def _submit_through(tmp_path, h, *behaviours, shards: int = 2):
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        with hostile.HostileProxy(emu.base_url) as proxy:
            proxy.add(*behaviours)
            env = h.script_env(proxy.base_url)
            src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(10 * shards))
            result = h.run_script("submit", str(src), "--max-requests", "10", env=env, timeout=120)
        stats = emu.stats()
    manifest = json.loads((tmp_path / "jobs.jsonl.manifest.json").read_text())
    return result, stats, manifest


@pytest.mark.parametrize(
    "route,damage",
    [("files", "lose_reply"), ("batches", "lose_reply"), ("files", "drop_id"), ("batches", "drop_id")],
)
def test_a_damaged_create_reply_with_lagging_lists_makes_nothing_twice(tmp_path, h, route, damage):
    on = hostile.FILES if route == "files" else hostile.BATCHES
    behaviours = (hostile.lagging_lists(3.0), getattr(hostile, damage)(on=on))
    (code, doc, err), stats, manifest = _submit_through(tmp_path, h, *behaviours)
    assert code == 0, err
    assert stats["files_created"] == stats["batches_created"] == 2, stats
    assert sorted(s["batch_id"] for s in manifest["shards"]) == sorted(b["batch_id"] for b in doc["batches"])
    assert all(s["upload_state"] == s["create_state"] == "done" for s in manifest["shards"])
    assert "--force" not in err + json.dumps(doc)


def test_a_killed_submit_resumed_while_lists_lag_adopts_what_it_sent(tmp_path, h):
    """Killed right after sending a create (state 'sending'); the re-run's first lookups see a lagging list."""
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(10))
        assert h.run_script("submit", str(src), env=env).code == 0
        path = tmp_path / "jobs.jsonl.manifest.json"
        data = json.loads(path.read_text())
        shard = data["shards"][0]
        # what a kill between sending the create and recording its reply leaves behind
        shard.update(create_state="sending", batch_id=None, status=None, batch_sent_at=time.time())
        path.write_text(json.dumps(data))
        with hostile.HostileProxy(emu.base_url) as proxy:
            proxy.add(hostile.lagging_lists(5.0))
            proxy.state["last_write"] = time.monotonic()  # the create happened "just now"
            via = ("--base-url", proxy.base_url)  # the manifest names the emulator itself
            code, doc, err = h.run_script("submit", str(src), *via, env=env, timeout=60)
        assert code == 0 and doc["created"] == 1, err  # adopted, not created again
        assert emu.stats()["batches_created"] == 1
