"""--upstream forwards batch and realtime requests to another emulator and maps its statuses (references/api_reference.md section 9)."""

from __future__ import annotations

import json

from conftest import CHAT, Api, chat_line
from emulator_server import EmulatorServer


def test_upstream_forwarding_and_status_mapping():
    with (
        EmulatorServer("--api-key", "sk-up") as up,
        EmulatorServer(
            "--upstream",
            up.base_url,
            "--start-delay",
            "0",
            "--retry-base",
            "0.01",
            "--max-retries",
            "3",
            env={"EMULATOR_UPSTREAM_KEY": "sk-up"},
        ) as down,
    ):
        api = Api(down)
        lines = [
            chat_line(1, "forwarded text"),
            chat_line("flaky", x_emulator_status=500, x_emulator_fail_times=1),
            chat_line("bad", x_emulator_status=400),
            chat_line("busy", x_emulator_status=429),
        ]
        b = api.wait(api.batch(lines)["id"])
        out = {x["custom_id"]: x for x in api.lines(b["output_file_id"])}
        assert set(out) == {"req-1", "req-flaky"}
        assert "forwarded text" in out["req-1"]["response"]["body"]["choices"][0]["message"]["content"]
        errs = {x["custom_id"]: json.loads(x["error"]["message"]) for x in api.lines(b["error_file_id"])}
        assert (
            errs["req-bad"]["type"] == "NonRetriableHttpStatus"
            and errs["req-bad"]["details"]["status"] == 400
        )
        assert (
            errs["req-busy"]["type"] == "RetriableHttpStatus" and errs["req-busy"]["details"]["status"] == 429
        )
        calls = [e for e in up.requests_log() if e["path"] == "/v1/chat/completions"]
        assert sum(1 for e in calls if e["status"] == 400) == 1  # non-retriable: sent once
        assert sum(1 for e in calls if e["status"] == 429) == 4  # 1 + 3 retries
        assert sum(1 for e in calls if e["status"] == 200) == 2
        r = api.post(
            "/chat/completions", json={"model": CHAT, "messages": [{"role": "user", "content": "rt"}]}
        )
        assert r.status_code == 200 and "rt" in r.json()["choices"][0]["message"]["content"]
        assert up.requests_log()[-1]["path"] == "/v1/chat/completions"


def test_upstream_unreachable_is_network_error():
    with EmulatorServer(
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--start-delay",
        "0",
        "--retry-base",
        "0.01",
        "--max-retries",
        "1",
    ) as down:
        api = Api(down)
        b = api.wait(api.batch([chat_line(1)])["id"])
        assert b["status"] == "failed"
        reason = json.loads(api.lines(b["error_file_id"])[0]["error"]["message"])
        assert reason["type"] == "NetworkError" and reason["details"]["error"]
