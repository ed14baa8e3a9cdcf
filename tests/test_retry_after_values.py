"""odd Retry-After values from a proxy or another server are a wait, never a crash."""

from __future__ import annotations

import json

import pytest
from scripted_server import ScriptedServer, Seen

LIST = json.dumps({"object": "list", "data": [], "has_more": False})


@pytest.mark.parametrize(
    "value", ["soon", "Wed, 99 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 -0000"]
)
def test_unparsable_or_odd_retry_after_is_retried_not_a_crash(h, value):
    calls: list[Seen] = []

    def reply(seen: Seen):
        calls.append(seen)
        if len(calls) == 1:
            return 429, {"Retry-After": value, "Content-Type": "application/json"}, '{"message":"slow down"}'
        return 200, {"Content-Type": "application/json"}, LIST

    with ScriptedServer(reply) as server:
        code, doc, err = h.run_script("list_batches", env=h.script_env(server.base_url), timeout=60)
    assert code == 0, (doc, err)
    assert doc["count"] == 0 and len(calls) == 2
